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


class Patched:
    """Guest memory with some 8-byte entries replaced: the tables as they were when a probe's
    access ran (the handler restores a probed entry right after the exit it causes)."""

    def __init__(self, mem, entries: dict[int, int]):
        self.mem, self.entries = mem, entries

    def read(self, addr, size):
        data = bytearray(self.mem.read(addr, size))
        for a, value in self.entries.items():
            if addr <= a < addr + size:
                data[a - addr:a - addr + 8] = value.to_bytes(8, "little")
        return bytes(data)


async def until_first_snapshot(app, pilot, timeout: float = 30.0) -> None:
    """Drive a Textual pilot until the app's first snapshot has arrived and been drawn."""
    for _ in range(int(timeout / 0.1)):
        await pilot.pause(0.1)
        if app.snap:
            break
    await pilot.pause(0.2)
