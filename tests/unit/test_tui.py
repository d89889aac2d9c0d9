"""The TUI on a recording of the real guest (tests/unit/data/recording.jsonl, taken with
`splitdbg record`): navigation, filters, detail views, SVG export. Deterministic: no guest."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from splitdbg.target.snapshot import Snapshot
from splitdbg.tui.app import EventDetail, HelpScreen, SplitdbgApp
from splitdbg.tui.source import ReplaySource

REC = Path(__file__).parent / "data" / "recording.jsonl"


def app() -> SplitdbgApp:
    return SplitdbgApp(ReplaySource(str(REC)), interval=0.01, polls=3)


def last_snapshot() -> Snapshot:
    return Snapshot.from_json(REC.read_text().splitlines()[-1])


def run(coro):
    return asyncio.run(coro)


def test_first_screen_shows_containers_and_status():
    async def go():
        a = app()
        async with a.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            snap = last_snapshot()
            t = a.query_one("#containers-table", DataTable)
            assert t.row_count == len(snap.containers)
            status = str(a.query_one("#status", Static).render())
            assert "SVM/NPT" in status and f"{len(snap.containers) - 1} containers" in status
    run(go())


def test_container_map_and_filter():
    async def go():
        a = app()
        async with a.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            snap = last_snapshot()
            nonroot = next(c for c in snap.containers if c.id != 0)
            t = a.query_one("#containers-table", DataTable)
            t.focus()
            t.move_cursor(row=[c.id for c in snap.containers].index(nonroot.id))
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert a.query_one("#tabs").active == "map"
            ranges = a.query_one("#ranges-table", DataTable)
            assert ranges.row_count == len(nonroot.ranges)
            await pilot.press("slash")
            for ch in "differs":
                await pilot.press(ch)
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert ranges.row_count == sum(r.differs_from_root for r in nonroot.ranges) > 0
            strip = str(a.query_one("#strip", Static).render())
            assert strip.startswith(f"container {nonroot.id} NPT")
    run(go())


def test_event_log_filter_and_detail_with_verdict():
    async def go():
        a = app()
        async with a.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("3")
            a.event_filter = "kind=violation"
            a.render_events()
            t = a.query_one("#events-table", DataTable)
            snap = last_snapshot()
            violations = [e for e in snap.events if e.kind == "violation"]
            assert t.row_count == len(violations) > 0
            t.focus()
            t.move_cursor(row=0)
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert isinstance(a.screen, EventDetail)
            text = str(a.screen.query_one("#detail-text", Static).render())
            assert "model's verdict" in text and "EXITINFO1" in text and violations[0].check in text
            await pilot.press("escape")
            await pilot.press("question_mark")
            assert isinstance(a.screen, HelpScreen)
    run(go())


def test_pause_and_svg_export(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    async def go():
        a = app()
        async with a.run_test(size=(80, 24)) as pilot:     # usable at 80x24
            await pilot.pause(0.3)
            await pilot.press("p")
            assert a.paused and "PAUSED" in str(a.query_one("#status", Static).render())
            svg = a.export_screenshot()
            assert svg.startswith("<svg") and "splitdbg" in svg
    run(go())


GOLDEN = Path(__file__).parent / "data" / "tui_events_80x24.svg"


def test_svg_snapshot_of_the_event_log_matches_the_golden_file():
    """The event log at 80x24 on the recording, rendered to SVG, must match the stored snapshot.
    After an intended change to the look: SPLITDBG_UPDATE_SNAPSHOTS=1 pytest tests/unit/test_tui.py"""
    import os

    async def go():
        a = app()
        async with a.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("3")
            await pilot.press("p")           # paused: nothing moves while we take the picture
            await pilot.pause(0.1)
            return a.export_screenshot(title="splitdbg")
    svg = run(go())
    if os.environ.get("SPLITDBG_UPDATE_SNAPSHOTS"):
        GOLDEN.write_text(svg)
    assert svg == GOLDEN.read_text(), "the TUI's rendering changed (see the test's docstring)"


def test_sharing_view_shows_a_writable_kernel_text_frame():
    """The recording has a kernel writer under `log` keeping a writable alias of a text frame."""
    async def go():
        a = app()
        async with a.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("4")
            t = a.query_one("#sharing-table", DataTable)
            first = Snapshot.from_json(REC.read_text().splitlines()[0])
            assert t.row_count == len(first.sharing) > 0
            writable = [r for r in first.sharing if r["writable"]]
            assert writable and str(t.get_row_at(0)[4]) == "yes"
            assert t.get_row_at(0)[1] == f"{writable[0]['frame']:#x}"
            await pilot.press("w")            # the walk tool needs a live target: a notice, no crash
            await pilot.pause(0.1)
            assert not isinstance(a.screen, EventDetail)
    run(go())


class FlakySource:
    """A target that goes away and comes back (QEMU restarted, module reloaded)."""

    def __init__(self):
        self.replay, self.n = ReplaySource(str(REC)), 0
        self.target = "flaky"

    def poll(self):
        self.n += 1
        if 2 <= self.n <= 3:
            from splitdbg.errors import TargetGone
            raise TargetGone("the gdbstub at :1234 is gone")
        return self.replay.poll()

    def close(self):
        pass


def test_a_lost_target_is_shown_and_the_app_recovers(monkeypatch):
    import splitdbg.tui.app as tui

    monkeypatch.setattr(tui.SplitdbgApp, "retry_after", 0.0)   # no 2 s back-off in a test

    async def go():
        a = SplitdbgApp(FlakySource(), interval=0.05, polls=6)
        seen = []
        async with a.run_test(size=(120, 40)) as pilot:
            for _ in range(40):
                await pilot.pause(0.05)
                seen.append(str(a.query_one("#status", Static).render()))
            assert a.losses == ["the gdbstub at :1234 is gone"] * 2
            assert a.last_lost_text == "target lost: the gdbstub at :1234 is gone (retrying)"
            assert "SVM/NPT" in seen[-1] and a.lost is None   # back once the target answers again
    run(go())


def test_map_filter_by_address_range():
    async def go():
        a = app()
        async with a.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            a.map_filter = "0x1000000-0x1200000"
            a.render_map()
            t = a.query_one("#ranges-table", DataTable)
            root = last_snapshot().container(0)
            assert t.row_count == sum(1 for r in root.ranges if r.start < 0x1200000 and r.end > 0x1000000) > 0
    run(go())


def test_export_never_replaces_a_file_and_a_full_disk_is_a_notice(tmp_path, monkeypatch):
    """`e` (and `s`) write through splitdbg/fileio: a name already taken, or a disk that fills up,
    is a notice and the old file stays byte for byte; otherwise the file is written whole."""
    import errno
    import os

    import splitdbg.fileio as fileio
    import splitdbg.tui.app as tui

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tui.time, "time", lambda: 1234)
    taken = tmp_path / "splitdbg-events-1234.jsonl"

    async def go():
        a = app()
        async with a.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("3")
            a.event_filter = "kind=violation"
            a.render_events()
            taken.write_text("someone's notes\n")
            await pilot.press("e")
            await pilot.pause(0.1)
            assert any("exists" in str(n.message) and "--force" in str(n.message) for n in a._notifications)
            assert taken.read_text() == "someone's notes\n"
            taken.unlink()
            await pilot.press("e")
            await pilot.pause(0.1)
            lines = taken.read_text().splitlines()
            assert len(lines) == len(a.events_shown) > 0
            taken.unlink()
            with monkeypatch.context() as m:
                m.setattr(fileio.os, "write", lambda fd, data: (_ for _ in ()).throw(
                    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
                await pilot.press("s")
                await pilot.pause(0.1)
            assert any("No space left on device" in str(n.message) for n in a._notifications)
            assert os.listdir(tmp_path) == []                 # no partial SVG, no temporary file
    run(go())


def test_a_filter_word_that_means_nothing_is_refused_not_matching_everything():
    async def go():
        a = app()
        async with a.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("2")
            ranges = a.query_one("#ranges-table", DataTable)
            everything = ranges.row_count
            for word in ("differs", "zzz"):
                await pilot.press("slash")
                a.query_one("#filter").value = word
                await pilot.press("enter")
                await pilot.pause(0.1)
            assert a.map_filter == "differs"              # the last good filter stays
            assert ranges.row_count < everything
            assert any("'zzz': not a filter word" in str(n.message) and "differs" in str(n.message)
                       for n in a._notifications)
            await pilot.press("3")
            await pilot.press("slash")
            a.query_one("#filter").value = "kind=violatoin"
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert a.event_filter == "" and any("kind= takes one of" in str(n.message) for n in a._notifications)
            # An unknown word is refused with the valid ones: not looked for as text, which matched nothing.
            shown = len(a.events_shown)
            await pilot.press("slash")
            a.query_one("#filter").value = "violation zzz"
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert a.event_filter == "" and len(a.events_shown) == shown > 0
            assert any("'zzz': unknown word" in str(n.message) and "attack" in str(n.message)
                       and "deny" in str(n.message) and "rodata" in str(n.message) for n in a._notifications)
            await pilot.press("slash")
            a.query_one("#filter").value = "fatal"           # a known word no event of the recording has
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert a.events_shown == [] and any("no event matches 'fatal'" in str(n.message) for n in a._notifications)
    run(go())


def quit_time(key: str, source=None, interval: float = 0.5, before: float = 0.5) -> float:
    """Seconds from pressing `key` to the app having ended, its worker threads included: run_test
    returns only after asyncio.run-like shutdown of the poller (which, looping on, used to hang)."""
    import threading
    import time

    seen = {}

    async def go():
        a = SplitdbgApp(source or ReplaySource(str(REC)), interval=interval)    # polls for ever, as live
        async with a.run_test(size=(120, 40)) as pilot:
            await pilot.pause(before)
            assert a.snap is not None
            seen["t0"] = time.monotonic()
            await pilot.press(key)
        seen["app"] = time.monotonic()
        return a

    def main():
        asyncio.run(go())            # asyncio.run also waits for the default executor's threads
        seen["t1"] = time.monotonic()
    t = threading.Thread(target=main, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), f"{key!r} did not end the app within 10 s"
    took = seen["t1"] - seen["t0"]
    print(f"{key!r}: the app ended in {seen['app'] - seen['t0']:.3f} s, its threads in {took:.3f} s")
    return took


@pytest.mark.parametrize("key", ["q", "ctrl+c"])
def test_quitting_a_replay_is_immediate(key):
    assert quit_time(key) < 2.0              # measured about 0.1 s; the goal is 0.5 s


def test_quitting_while_the_target_is_lost_does_not_wait_out_the_back_off():
    class Gone:
        target = "gone"
        calls = 0

        def poll(self):
            Gone.calls += 1
            if Gone.calls > 1:
                from splitdbg.errors import TargetGone
                raise TargetGone("the gdbstub is gone")
            return ReplaySource(str(REC)).poll()

        def close(self):
            pass
    assert quit_time("q", Gone(), interval=0.05, before=0.5) < 1.5      # the back-off is 2 s
