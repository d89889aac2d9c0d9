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


PROC_STATES = "for d in /proc/[0-9]*; do echo ${d#/proc/} $(cut -d' ' -f3,39 $d/stat) $(cat $d/wchan); done"


def _proc_states(guest) -> dict[int, tuple[str, int, str]]:
    out = {}
    for line in guest.run(PROC_STATES)[1].splitlines():
        f = line.split()
        if len(f) == 4 and f[0].isdigit():
            out[int(f[0])] = (f[1], int(f[2]), "" if f[3] == "0" else f[3])
    return out


def test_task_states_and_wait_channels_match_proc(guest4):
    """State letter, last CPU and wait channel of every task against /proc/PID/stat and
    /proc/PID/wchan (the guest kernel's own guess unwinder): for every task that kept them
    across our read (tasks wake up and move between the guest's two listings)."""
    from splitdbg.target.tasks import task_states

    guest4.run("sleep 600 > /dev/null 2>&1 & mkfifo /tmp/fifo 2>/dev/null; (cat /tmp/fifo > /dev/null &); sleep 1",
               check=True)
    before = _proc_states(guest4)
    with SharedRamFile(guest4.ram_file) as mem:
        k = Kernel(mem, lab.artifacts()["vmlinux"])
        ours = {t.pid: t for t in task_states(k)}
        stacks = {t.pid: t for t in task_states(k, stacks=True, pids={1})}
    after = _proc_states(guest4)
    # The agent and its shell run the listing itself: in do_wait then, back in poll when we read.
    stable = [p for p in before if before[p] == after.get(p) and p in ours
              and ours[p].comm not in ("splitdbg-agent", "sh")]
    assert len(stable) >= 20, (before, after)
    got = {p: (ours[p].state, ours[p].cpu, ours[p].wchan) for p in stable}
    differ = {p: (got[p], before[p]) for p in stable if got[p] != before[p]}
    # A kernel thread can wake, run (perhaps on the other CPU) and sleep again in the same place
    # between the two listings: our read, or the guest's own listings, catch it running (R), or
    # on the other CPU. Only that.
    assert len(differ) <= len(stable) // 4 and all(g[0] == "R" or b[0] == "R" or g[1] != b[1]
                                                   for g, b in differ.values()), differ
    # Those set up here (and init) never wake: they must agree exactly.
    mine = [p for p in stable if ours[p].comm in ("sleep", "cat", "init")]
    assert len(mine) >= 3 and all(got[p] == before[p] for p in mine), {p: (got[p], before[p]) for p in mine}
    # The ones set up here, by what they wait in (sleeping ones: a `sleep` of an earlier test may
    # be on its way out, in delayed_put_task_struct, under the same name).
    waits = {t.comm: t.wchan for t in ours.values() if t.state == "S"}
    assert waits["sleep"] == "hrtimer_nanosleep" and waits["cat"] == "wait_for_partner"
    assert ours[1].state == "S" and ours[1].wchan == "do_wait"
    # init's stack, from the saved stack pointer up: the scheduler first, the system call entry last.
    names = [f.symbol.split("+")[0] for f in stacks[1].frames]
    assert names[0] == "__schedule" and "do_wait" in names and names[-1].startswith("entry_SYSCALL_64")
