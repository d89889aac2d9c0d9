"""The debugger interface inside gdb (the plugin), through gdb's own Python API."""
from __future__ import annotations

from ..errors import MemoryReadError, TargetGone
from .base import DETACHED_MESSAGES, GONE_MESSAGES, Debugger, GdbError


class GdbInProcess(Debugger):
    def __init__(self):
        import gdb  # only importable inside gdb

        self._gdb = gdb

    def _error(self, exc: Exception) -> Exception:
        msg = str(exc)
        if any(m in msg for m in GONE_MESSAGES):
            return TargetGone(msg)
        if any(m in msg for m in DETACHED_MESSAGES):
            return TargetGone(f"gdb is not attached to QEMU's gdbstub (target remote :PORT): {msg}")
        return GdbError(msg)

    def execute(self, command: str) -> str:
        try:
            return self._gdb.execute(command, to_string=True)
        except self._gdb.error as exc:
            raise self._error(exc) from exc

    def _read_memory(self, addr: int, size: int) -> bytes:
        try:
            return bytes(self._gdb.selected_inferior().read_memory(addr, size))
        except self._gdb.MemoryError as exc:
            raise MemoryReadError(addr, size, str(exc)) from exc
        except self._gdb.error as exc:
            raise self._error(exc) from exc

    def interrupt(self) -> None:
        self.execute("interrupt")

    def cont(self) -> None:
        self.execute("continue &")
