"""Where the TUI's snapshots come from: a live target (polled), or a recording (replayed).

A recording is JSON lines: one snapshot per line, as `Snapshot.to_json` writes them (compact).
Sources are used from a worker thread; they never touch the UI.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import SplitdbgError
from ..target.snapshot import Snapshot


class LiveSource:
    """Polls a live target. Reconnects when the target comes back (QEMU restarted, module reloaded)."""

    def __init__(self, target: str, vmlinux: str | None = None, record: str | None = None):
        self.target, self.vmlinux = target, vmlinux
        self.session = None
        self.record = open(record, "a") if record else None
        self.ranges_every = 4    # nested tables change rarely: re-read them every 4th poll
        self._n = 0
        self._ranges_cache: dict[int, list] = {}
        self._sharing: list = []
        self._details: dict = {}     # event details computed once per event, not once per poll
        self._events: dict = {}      # decoded ring entries, likewise

    def poll(self) -> Snapshot:
        from ..target.session import Session

        if self.session is None:
            self.session = Session(self.target, vmlinux=self.vmlinux)
        try:
            with_ranges = self._n % self.ranges_every == 0
            snap = self.session.snapshot(with_ranges=with_ranges, detail_cache=self._details, event_cache=self._events)
        except SplitdbgError:
            self.close()
            raise
        self._n += 1
        if with_ranges:
            self._ranges_cache = {c.slat_root: c.ranges for c in snap.containers}
            self._sharing = snap.sharing
        else:
            for c in snap.containers:
                c.ranges = self._ranges_cache.get(c.slat_root, [])
            snap.sharing = self._sharing
        if self.record:
            self.record.write(json.dumps(json.loads(snap.to_json())) + "\n")
            self.record.flush()
        return snap

    def walk(self, pid: int, gva: int, access: str) -> dict:
        from ..target.walk import walk_process

        if self.session is None:
            raise SplitdbgError("not connected")
        return walk_process(self.session.mem, self.session.kernel, pid, gva, access)

    def close(self) -> None:
        if self.session is not None:
            try:
                self.session.close()
            except (SplitdbgError, OSError):
                pass
        self.session = None


class ReplaySource:
    """Replays a recording; each poll returns the next snapshot (the last one repeats)."""

    def __init__(self, path: str):
        text = Path(path).read_text()
        self.snaps = [Snapshot.from_json(line) for line in text.splitlines() if line.strip()]
        if not self.snaps:
            raise SplitdbgError(f"{path}: no snapshots recorded")
        self.i = 0
        self.target = f"replay of {path}"

    def poll(self) -> Snapshot:
        snap = self.snaps[min(self.i, len(self.snaps) - 1)]
        self.i += 1
        return snap

    def close(self) -> None:
        pass


def record(target: str, path: str, seconds: float, interval: float = 0.5, vmlinux: str | None = None) -> int:
    """Record snapshots of a live target for `seconds` (for `splitdbg replay`)."""
    src = LiveSource(target, vmlinux=vmlinux, record=path)
    n, t0 = 0, time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            src.poll()
            n += 1
            time.sleep(interval)
    finally:
        src.close()
    return n
