"""splitdbg's mirror of kernel/include/splitkernel.h against the module's own DWARF: every
struct the debugger decodes has the size and field offsets the compiler gave it."""
from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from splitdbg.lab import REPO
from splitdbg.target import splitkernel as skabi
from splitdbg.target.types import DwarfTypes

KO = REPO / "build" / "guest-root" / "lib" / "modules" / "splitdbg" / "splitkernel.ko"


@pytest.fixture(scope="module")
def dwarf():
    assert KO.exists(), "run `make guest` first"
    return DwarfTypes(KO, None, cache_dir=None)


def offsets(fmt: str, names) -> dict[str, int]:
    """Offsets of the named fields of a packed little-endian struct format (arrays as name0..N)."""
    out, off, i = {}, 0, 0
    for count, code in re.findall(r"(\d*)([QIHB])", fmt):
        n = int(count or 1)
        size = struct.calcsize(code)
        for _ in range(n):
            out[names[i]] = off
            off += size
            i += 1
    return out


def test_event_layout(dwarf):
    assert dwarf.sizeof("sk_event") == skabi.EVENT.size
    ours = offsets(skabi.EVENT.format, skabi.EVENT_FIELDS)
    assert {k: dwarf.offsetof("sk_event", k) for k in skabi.EVENT_FIELDS} == ours


def test_descriptor_layout(dwarf):
    assert dwarf.sizeof("sk_descriptor") == skabi.DESCRIPTOR.size
    ours = offsets(skabi.DESCRIPTOR.format, skabi.DESCRIPTOR_FIELDS)
    for name, off in ours.items():
        m = re.fullmatch(r"guest(\d+)_(\w+)", name)
        if m:     # struct sk_guest_regs guest[SK_MAX_CPUS]: cr0, cr3, cr4, efer
            want = dwarf.offsetof("sk_descriptor", "guest") + 32 * int(m[1]) + 8 * skabi.GUEST_REGS.index(m[2])
            assert want == off, name
            continue
        m = re.fullmatch(r"now(\d+)_(\w+)", name)
        if m:     # struct sk_cpu_now cpu_now[SK_MAX_CPUS]: cr3, ncr3, container, reserved
            size = dwarf.sizeof("sk_cpu_now")
            want = dwarf.offsetof("sk_descriptor", "cpu_now") + size * int(m[1]) + dwarf.offsetof("sk_cpu_now", m[2])
            assert want == off, name
            continue
        base = re.sub(r"\d+$", "", name) if name.startswith(("rings_pa", "sec_rings_pa", "vmcb_pa")) else name
        index = int(name[len(base):] or 0)
        assert dwarf.offsetof("sk_descriptor", base) + 8 * index == off, name


def test_container_ring_counters_layout(dwarf):
    assert dwarf.sizeof("sk_container") == skabi.CONTAINER_SIZE
    assert dwarf.sizeof("sk_counters") == skabi.COUNTERS.size
    assert dwarf.sizeof("sk_ring") == skabi.RING_HEADER.size
    head = offsets(skabi.CONTAINER_HEAD.format, ["id", "active", "owner_pid", "policy", "ncr3", "npgds", "nisolated"])
    assert {k: dwarf.offsetof("sk_container", k) for k in head} == head
    o = skabi.CONTAINER_HEAD.size
    assert dwarf.offsetof("sk_container", "pgds") == o
    assert dwarf.offsetof("sk_container", "counters") == o + 8 * (skabi.MAX_PGDS + 2 * skabi.MAX_ISOLATED)
    assert dwarf.offsetof("sk_container", "protected_pa") == skabi.CONTAINER_SIZE - 8 * skabi.MAX_PROTECTED


def test_walk_record_layout(dwarf):
    """struct sk_walk, kept beside each security-ring entry (the violation's walk at the exit)."""
    assert dwarf.sizeof("sk_walk") == skabi.WALK.size
