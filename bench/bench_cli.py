"""splitdbg's views of a live split kernel: `ept` of one container over the shared RAM file versus
over the gdbstub (ratio), and a full snapshot (all containers with their nested tables, processes,
events with model cross-checks) with 10 non-root processes, target at most 1 s; and `tasks --stacks`
(every task's state, wait channel and stack scan) over both backends."""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from splitdbg import lab  # noqa: E402
from splitdbg.target.session import Session  # noqa: E402
from splitdbg.target.snapshot import container_ranges  # noqa: E402
from splitdbg.target.tasks import task_states  # noqa: E402


def timed(fn, repeat=5):
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def main() -> int:
    g = lab.up(port=lab.free_port(16200), smp=2, append="splitdbg.load=splitkernel,sktest")
    try:
        g.run("for i in 1 2 3 4 5 6 7 8 9 10; do split-run -p text=isolate -- sh -c "
              "'echo write-text > /proc/sktest; sleep 300; true' >/dev/null 2>&1 & done; sleep 1", check=True)
        with Session(f":{g.port}") as s:
            sk = s.splitkernel()
            ct = [c for c in sk.containers() if c.id][0]
            shm_ept, rs = timed(lambda: container_ranges(sk, ct.ncr3))
            snap_t, snap = timed(lambda: s.snapshot(), repeat=3)
            shm_tasks, ts = timed(lambda: task_states(s.kernel, stacks=True), repeat=3)
        with Session(f":{g.port}", prefer="gdbstub") as s:
            sk2 = s.splitkernel()
            stub_ept, rs2 = timed(lambda: container_ranges(sk2, ct.ncr3), repeat=2)
            stub_tasks, ts2 = timed(lambda: task_states(s.kernel, stacks=True), repeat=1)
        assert [r.perms for r in rs] == [r.perms for r in rs2]
        assert len(ts2) == len(ts)
    finally:
        g.down()
    nr = sum(1 for p in snap.processes or [] if p.container)
    print("splitdbg views of a live split kernel (2 vCPUs, 11 containers)")
    print(f"{'':44}{'shared RAM file':>16}{'gdbstub':>12}{'ratio':>8}")
    print(f"{'ept of one container, ms':44}{shm_ept * 1e3:16.1f}{stub_ept * 1e3:12.0f}{stub_ept / shm_ept:8.0f}x")
    print(f"  ({len(rs)} ranges)")
    print(f"{'tasks --stacks, ms':44}{shm_tasks * 1e3:16.1f}{stub_tasks * 1e3:12.0f}{stub_tasks / shm_tasks:8.0f}x")
    print(f"  ({len(ts)} tasks, {sum(len(t.frames) for t in ts)} frames)")
    print(f"{'full snapshot, s (target <= 1 s)':44}{snap_t:16.3f}")
    print(f"  ({len(snap.containers)} containers, {nr} non-root processes, {len(snap.events)} events, "
          f"{sum(len(c.ranges) for c in snap.containers)} ranges)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
