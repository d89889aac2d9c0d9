"""Merged ranges of a second-level table (EPT or NPT): what a container maps.

Each table page is decoded with numpy in one go; leaves of one table are merged vectorially, and
runs are joined across tables. A 4 KiB-granular identity map of 1 GiB (262,144 leaves) takes a
few tens of milliseconds (bench/bench_model.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ept, npt
from .common import Caps, ModelError

SHIFT = {1: 12, 2: 21, 3: 30, 4: 39, 5: 48}


@dataclass(frozen=True)
class SlatRange:
    start: int        # guest-physical, inclusive
    end: int          # exclusive
    hpa: int          # host-physical of `start`
    perms: str        # "rwx" style; EPT adds "u" for user-execute under MBEC, NPT "u" for U/S
    page_size: int
    flags: int        # EPT: memory type << 3 | ignore-PAT << 6; NPT: software-available bits of the leaf

    @property
    def size(self) -> int:
        return self.end - self.start


def slat_ranges(mem, arch: str, slat_root: int, caps: Caps | None = None, host_nxe: bool = True,
                levels: int | None = None):
    """Yield the SlatRanges of the EPT (EPTP) or nested table (nCR3), in guest-physical order."""
    caps = caps or Caps.default(arch)
    if arch == "vmx":
        eptp = ept.Eptp.decode(slat_root, caps)
        top, levels = eptp.pml_addr, eptp.levels
    elif arch == "svm":
        top, levels = slat_root & ((1 << caps.maxphyaddr) - 1) & ~0xFFF, levels or 4
    else:
        raise ModelError(f"arch is 'vmx' or 'svm', not {arch!r}")
    addr_mask = np.uint64(((1 << caps.maxphyaddr) - 1) & ~0xFFF)
    pending = None
    for run in _table(mem, arch, top, levels, 0, _ALL[arch], addr_mask, caps, host_nxe, ()):
        if pending and pending[1] == run[0] and pending[3:] == run[3:] and pending[2] + (pending[1] - pending[0]) == run[2]:
            pending = (pending[0], run[1], pending[2]) + pending[3:]
            continue
        if pending:
            yield _mk(pending, arch)
        pending = run
    if pending:
        yield _mk(pending, arch)


_ALL = {"vmx": 0b1111, "svm": 0b111}  # inherited permission bits: vmx R W X XU; svm W U X(not NX)


def _mk(run, arch) -> SlatRange:
    s, e, h, size, perm, flags = run
    if arch == "vmx":
        p = ("r" if perm & 1 else "-") + ("w" if perm & 2 else "-") + ("x" if perm & 4 else "-") + ("u" if perm & 8 else "")
    else:
        p = "r" + ("w" if perm & 1 else "-") + ("x" if perm & 4 else "-") + ("u" if perm & 2 else "-")
    return SlatRange(s, e, h, p, size, flags)


def _table(mem, arch, pa, level, base, inherited, addr_mask, caps, host_nxe, ancestors):
    if pa in ancestors:
        raise ModelError(f"second-level table {pa:#x} is its own ancestor (cyclic)")
    e = mem.read_u64_array(pa, 512) if hasattr(mem, "read_u64_array") else np.frombuffer(mem.read(pa, 4096), "<u8")
    if arch == "vmx":
        present = (e & np.uint64(7)) != 0
        if caps.mbec:
            present |= (e & np.uint64(ept.XU)) != 0
        perm = (e & np.uint64(7)) | ((e >> np.uint64(7)) & np.uint64(8))      # R W X, XU -> bit 3
    else:
        present = (e & np.uint64(1)) != 0
        nx = (e >> np.uint64(63)) if host_nxe else np.zeros(512, np.uint64)
        perm = ((e >> np.uint64(1)) & np.uint64(1)) | (((e >> np.uint64(2)) & np.uint64(1)) << np.uint64(1)) | \
               ((np.uint64(1) - nx) << np.uint64(2))                       # W, U, X
    perm = perm & np.uint64(inherited)
    large = ((e & np.uint64(0x80)) != 0) if level in (2, 3) else np.zeros(512, bool)
    leaf = present & (large | (level == 1))
    shift = SHIFT[level]
    size = 1 << shift
    # Leaves: vectorised run merging within this table.
    idx = np.flatnonzero(leaf)
    if len(idx):
        hpa = e[idx] & addr_mask & np.uint64(~(size - 1) & (2**64 - 1))
        if arch == "vmx":
            flags = (e[idx] >> np.uint64(3)) & np.uint64(0xF)                 # memory type, ignore-PAT
        else:
            flags = e[idx] & np.uint64(npt.AVL_MASK)
        p = perm[idx]
        brk = np.ones(len(idx), bool)
        brk[1:] = (np.diff(idx) != 1) | (np.diff(hpa.astype(np.int64)) != size) | (p[1:] != p[:-1]) | (flags[1:] != flags[:-1])
        starts = np.flatnonzero(brk)
        ends = np.append(starts[1:], len(idx))
        leaf_runs = [(base + (int(idx[a]) << shift), base + ((int(idx[b - 1]) + 1) << shift), int(hpa[a]), size,
                      int(p[a]), int(flags[a])) for a, b in zip(starts.tolist(), ends.tolist())]
    else:
        leaf_runs = []
    tables = np.flatnonzero(present & ~leaf).tolist() if level > 1 else []
    if not tables:
        yield from leaf_runs
        return
    # Interleave leaf runs and subtables in address order.
    li = 0
    for i in tables:
        vstart = base + (i << shift)
        while li < len(leaf_runs) and leaf_runs[li][0] < vstart:
            yield leaf_runs[li]
            li += 1
        yield from _table(mem, arch, int(e[i] & addr_mask), level - 1, vstart, int(perm[i]), addr_mask, caps,
                          host_nxe, ancestors + (pa,))
    yield from leaf_runs[li:]
