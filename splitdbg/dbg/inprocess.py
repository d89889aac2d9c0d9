"""The debugger interface inside gdb (the plugin), through gdb's own Python API."""
from __future__ import annotations

from ..errors import TargetGone
from .base import Debugger


class GdbInProcess(Debugger):
    def __init__(self):
        import gdb  # only importable inside gdb

        self._gdb = gdb

    def execute(self, command: str) -> str:
        try:
            return self._gdb.execute(command, to_string=True)
        except self._gdb.error as exc:
            if "Remote connection closed" in str(exc) or "not being run" in str(exc):
                raise TargetGone(str(exc)) from exc
            raise

    def _read_memory(self, addr: int, size: int) -> bytes:
        try:
            return bytes(self._gdb.selected_inferior().read_memory(addr, size))
        except self._gdb.MemoryError as exc:
            from ..errors import MemoryReadError

            raise MemoryReadError(addr, size, str(exc)) from exc

    def interrupt(self) -> None:
        self._gdb.execute("interrupt", to_string=True)

    def cont(self) -> None:
        self._gdb.execute("continue &", to_string=True)
