from __future__ import annotations

import re
from abc import ABC, abstractmethod

# gdb prints some registers as flag sets ("[ PDBR=1166 PCID=0 ]"); `info registers` gives the raw
# hex value first on every line, which is what we parse.
_REG_LINE = re.compile(r"^(\w+)\s+(0x[0-9a-fA-F]+)", re.M)


class Debugger(ABC):
    # QEMU's gdbstub reads physical addresses while Qqemu.PhyMemMode is 1. We track the mode so a
    # switch costs a packet only when it changes; `keeps_physical_mode` says whether a backend may
    # leave it on between reads (true when we own the gdb; false for the user's own gdb session).
    keeps_physical_mode = False
    _physical = False

    def set_physical(self, on: bool) -> None:
        if on == self._physical:
            return
        reply = self.execute(f"maint packet Qqemu.PhyMemMode:{int(on)}")
        if '"OK"' not in reply:
            from ..errors import SplitdbgError

            raise SplitdbgError(f"the gdbstub refused physical memory mode (not QEMU?): {reply.strip()}")
        self._physical = on

    @abstractmethod
    def execute(self, command: str) -> str:
        """Run a gdb CLI command, return what it printed."""

    @abstractmethod
    def read_memory(self, addr: int, size: int) -> bytes:
        """Read target memory as gdb currently addresses it."""

    def read_registers(self, names: tuple[str, ...] = ()) -> dict[str, int]:
        """Registers of the selected thread (vCPU), by gdb's names (rip, cr3, efer, ...)."""
        text = self.execute("info registers " + " ".join(names) if names else "info all-registers")
        return {m.group(1): int(m.group(2), 16) for m in _REG_LINE.finditer(text)}

    def monitor(self, command: str) -> str:
        """A QEMU monitor command through the gdbstub (qRcmd)."""
        return self.execute(f"monitor {command}")

    @abstractmethod
    def interrupt(self) -> None:
        """Stop the target (all vCPUs)."""

    @abstractmethod
    def cont(self) -> None:
        """Let the target run."""

    def close(self) -> None:
        pass
