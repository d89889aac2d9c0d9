from __future__ import annotations

import re
from abc import ABC, abstractmethod

# gdb prints some registers as flag sets ("[ PDBR=1166 PCID=0 ]"); `info registers` gives the raw
# hex value first on every line, which is what we parse.
_REG_LINE = re.compile(r"^(\w+)\s+(0x[0-9a-fA-F]+)", re.M)


class Debugger(ABC):
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
