"""The split kernel under Bochs 2.7 (VMX with EPT): one capture on 1 CPU and one on 2, side by side.
Each boots the guest, runs the module's scenarios and the EPT probes, stops in VMX root mode and
dumps the image (`splitdbg.lab_bochs.capture`); then the first snapshot of that image is timed.
Wall-clock seconds of an emulator on a shared machine: read the ratios, not the last digit."""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from splitdbg import lab_bochs  # noqa: E402
from splitdbg.target.session import Session  # noqa: E402

RUN = "split-scenarios --stop-on-fail all ept-probes hold-for-dump"


def one(smp: int, tmp: Path) -> dict:
    cap = lab_bochs.capture(tmp / f"smp{smp}", load="splitkernel,sktest", run=RUN, smp=smp, log=lambda *a: None)
    console = (cap.out / "serial.txt").read_text(errors="replace")
    t0 = time.perf_counter()
    with Session(str(cap.image)) as s:
        snap = s.snapshot()
    return dict(cap.times, snapshot_s=time.perf_counter() - t0, passed=console.count("result=pass"),
                failed=console.count("result=fail"), events=len(snap.events), exits=snap.module["total_exits"])


def main() -> int:
    if not shutil.which("bochs"):
        print("bochs not installed (make deps): skipped")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="splitdbg-bench-bochs-"))
    try:
        r = {smp: one(smp, tmp) for smp in (1, 2)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"Bochs 2.7 corei7_skylake_x, 64 MiB, run: {RUN}")
    print(f"{'':36}{'1 CPU':>10}{'2 CPUs':>10}{'2/1':>8}")
    for key, label in (("boot_to_ready_s", "boot to SPLITDBG: ready, s"), ("run_s", "scenarios + probes, s"),
                       ("dump_s", "dump (writemem), s"), ("total_s", "whole capture, s"),
                       ("snapshot_s", "first snapshot of the image, s")):
        a, b = r[1][key], r[2][key]
        print(f"{label:36}{a:10.2f}{b:10.2f}{b / a if a else float('nan'):8.2f}")
    for key, label in (("passed", "scenarios passed"), ("failed", "scenarios failed"),
                       ("exits", "VM exits (module total)"), ("events", "events in the rings")):
        print(f"{label:36}{r[1][key]:10}{r[2][key]:10}")
    return 1 if any(x["failed"] for x in r.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
