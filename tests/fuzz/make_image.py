"""Make a real memory image for the fuzz test: a guest with the module and sktest loaded, the
scenario that isolates kernel text, two processes kept in non-root mode (a deny and an isolate
violation), stopped and dumped (as tests/integration/test_image.py's `image` fixture does).

    python -m tests.fuzz.make_image OUT.raw
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from splitdbg import lab


def make_image(out: Path) -> Path:
    g = lab.up(port=lab.free_port(16300), smp=2, paging=4, append="splitdbg.load=splitkernel,sktest", timeout=180)
    try:
        g.run("split-scenarios kwriter-text-isolate", timeout=120)
        for cmd in ("split-run -- sh -c 'sh -c \"echo write-text > /proc/sktest\"; sleep 600; true'",
                    "split-run -p text=isolate -- sh -c 'echo write-text > /proc/sktest; sleep 600; true'"):
            g.run(f"{cmd} >/dev/null 2>&1 &")
        time.sleep(1.0)
        g.pause()
        p = subprocess.run([sys.executable, "-m", "splitdbg", "dump", f":{g.port}", str(out), "--force"],
                           capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"splitdbg dump failed ({p.returncode}): {p.stderr}")
    finally:
        g.down()
    return out


if __name__ == "__main__":
    print(make_image(Path(sys.argv[1]).resolve()))
