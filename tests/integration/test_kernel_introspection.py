"""The kernel seen from guest memory (symbols + DWARF + walker) against the guest's own /proc."""
from __future__ import annotations

import re

from splitdbg import lab
from splitdbg.arch import x86_paging as xp
from splitdbg.mem import SharedRamFile
from splitdbg.target.kernel import Kernel


def test_tasks_match_proc(guest):
    guest.run("sleep 600 & echo $! > /tmp/sleeper.pid", check=True)
    try:
        phys = int(re.search(r"(\d+) bits physical", guest.run("cat /proc/cpuinfo")[1]).group(1))
        guest.pause()
        with SharedRamFile(guest.ram_file) as mem:
            k = Kernel(mem, lab.artifacts()["vmlinux"])
            assert k.mode.levels == guest.paging  # read from the kernel's own __pgtable_l5_enabled
            assert k.mode.maxphyaddr == phys      # boot_cpu_data.x86_phys_bits: 40 under QEMU TCG
            tasks = k.tasks()
        guest.resume()
        rc, out = guest.run("for d in /proc/[0-9]*; do echo ${d#/proc/} $(cat $d/comm); done")
        proc = {int(p): c for p, c in (line.split(" ", 1) for line in out.splitlines() if " " in line)}
        # /proc/PID/comm of a kworker adds its current workqueue ("kworker/0:2-events").
        proc = {p: re.split(r"[-+]", c)[0] if c.startswith("kworker/") else c for p, c in proc.items()}
        ours = {t.pid: t.comm for t in tasks if t.pid}
        # The listing command itself (and its subshells) come and go between the two views.
        transient = {p for p, c in proc.items() if c in ("sh", "cat")} | {p for p, c in ours.items() if c in ("sh", "cat")}
        assert {p: c for p, c in ours.items() if p not in transient} == {p: c for p, c in proc.items() if p not in transient}
        sleeper = int(guest.run("cat /tmp/sleeper.pid")[1])
        (task,) = [t for t in tasks if t.pid == sleeper]
        assert task.comm == "sleep" and task.mm and task.pgd
        kthreads = [t for t in tasks if t.comm.startswith("kworker") or t.comm == "kthreadd"]
        assert kthreads and all(t.mm == 0 and t.pgd == 0 for t in kthreads)
        # The process's own page tables map its text in user space and share the kernel half.
        with SharedRamFile(guest.ram_file) as mem:
            rs = xp.ranges(mem, task.pgd, k.mode)
        assert any(r.user and not r.writable and not r.nx for r in rs)
        assert any(r.start == 0xFFFFFFFF81000000 or r.start <= 0xFFFFFFFF81000000 < r.end for r in rs)
    finally:
        guest.resume() if guest.status() != "running" else None
        guest.run("kill $(cat /tmp/sleeper.pid)")
