"""Issue 12, "No traceback": every read-only command on mutated copies of a real memory image
(tests/fuzz/fuzzer.py) returns an exit code, never a traceback, an internal error (rc 70) or a hang.

`make test` runs a seeded slice (SPLITDBG_FUZZ cases, default 270: 30 per command, well under a
minute once the image is made). The full run is opt-in:

    SPLITDBG_FUZZ=10000 .venv/bin/python -m pytest -q tests/integration/test_fuzz.py -s

SPLITDBG_FUZZ_IMAGE=g.raw fuzzes that image (a `splitdbg dump` of a guest with the module) instead of
booting a guest to make one; SPLITDBG_FUZZ_SEED picks another slice.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.fuzzer import REPO

CASES = int(os.environ.get("SPLITDBG_FUZZ", "270"))
SEED = int(os.environ.get("SPLITDBG_FUZZ_SEED", "1"))

pytestmark = [pytest.mark.guest] + ([pytest.mark.slow] if CASES > 1000 else [])


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    given = os.environ.get("SPLITDBG_FUZZ_IMAGE")
    if given:
        return Path(given).resolve()
    from tests.fuzz.make_image import make_image

    return make_image(tmp_path_factory.mktemp("fuzz") / "g.raw")


def test_no_traceback_and_no_hang_on_mutated_images(image, tmp_path):
    report = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.pop("SPLITDBG_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "tests.fuzz.fuzzer", str(image), "--cases", str(CASES),
                        "--seed", str(SEED), "--json", str(report)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120 + 2 * CASES)
    assert report.exists(), p.stderr[-3000:]
    r = json.loads(report.read_text())
    t = r["totals"]
    print(f"\nfuzz: {t['cases']} cases (seed {SEED}) in {t['seconds']} s, {t['failures']} failures "
          f"({t['hangs']} hangs), slowest {t['slowest']} s, {t['with_problems']} with problems named, "
          f"exit codes {t['rc']}")
    shown = "\n".join(f"case {f['case']} (seed {f['seed']}) {f['command']}: {f['failure']}: {f['mutations']}\n"
                      f"  {f['stderr'][-400:]}{(f.get('exception') or '')[-1200:]}" for f in r["failures"][:5])
    assert t["cases"] == CASES and t["failures"] == 0, shown
    assert all(n > 0 for n in t["by_command"].values())
    assert t["with_problems"] > 0         # the mutations reach the decoders, which name what they found
