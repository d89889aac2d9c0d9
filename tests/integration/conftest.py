"""Fixtures that boot the real guest under QEMU. One guest per paging mode per test session."""
from __future__ import annotations

import pytest

from splitdbg import lab


def boot(paging: int = 4, smp: int = 2, append: str = "", base_port: int = 15000) -> lab.Guest:
    return lab.up(port=lab.free_port(base_port), smp=smp, paging=paging, append=append, timeout=180)


@pytest.fixture(scope="session", params=[4, 5], ids=["4-level", "5-level"])
def guest(request):
    """A booted guest (2 CPUs, no split-kernel module), in each paging mode in turn."""
    g = boot(paging=request.param)
    yield g
    g.down()


@pytest.fixture(scope="session")
def guest4():
    """A booted 4-level guest, for tests that need only one."""
    g = boot(paging=4, base_port=15100)
    yield g
    g.down()
