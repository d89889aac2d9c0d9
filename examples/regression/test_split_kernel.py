"""Example regression checks written with splitdbg's pytest plugin.

    pytest --splitdbg-target :1234 examples/regression
"""
from pathlib import Path

import splitdbg.api as sd

POLICY = Path(__file__).resolve().parents[2] / "policies" / "default.toml"


def test_default_policy_holds(splitdbg_session):
    failed = [r for r in sd.check(splitdbg_session, str(POLICY)) if not r["ok"]]
    assert not failed, failed


def test_every_cpu_is_under_the_handler(splitdbg_session):
    snap = splitdbg_session.snapshot(with_ranges=False, crosscheck=False)
    assert snap.module is not None and snap.cpus == list(range(snap.module["ncpus"]))


def test_no_denied_violation_disagrees_with_the_model(splitdbg_session):
    snap = splitdbg_session.snapshot(with_ranges=False)
    assert not [e for e in snap.events if e.check.startswith("differs:")]
