"""Policy rules that need no guest: `address-spaces` on a hand-made snapshot and kernel view."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from splitdbg.arch import x86_paging as xp
from splitdbg.cli.check import Checker, PolicyError
from splitdbg.target.snapshot import ContainerRec, ProcessRec, Snapshot


def container(cid: int, pgds: list[int], released: bool = False) -> ContainerRec:
    return ContainerRec(cid, 100 + cid, "split-run" if cid else "", released, {}, 0x1000 * cid, pgds, [], [],
                        {"violations": {}})


def snapshot(containers, processes) -> Snapshot:
    return Snapshot(format="splitdbg-snapshot/1", target="test", backend="test", taken=0.0, slat="EPT",
                    module={"version": 3}, cpus=[0, 1], containers=containers, processes=processes, events=[])


def session(held: dict[int, set[int]], guest_cr3: dict[int, int]):
    kernel = SimpleNamespace(cpu_pgds=lambda: held, mode=xp.PagingMode(levels=4))
    sk = SimpleNamespace(guest_regs=lambda cpu: {"cr3": guest_cr3[cpu]})
    return SimpleNamespace(kernel=kernel, splitkernel=lambda: sk)


RULE = {"kind": "address-spaces"}


def test_an_address_space_no_process_owns_and_no_cpu_holds_is_stale():
    snap = snapshot([container(0, []), container(1, [0xA000, 0xB000]), container(2, [0xC000], released=True)],
                    [ProcessRec(10, 10, "sleep", 0xA000, 1)])
    # CPU 0 still holds the exited process's 0xB000 (lazy TLB); CPU 1 holds nothing of theirs.
    problems = Checker(session({0: {0x1000, 0xB000}, 1: {0x5000}}, {0: 0x1000, 1: 0x5000}), snap).address_spaces(RULE)
    assert problems == ["container 2 (split-run, released) lists address space 0xc000, which no process owns "
                        "and no CPU holds (stale)"]


def test_a_cpu_caught_in_switch_mm_counts_with_the_cr3_the_handler_noted():
    snap = snapshot([container(0, []), container(1, [0xC000])], [])
    # In switch_mm, loaded_mm says nothing; the guest CR3 at the VM exit (PCID 5 in bits 11:0) does.
    assert Checker(session({0: set(), 1: {0x5000}}, {0: 0xC005, 1: 0x5000}), snap).address_spaces(RULE) == []
    assert len(Checker(session({0: set(), 1: {0x5000}}, {0: 0xD005, 1: 0x5000}), snap).address_spaces(RULE)) == 1


def test_without_kernel_symbols_the_rule_says_what_it_needs():
    snap = snapshot([container(0, [])], None)
    with pytest.raises(PolicyError, match="kernel symbols"):
        Checker(SimpleNamespace(kernel=None), snap).address_spaces(RULE)
