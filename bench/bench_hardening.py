"""The cost of the containment work, side by side in one run: the module before it (default
095e35c, the last commit before ABI v5) and the module of this checkout, each in its own QEMU TCG
guest booted in turn, the same workloads, every process pinned to CPU 0 (two processes of a pipe
ping-pong on two vCPUs measure the vCPUs' scheduling, not the handler).

The "before" guest is built once from a git worktree kept in ~/.cache/splitdbg/bench/REV (the
kernel build is shared through the kernel cache: the kernel's inputs did not change). Under TCG
these are relative costs, not hardware speed: read the ratios.

    python bench/bench_hardening.py [--before REV] [--repeat N]
"""
from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from splitdbg import lab  # noqa: E402
from bench_module import figure  # noqa: E402  (the median of a guest command's figure)

CACHE = Path.home() / ".cache" / "splitdbg" / "bench"
PIN = "taskset 1"


def before_guest(rev: str) -> dict:
    """build/guest.json of REV's guest, built in a worktree outside this checkout."""
    sha = subprocess.run(["git", "-C", str(lab.REPO), "rev-parse", "--verify", rev + "^{commit}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    tree = CACHE / sha[:12]
    if not (tree / "build" / "guest.json").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        if not tree.exists():
            subprocess.run(["git", "-C", str(lab.REPO), "worktree", "add", "--detach", str(tree), sha], check=True,
                           capture_output=True)
        print(f"building the guest of {sha[:12]} in {tree} (once)", file=sys.stderr, flush=True)
        subprocess.run(["make", "-C", str(tree), "guest"], check=True, stdout=subprocess.DEVNULL)
    return json.loads((tree / "build" / "guest.json").read_text())


# 300 spawns timed in the guest (busybox date has no %N: /proc/uptime, in 10 ms steps).
SPAWN = """read s rest < /proc/uptime
i=0; while [ $i -lt 300 ]; do /bin/busybox true; i=$((i+1)); done
read e rest < /proc/uptime
awk -v s=$s -v e=$e 'BEGIN { print "spawn_ms=" (e - s) * 1000 }'
"""


def measure(arts: dict, repeat: int) -> dict[str, float]:
    g = lab.up(port=lab.free_port(16300), smp=2, paging=4, append="splitdbg.load=splitkernel", arts=arts)
    out: dict[str, float] = {}
    try:
        g.run(f"echo {base64.b64encode(SPAWN.encode()).decode()} | base64 -d > /tmp/spawn.sh", timeout=60)
        for name, arg, key in [("syscall", "bench-syscall 200000", "syscall_ns"),
                               ("ctxsw", "bench-ctxsw 5000", "ctxsw_ns")]:
            out[f"{name} native"] = figure(g, f"{PIN} sk-scenario {arg}", key, repeat)
            out[f"{name} NR"] = figure(g, f"{PIN} split-run -- sk-scenario {arg}", key, repeat)
        out["spawn native"] = figure(g, f"{PIN} sh /tmp/spawn.sh", "spawn_ms", repeat)
        out["spawn NR"] = figure(g, f"{PIN} split-run -- sh /tmp/spawn.sh", "spawn_ms", repeat)
        # /proc/splitkernel's first line, the same in both ABIs: "... exits N, hypercalls M"
        exits = lambda: int(re.search(r"exits (\d+)", g.run("head -1 /proc/splitkernel")[1]).group(1))  # noqa: E731
        e0, t0 = exits(), time.monotonic()
        g.run(f"{PIN} split-run -- sh /tmp/spawn.sh", timeout=600)
        out["exits/s"] = (exits() - e0) / (time.monotonic() - t0)
    finally:
        g.down()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="095e35c", help="the commit to compare with (default: before ABI v5)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is shown)")
    args = ap.parse_args()
    old_arts = before_guest(args.before)
    before = measure(old_arts, args.repeat)
    after = measure(lab.artifacts(), args.repeat)
    print(f"splitkernel before ({args.before}) and after (this checkout), QEMU TCG, 2 vCPUs, pinned to CPU 0; "
          f"medians of {args.repeat}")
    print(f"{'':34}{'before':>10}{'after':>10}{'after/before':>14}")
    rows = [("null syscall, native (ns)", "syscall native"), ("null syscall, NR (ns)", "syscall NR"),
            ("context switch, native (ns)", "ctxsw native"), ("context switch, NR (ns)", "ctxsw NR"),
            ("300 spawns, native (ms)", "spawn native"), ("300 spawns, NR (ms)", "spawn NR"),
            ("VM exits/s, NR spawn loop", "exits/s")]
    for label, key in rows:
        print(f"{label:34}{before[key]:10.0f}{after[key]:10.0f}{after[key] / before[key]:14.2f}")
    for label, key in [("null syscall", "syscall"), ("context switch", "ctxsw"), ("300 spawns", "spawn")]:
        b, a = before[f"{key} NR"] / before[f"{key} native"], after[f"{key} NR"] / after[f"{key} native"]
        print(f"{label + ', NR/native':34}{b:10.2f}{a:10.2f}{a / b:14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
