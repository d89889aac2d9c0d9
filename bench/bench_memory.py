"""Memory backends side by side on the real guest: read speed over 64 MiB and the time to dump
the kernel's page tables, through the shared RAM file and through the gdbstub, with ratios."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from splitdbg import lab  # noqa: E402
from splitdbg.arch import x86_paging as xp  # noqa: E402
from splitdbg.dbg.gdbmi import GdbMI  # noqa: E402
from splitdbg.mem import GdbstubMemory, SharedRamFile  # noqa: E402
from splitdbg.target.symbols import ElfSymbols  # noqa: E402

TOTAL = 64 << 20
CHUNK = 1 << 20


def read_rate(mem, total=TOTAL, chunk=CHUNK, base=0x1000000) -> float:
    t0 = time.perf_counter()
    for off in range(0, total, chunk):
        mem.read(base + off, chunk)
    return total / (time.perf_counter() - t0) / 1e6


def small_read_us(mem, n=200) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        mem.read(0x1000000 + i * 0x1000, 8)
    return (time.perf_counter() - t0) / n * 1e6


def dump_time(mem, cr3, mode, repeat=3):
    times, d = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        d = xp.dump(mem, cr3, mode)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), d


def main() -> int:
    arts = lab.artifacts()
    guest = lab.up(port=lab.free_port(16000), smp=1, paging=4)
    try:
        dbg = GdbMI.connect(f":{guest.port}")  # the guest is stopped while gdb holds it
        shm, stub = SharedRamFile(guest.ram_file), GdbstubMemory(dbg)
        regs = dbg.read_registers(("cr0", "cr3", "cr4", "efer"))
        mode = xp.PagingMode.from_regs(regs["cr0"], regs["cr4"], regs["efer"])
        syms = ElfSymbols(arts["vmlinux"])
        kernel_cr3 = syms.address("init_top_pgt") - 0xFFFFFFFF80000000

        shm_cold = read_rate(shm)   # first touch: tmpfs may still be allocating pages
        shm_rate = read_rate(shm)
        stub_rate = read_rate(stub, chunk=0x10000)
        shm_small, stub_small = small_read_us(shm), small_read_us(stub, n=50)
        shm_dump, d = dump_time(shm, kernel_cr3, mode)
        stub_dump, d2 = dump_time(stub, kernel_cr3, mode, repeat=1)
        assert d.ranges == d2.ranges
        dbg.close()
    finally:
        guest.down()

    print(f"memory backends, guest {guest.ram_size >> 20} MiB, 4-level paging, QEMU TCG")
    print(f"{'':34}{'shared RAM file':>18}{'gdbstub (gdb/MI)':>18}{'ratio':>10}")
    print(f"{'read 64 MiB, MB/s':34}{shm_rate:18.0f}{stub_rate:18.2f}{shm_rate / stub_rate:10.0f}x")
    print(f"{'  (shared file, first pass)':34}{shm_cold:18.0f}")
    print(f"{'small read (8 bytes), us':34}{shm_small:18.2f}{stub_small:18.0f}{stub_small / shm_small:10.0f}x")
    print(f"{'dump kernel page tables, ms':34}{shm_dump * 1e3:18.2f}{stub_dump * 1e3:18.0f}{stub_dump / shm_dump:10.0f}x")
    print(f"  ({len(d.ranges)} ranges from {d.tables_read} table pages, {d.tables_reused} reused)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
