"""The TUI says what its screens cannot show as it is: events the rings lost between two polls,
the problems of a snapshot (corrupt guest data), and attacks, which stand out. Pilot tests on
snapshots of synthetic module state (tests/unit/test_corrupt_state.py) and of the recording."""
from __future__ import annotations

import asyncio
import copy
import threading
from dataclasses import replace

from textual.widgets import DataTable, Static
from textual.widgets._footer import FooterKey

from splitdbg.target import snapshot as snap
from splitdbg.tui.app import ALARM_STYLE, HELP, ProblemsScreen, SplitdbgApp

from .test_corrupt_state import RING1, build, ring_header
from .test_following import STEPS
from .test_tui import last_snapshot


class SynthSource:
    """A guest whose module state is synthetic memory, read at each poll. It runs its next step
    only when the test lets it (`go()`): the poller's pace decides nothing."""

    def __init__(self, mem, steps=(), offline: bool = False):
        self.mem, self.steps = mem, list(steps)
        self.target = "synthetic"
        self.permits = threading.Semaphore(0)
        self.polls = 0
        if offline:
            self.offline, self.info = True, "image from a test"

    def go(self) -> None:
        self.permits.release()

    def poll(self):
        if self.steps and self.permits.acquire(blocking=False):
            self.steps.pop(0)(self.mem)
        s = snap.take(self.mem, crosscheck=False)
        self.polls += 1
        return s

    def close(self):
        pass


class ListSource:
    def __init__(self, snaps):
        self.snaps, self.target = snaps, "list"

    def poll(self):
        return self.snaps[0] if len(self.snaps) == 1 else self.snaps.pop(0)

    def close(self):
        pass


async def until(pilot, cond, timeout: float = 10.0):
    """Wait for a condition, a frame at a time (not a fixed sleep)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond() and loop.time() < end:
        await pilot.pause()
    assert cond()


def status(a) -> str:
    return str(a.query_one("#status", Static).render())


def test_events_lost_between_polls_are_said_in_the_header_and_the_event_log():
    async def go():
        src = SynthSource(build(), STEPS)
        a = SplitdbgApp(src, interval=0.02)
        async with a.run_test(size=(120, 40)) as pilot:
            losses = a.query_one("#event-losses", Static)
            await until(pilot, lambda: a.snap is not None)
            await pilot.press("3")
            await pilot.pause()
            assert not losses.display and "lost" not in status(a)        # nothing lost yet: nothing said
            src.go()                                                   # CPU 0's busy ring overrun
            await until(pilot, lambda: "lost 35 events (!)" in status(a))
            assert losses.display and str(losses.render()).startswith("lost 35 events on CPU 0 (busy ring) (between")
            src.go()                                                   # then CPU 1's security ring
            await until(pilot, lambda: "lost 54 events (!)" in status(a))
            assert str(losses.render()).startswith(
                "lost 35 events on CPU 0 (busy ring); lost 19 events on CPU 1 (security ring)")
            src.go()                                                   # a quiet step, and polls after it
            await until(pilot, lambda: not src.steps)
            n = src.polls
            await until(pilot, lambda: src.polls > n + 2)
            await pilot.pause()
            assert "lost 54 events (!)" in status(a)        # cumulative: quiet polls forget nothing
            assert str(losses.render()).startswith("lost 35 events on CPU 0 (busy ring); lost 19 events on CPU 1")
    asyncio.run(go())


def test_problems_are_marked_in_the_header_and_listed_on_a_key():
    for offline in (False, True):
        async def go():
            mem = build()
            ring_header(mem, RING1, entries=0x10001, cpu=1)     # CPU 1's busy ring: corrupt header
            a = SplitdbgApp(SynthSource(mem, offline=offline), interval=0.01, polls=3)
            async with a.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: a.snap is not None)
                await pilot.pause()
                assert "1 problem (!)" in status(a), status(a)
                keys = {k.key: k.description for k in a.screen.query(FooterKey)}
                assert keys.get("exclamation_mark") == "problems" and "\n  !  " in HELP
                await pilot.press("exclamation_mark")
                await until(pilot, lambda: isinstance(a.screen, ProblemsScreen))
                text = str(a.screen.query_one("#problems-text", Static).render())
                assert "1 problem in the guest's data" in text
                assert "CPU 1's busy ring at" in text and "entries 65537" in text
                await pilot.press("escape")
                await pilot.pause()
                assert not isinstance(a.screen, ProblemsScreen)
        asyncio.run(go())


def test_a_healthy_guest_has_no_marker():
    async def go():
        a = SplitdbgApp(SynthSource(build()), interval=0.01, polls=2)
        async with a.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: a.snap is not None)
            await pilot.pause()
            assert "problem" not in status(a) and "lost" not in status(a) and "(!)" not in status(a)
            await pilot.press("exclamation_mark")
            await until(pilot, lambda: isinstance(a.screen, ProblemsScreen))
            text = str(a.screen.query_one("#problems-text", Static).render())
            assert "0 problems" in text and "none" in text
    asyncio.run(go())


def attack_snapshot():
    s = copy.deepcopy(last_snapshot())
    e = s.events[-1]
    s.events += [replace(e, seq=e.seq + 1, kind="attack", action="deny", check="", what="hypercall DEVIRT refused"),
                 replace(e, seq=e.seq + 2, kind="fatal", action="none", check="")]
    return s


def test_attack_rows_stand_out_and_the_filter_knows_every_kind():
    async def go():
        a = SplitdbgApp(ListSource([attack_snapshot()]), interval=0.01, polls=2)
        async with a.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: a.snap is not None)
            await pilot.press("3")
            await pilot.pause()
            t = a.query_one("#events-table", DataTable)
            kinds = {str(t.get_row_at(i)[4]): t.get_row_at(i) for i in range(t.row_count)}
            for k in ("attack", "fatal"):
                assert all(str(c.style) == ALARM_STYLE for c in kinds[k])
            assert str(kinds["attack"][10]) == "hypercall DEVIRT refused"     # what was refused, in words
            rows = [t.get_row_at(i) for i in range(t.row_count)]
            denied = [r for r in rows if str(r[4]) == "violation" and str(r[5]) == "deny"]
            assert denied and all(str(r[4].style) == "bold red" for r in denied)     # not the attack's look
            for flt, want in (("attack", ["attack"]), ("kind=attack", ["attack"]), ("fatal", ["fatal"]),
                              ("deny attack", ["attack"])):
                await pilot.press("slash")
                a.query_one("#filter").value = flt
                await pilot.press("enter")
                await pilot.pause()
                assert a.event_filter == flt and [e.kind for e in a.events_shown] == want, flt
            for kind in a.EVENT_KINDS:                  # every kind the module names is a filter word
                a.check_event_filter(kind)
                a.check_event_filter(f"kind={kind}")
    asyncio.run(go())
