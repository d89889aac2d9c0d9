"""pytest plugin: write split-kernel regression checks as tests.

    pytest --splitdbg-target :1234 tests/

    def test_text_is_read_only(splitdbg_session):
        snap = splitdbg_session.snapshot()
        assert all("w" not in r.perms for c in snap.containers if c.id for r in c.ranges
                   if snap.module["kernel_text_pa"] <= r.start < snap.module["kernel_text_end_pa"])
"""
from __future__ import annotations

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("splitdbg")
    group.addoption("--splitdbg-target", default=None, help="split-kernel target: :PORT, HOST:PORT or an image")
    group.addoption("--splitdbg-vmlinux", default=None, help="kernel with symbols for the target")


@pytest.fixture(scope="session")
def splitdbg_session(request):
    """A connected splitdbg.target.session.Session, shared by the test session."""
    target = request.config.getoption("--splitdbg-target")
    if not target:
        pytest.fail("the splitdbg_session fixture needs --splitdbg-target :PORT (or HOST:PORT, or an image)")
    from .api import connect

    s = connect(target, vmlinux=request.config.getoption("--splitdbg-vmlinux"))
    yield s
    s.close()
