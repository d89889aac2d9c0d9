"""Memory images (docs/images.md): `splitdbg dump` of a live guest (MB/s, how long the guest
stands still), then `open` + a full snapshot on the image versus the same on the live target."""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from splitdbg import lab  # noqa: E402
from splitdbg.target.dump import dump  # noqa: E402
from splitdbg.target.session import Session, default_vmlinux  # noqa: E402


def open_and_snapshot(target: str) -> tuple[float, float, object]:
    """(seconds to open a Session, seconds for its first full snapshot, the snapshot)."""
    t0 = time.perf_counter()
    with Session(target) as s:
        t1 = time.perf_counter()
        snap = s.snapshot()
        return t1 - t0, time.perf_counter() - t1, snap


def main() -> int:
    g = lab.up(port=lab.free_port(16300), smp=2, append="splitdbg.load=splitkernel,sktest")
    tmp = Path(tempfile.mkdtemp(prefix="splitdbg-bench-image-"))
    try:
        g.run("for i in 1 2 3 4 5 6 7 8 9 10; do split-run -p text=isolate -- sh -c "
              "'echo write-text > /proc/sktest; sleep 300; true' >/dev/null 2>&1 & done; sleep 1", check=True)
        dumps = [dump(f":{g.port}", str(tmp / f"g{i}.raw"), vmlinux=default_vmlinux()) for i in range(3)]
        live = [open_and_snapshot(f":{g.port}") for _ in range(3)]
        img = [open_and_snapshot(str(tmp / "g2.raw")) for _ in range(3)]
    finally:
        g.down()
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    med = statistics.median
    d = dumps[-1]
    print(f"memory images of a live split kernel (2 vCPUs, {d['bytes'] >> 20} MiB RAM, 11 containers)")
    print(f"{'dump: whole command, s':44}{med(x['seconds'] for x in dumps):10.2f}")
    print(f"{'dump: RAM copy, s':44}{med(x['copy_seconds'] for x in dumps):10.3f}"
          f"   ({med(x['mb_per_s'] for x in dumps):.0f} MB/s of RAM; {d['copied'] >> 20} MiB in use copied, "
          f"{med(x['copied'] / (1 << 20) / x['copy_seconds'] for x in dumps):.0f} MB/s of data)")
    print(f"{'dump: guest stopped (attach to detach), s':44}{med(x['stopped_seconds'] for x in dumps):10.3f}")
    print(f"{'':44}{'live':>10}{'image':>10}")
    print(f"{'open (Session), s':44}{med(x[0] for x in live):10.2f}{med(x[0] for x in img):10.2f}")
    print(f"{'first full snapshot, s':44}{med(x[1] for x in live):10.2f}{med(x[1] for x in img):10.2f}")
    snap = img[-1][2]
    print(f"  ({len(snap.containers)} containers, {len(snap.processes or [])} processes, {len(snap.events)} events)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
