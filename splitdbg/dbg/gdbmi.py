"""A gdb subprocess driven through pygdbmi, for code that runs outside gdb."""
from __future__ import annotations

import itertools
import select
import shutil
import time

from pygdbmi.gdbcontroller import GdbController

from ..errors import SplitdbgError, TargetBusy, TargetGone
from .base import DETACHED_MESSAGES, GONE_MESSAGES, Debugger, GdbError  # noqa: F401 (GdbError re-exported)


_GONE = GONE_MESSAGES
_DETACHED = DETACHED_MESSAGES  # only meaningful once attached


def _mi_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class GdbMI(Debugger):
    keeps_physical_mode = True  # this gdb is ours: nobody else expects virtual addresses
    def __init__(self, gdb: str = "gdb", timeout: float = 30.0):
        path = shutil.which(gdb)
        if path is None:
            raise SplitdbgError("gdb is not installed (apt-get install gdb)")
        self.timeout = timeout
        # time_to_check_for_additional_output_sec=0: pygdbmi's default waits 0.2 s after every
        # command (5 commands/s); we poll for our own result record instead.
        self._gdb = GdbController([path, "--nx", "--quiet", "--interpreter=mi3"],
                                  time_to_check_for_additional_output_sec=0)
        self._tokens = itertools.count(100)
        self.target = None
        self.gone: str | None = None  # why the stub went away, once it has
        self.running = False  # from gdb's *running / *stopped records
        self.qemu = None      # the local QEMU process (dbg/qemu.py), when it is one we can see
        self.state_before: str | None = None   # QEMU's run state before we attached (None: unknown)
        self.leave_stopped = False             # on close, disconnect (the guest stays stopped)
        self._mi("-gdb-set mi-async on")
        self._mi("-gdb-set pagination off")
        self._mi("-gdb-set confirm off")
        self._mi("-gdb-set width 0")

    @classmethod
    def connect(cls, target: str, vmlinux: str | None = None, timeout: float = 30.0,
                connect_timeout: float = 2.0) -> "GdbMI":
        """gdb attached to a gdbstub at "HOST:PORT" or ":PORT" (the target stops while attached).

        The guest's run state is respected: when QEMU is on this machine its QMP socket says
        whether the guest ran before we attached (`state_before`); a guest that was paused is
        left paused when we let go (gdb disconnects instead of detaching: QEMU 7.2 resumes the
        guest on a detach, whatever it was doing before). A stub that another debugger holds is
        refused at once, without connecting (see splitdbg/dbg/qemu.py for why not even a try)."""
        from .qemu import QemuProcess

        host, _, port = target.rpartition(":")
        qemu = QemuProcess.find(host, int(port)) if port.isdigit() else None
        if qemu is not None:
            held = qemu.holders()
            if held:
                qemu.close()
                raise TargetBusy(f"another debugger holds the gdbstub on {target} ({', '.join(held)}): QEMU's "
                                 f"stub serves one at a time; detach it (or end it) and try again")
        state = qemu.run_state() if qemu is not None else None
        dbg = cls(timeout=timeout)
        dbg.qemu, dbg.state_before = qemu, state
        try:
            if vmlinux:
                dbg._mi(f"-file-exec-and-symbols {_mi_quote(vmlinux)}")
            dbg._mi(f"-gdb-set remotetimeout {int(max(connect_timeout, 1))}")
            # gdb retries a refused connection for `tcp connect-timeout` (15 s) by default: a stub
            # that is not there should be reported at once.
            dbg._mi("-gdb-set tcp auto-retry off")
            try:
                dbg._mi(f"-target-select remote {host or 'localhost'}:{port}", timeout=connect_timeout + 1)
            except GdbError as exc:
                if "did not answer" in str(exc) or "Timeout" in str(exc) or "timed out" in str(exc):
                    raise GdbError(f"no answer within {connect_timeout:.0f} s: another debugger may hold it "
                                   f"(QEMU's stub serves one at a time)") from exc
                raise
            dbg._mi(f"-gdb-set remotetimeout {int(max(timeout, 2))}")
        except GdbError as exc:
            dbg.close()
            raise TargetGone(f"cannot attach to the gdbstub at {target}: {exc}") from exc
        dbg.target = target
        dbg.leave_stopped = state is not None and state != "running"
        # A previous client may have left the stub in physical mode: start from a known state.
        dbg._physical = True
        dbg.set_physical(False)
        return dbg

    # -- MI plumbing ---------------------------------------------------------------------------
    def _mi(self, command: str, timeout: float | None = None) -> tuple[dict, list[str]]:
        """Send one MI command; return its result record and the console output it caused."""
        if self.gone:
            raise TargetGone(f"gdbstub at {self.target} is gone: {self.gone}")
        token = next(self._tokens)
        try:
            self._gdb.write(f"{token}{command}", read_response=False)
        except (OSError, ValueError) as exc:
            self.gone = f"gdb is gone: {exc}"
            raise TargetGone(self.gone) from exc
        console: list[str] = []
        deadline = time.monotonic() + (timeout or self.timeout)
        stdout = self._gdb.gdb_process.stdout
        while time.monotonic() < deadline:
            # Wait on gdb's pipe ourselves: pygdbmi's own timeout loop adds milliseconds per call.
            select.select([stdout], [], [], max(0.0, min(0.5, deadline - time.monotonic())))
            try:
                responses = self._gdb.get_gdb_response(timeout_sec=0, raise_error_on_timeout=False)
            except (OSError, ValueError) as exc:
                self.gone = f"gdb is gone: {exc}"
                raise TargetGone(self.gone) from exc
            for r in responses:
                if r["type"] in ("console", "target") and r.get("payload"):
                    console.append(r["payload"])
                elif r["type"] == "result" and r.get("token") == token:
                    if r["message"] == "error":
                        msg = (r.get("payload") or {}).get("msg", "error")
                        if any(m in msg for m in _GONE) or (self.target and any(m in msg for m in _DETACHED)):
                            self.gone = msg
                            raise TargetGone(f"gdbstub at {self.target} is gone: {msg}")
                        raise GdbError(msg)
                    return r, console
                else:
                    self._note_async(r)
            if self._gdb.gdb_process is None or self._gdb.gdb_process.poll() is not None:
                self.gone = "gdb exited"
                raise TargetGone("gdb exited")
        raise GdbError(f"gdb did not answer {command!r} within {timeout or self.timeout:.0f}s")

    # -- Debugger interface --------------------------------------------------------------------
    def execute(self, command: str, timeout: float | None = None) -> str:
        _, console = self._mi(f"-interpreter-exec console {_mi_quote(command)}", timeout)
        return "".join(console)

    def _read_memory(self, addr: int, size: int) -> bytes:
        out = bytearray()
        result, _ = self._mi(f"-data-read-memory-bytes {addr:#x} {size}")
        for block in result["payload"]["memory"]:
            out += bytes.fromhex(block["contents"])
        if len(out) != size:
            raise GdbError(f"short read at {addr:#x}: {len(out)} of {size} bytes")
        return bytes(out)

    def _note_async(self, r: dict) -> None:
        if r["type"] == "notify" and r.get("message") in ("running", "stopped"):
            self.running = r["message"] == "running"

    def interrupt(self, timeout: float = 10.0) -> None:
        """Stop every vCPU and wait until gdb says so (at once when already stopped)."""
        if not self.running:
            return
        self._mi("-exec-interrupt --all")
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            for r in self._gdb.get_gdb_response(timeout_sec=0.002, raise_error_on_timeout=False):
                self._note_async(r)
        if self.running:
            raise GdbError(f"the target did not stop within {timeout:.0f}s of an interrupt")

    def wait_stopped(self, timeout: float, cancelled=None) -> bool:
        """Wait for the target to stop by itself (a breakpoint); True if it did. `cancelled`: a
        callable, checked every 50 ms, that ends the wait early (the TUI quitting)."""
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline and not (cancelled and cancelled()):
            for r in self._gdb.get_gdb_response(timeout_sec=0.05, raise_error_on_timeout=False):
                self._note_async(r)
        return not self.running

    def cont(self) -> None:
        if not self.running:
            self._mi("-exec-continue --all")
            self.running = True  # *running may come after ^running: do not wait for it

    def close(self) -> None:
        if self._gdb is not None:
            try:
                if self.target and not self.gone:
                    # QEMU keeps PhyMemMode across connections: the next client (the user's gdb)
                    # must find virtual addressing, as it expects.
                    self.interrupt()
                    self.set_physical(False)
                    # QEMU continues the guest on a detach packet; a guest that was paused before
                    # we came stays paused: close the connection without one.
                    self._mi("-target-disconnect" if self.leave_stopped else "-target-detach", timeout=5)
            except SplitdbgError:
                pass
            self._gdb.exit()
            self._gdb = None
        if self.qemu is not None:
            self.qemu.close()
