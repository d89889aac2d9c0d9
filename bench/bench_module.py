"""splitkernel in the guest, side by side: a null syscall and a context switch in non-root mode
versus normal mode (ratio), and VM exits per second sustained under a process-spawn load.
Under QEMU TCG these are relative costs, not hardware speed."""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from splitdbg import lab  # noqa: E402
from splitdbg.mem import SharedRamFile  # noqa: E402
from splitdbg.target.splitkernel import SplitKernel  # noqa: E402


def figure(guest, cmd: str, key: str, repeat: int = 3) -> float:
    vals = []
    for _ in range(repeat):
        rc, out = guest.run(cmd, timeout=300)
        m = re.search(rf"{key}=([0-9.]+)", out)
        if rc != 0 or not m:
            raise RuntimeError(f"{cmd}: {out}")
        vals.append(float(m.group(1)))
    return sorted(vals)[len(vals) // 2]


def main() -> int:
    g = lab.up(port=lab.free_port(16100), smp=2, paging=4, append="splitdbg.load=splitkernel")
    try:
        rows = []
        for name, arg, key in [("null syscall (getppid), ns", "bench-syscall 200000", "syscall_ns"),
                               ("context switch (pipe ping-pong), ns", "bench-ctxsw 5000", "ctxsw_ns")]:
            normal = figure(g, f"sk-scenario {arg}", key)
            nonroot = figure(g, f"split-run -- sk-scenario {arg}", key)
            rows.append((name, normal, nonroot))
        sk = SplitKernel(SharedRamFile(g.ram_file))
        idle0, t0 = sk.d["total_exits"], time.monotonic()
        time.sleep(3)
        sk.refresh()
        idle_rate = (sk.d["total_exits"] - idle0) / (time.monotonic() - t0)
        # Sustained: a process-spawn loop in non-root mode for ~5 s.
        e0, t0 = sk.d["total_exits"], time.monotonic()
        g.run("split-run -- sh -c 'i=0; while [ $i -lt 300 ]; do /bin/busybox true; i=$((i+1)); done'", timeout=300)
        sk.refresh()
        spawn_rate = (sk.d["total_exits"] - e0) / (time.monotonic() - t0)
    finally:
        g.down()
    print("splitkernel in the QEMU TCG guest (2 vCPUs): normal vs non-root mode")
    print(f"{'':40}{'normal':>12}{'non-root':>12}{'ratio':>8}")
    for name, normal, nonroot in rows:
        print(f"{name:40}{normal:12.0f}{nonroot:12.0f}{nonroot / normal:8.2f}")
    print(f"{'VM exits/s, idle':40}{idle_rate:12.0f}")
    print(f"{'VM exits/s, non-root spawn loop':40}{spawn_rate:12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
