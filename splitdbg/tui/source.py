"""Where the TUI's snapshots come from: a live target (polled), a recording (replayed), or a
memory image (read once, offline).

A recording is JSON lines: one snapshot per line, as `Snapshot.to_json` writes them (compact).
Sources are used from a worker thread; they never touch the UI.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from ..errors import SplitdbgError
from ..target.snapshot import Snapshot


class LiveSource:
    """Polls a live target. Reconnects when the target comes back (QEMU restarted, module reloaded).

    A poll of a target that went away (QEMU exited, its RAM file deleted or replaced, the guest
    rebooted) raises TargetGone: the session is closed with its mapping of the old RAM file, and
    the next poll opens a new session, which finds the new QEMU's RAM file through its gdbstub.
    `run_state` is QEMU's own (QMP query-status) after each poll; None when it cannot be asked."""

    run_state: str | None = None

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
        self.run_state = self.session.run_state()
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

    # -- control through gdb: stop, continue, stop at the root-mode handler -------------------------
    control = None   # GdbMI while splitdbg holds the guest stopped

    def stop(self) -> str:
        from ..dbg.gdbmi import GdbMI

        if self.control is None:
            self.control = GdbMI.connect(self.target)      # attaching stops every vCPU
        return "stopped by splitdbg (gdb attached)"

    def resume(self) -> str:
        from ..dbg.gdbmi import GdbMI

        if self.control is not None:
            self.control.leave_stopped = False              # splitdbg stopped it: it runs again
            self.control.close()                            # detaching lets the guest run on
            self.control = None
        elif self.run_state not in (None, "running"):
            # Paused by someone else (QMP `stop`, a gdb gone): continued on the user's `z`.
            c = GdbMI.connect(self.target)
            c.leave_stopped = False
            c.close()                                       # QEMU continues the guest on a detach
        return "running"

    def break_at_handler(self, timeout: float = 20.0, cancelled=None) -> str:
        """Run the guest until a CPU enters the root-mode handler (a breakpoint on
        sk_svm_handle_exit), and say which exit brought it there."""
        from ..lab import REPO
        from ..target.splitkernel import SplitKernel
        from ..vmx_model import vmcb

        self.stop()
        dbg = self.control
        if self.session is None or self.session.kernel is None:
            raise SplitdbgError("the handler breakpoint needs the kernel's symbols (vmlinux)")
        dbg.execute(f"file {self.session.kernel.symbols.path}")
        dbg.execute(f"source {REPO / 'splitdbg' / 'gdb_plugin' / 'load.py'}")
        dbg.execute("split symbols")
        sk = SplitKernel(self.session.mem)
        if sk.arch != "svm":
            raise SplitdbgError("stopping in the root-mode handler is for the SVM backend under QEMU's gdbstub")
        out = dbg.execute("break sk_svm_handle_exit")
        if "Breakpoint" not in out:
            raise SplitdbgError(f"cannot set a breakpoint on the handler: {out.strip()}")
        dbg.cont()
        hit = dbg.wait_stopped(timeout, cancelled=cancelled)     # the TUI quitting ends the wait
        if not hit:
            dbg.interrupt()
        dbg.execute("delete")
        if not hit:
            return f"no VM exit reached the handler within {timeout:.0f} s; stopped"
        regs = dbg.read_registers(("rip",))
        sk = SplitKernel(self.session.mem)
        m = re.search(r"Current thread is (\d+)", dbg.execute("thread"))
        cpu = int(m.group(1)) - 1 if m else 0
        c = vmcb.decode(self.session.mem.read(sk.vmcb_pa(sk.cpus[0] if cpu not in sk.cpus else cpu), 4096))["control"]
        return (f"stopped in the root-mode handler on CPU {cpu} (RIP {regs.get('rip', 0):#x}): "
                f"exit {c['decoded']['exit']}, EXITINFO1 {c['exit_info_1']:#x}, EXITINFO2 {c['exit_info_2']:#x}")

    def walk(self, pid: int, gva: int, access: str) -> dict:
        from ..target.walk import walk_process

        if self.session is None:
            raise SplitdbgError("not connected")
        return walk_process(self.session.mem, self.session.kernel, pid, gva, access)

    def close(self) -> None:
        self.resume()
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


class ImageSource:
    """A memory image (docs/images.md): one Session on the image, one snapshot built from it at the
    first poll and served ever after; nothing in an image changes. The walk tool works (it reads the
    image); guest control does not: there is no guest to stop."""

    offline = True

    def __init__(self, path: str, vmlinux: str | None = None):
        from ..target.session import Session

        self.session = Session(path, vmlinux=vmlinux)     # a bad image fails here, before any screen
        self.target = path
        m = self.session.image
        self.info = (f"image from {m.source}, taken {m.created}" if m is not None
                     else "image without sidecar (q35 layout, no registers)")
        self._snap: Snapshot | None = None

    def poll(self) -> Snapshot:
        if self._snap is None:
            self._snap = self.session.snapshot()
        return self._snap

    def walk(self, pid: int, gva: int, access: str) -> dict:
        from ..target.walk import walk_process

        return walk_process(self.session.mem, self.session.kernel, pid, gva, access)

    def close(self) -> None:
        self.session.close()


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
