from __future__ import annotations

import re
from abc import ABC, abstractmethod
from contextlib import contextmanager

from ..errors import NotAvailable, SplitdbgError


class GdbError(SplitdbgError):
    """gdb refused or failed a command (the message is gdb's)."""


# gdb's words for a stub that went away (QEMU killed or crashed, connection dropped, never attached).
GONE_MESSAGES = ("Remote connection closed", "Remote communication error", "The program is not being run",
                 "Connection reset by peer", "Broken pipe")
# ... and what it says with no remote target (never attached, or dropped after the stub died).
DETACHED_MESSAGES = ("not supported by this target", "No registers", "The program has no registers")

# gdb prints some registers as flag sets ("[ PDBR=1166 PCID=0 ]"); `info registers` gives the raw
# hex value first on every line, which is what we parse.
_REG_LINE = re.compile(r"^(\w+)\s+(0x[0-9a-fA-F]+)", re.M)


class Debugger(ABC):
    # QEMU's gdbstub reads physical addresses while Qqemu.PhyMemMode is 1. We track the mode so a
    # switch costs a packet only when it changes; `keeps_physical_mode` says whether a backend may
    # leave it on between reads (true when we own the gdb; false for the user's own gdb session,
    # whose commands expect virtual addresses). `read_memory` states the mode it wants each time,
    # so a mode left on can never leak into a virtual read.
    keeps_physical_mode = False
    _physical = False

    def set_physical(self, on: bool) -> None:
        if on == self._physical:
            return
        reply = self.execute(f"maint packet Qqemu.PhyMemMode:{int(on)}")
        # gdb 13 prints 'sending: ...' then 'received: "OK"'; an older QEMU or another stub
        # answers "" (unsupported), and then physical reads would silently be virtual ones.
        if '"OK"' not in reply:
            raise NotAvailable(f"the gdbstub refused Qqemu.PhyMemMode:{int(on)} (not QEMU?): {reply.strip()!r}")
        self._physical = on

    @contextmanager
    def physical_mode(self):
        """Physical addressing for the block; afterwards virtual again unless we own the gdb."""
        self.set_physical(True)
        try:
            yield self
        finally:
            if not self.keeps_physical_mode:
                self.set_physical(False)

    @abstractmethod
    def execute(self, command: str) -> str:
        """Run a gdb CLI command, return what it printed."""

    def read_memory(self, addr: int, size: int, physical: bool = False) -> bytes:
        """`size` bytes at a virtual (default) or guest-physical address, as the stub reads them."""
        if physical and not self._physical:
            with self.physical_mode():
                return self._read_memory(addr, size)
        self.set_physical(physical)
        return self._read_memory(addr, size)

    @abstractmethod
    def _read_memory(self, addr: int, size: int) -> bytes:
        """Read target memory in the stub's current addressing mode."""

    def read_registers(self, names: tuple[str, ...] = (), cpu: int | None = None) -> dict[str, int]:
        """Registers (rip, cr3, efer, ...) of vCPU `cpu` (0-based; None: the selected thread).
        The user's selected thread is restored afterwards."""
        command = "info registers " + " ".join(names) if names else "info all-registers"
        if cpu is None:
            text = self.execute(command)
        else:
            current = re.search(r"Current thread is (\d+)", self.execute("thread"))
            self.execute(f"thread {cpu + 1}")
            try:
                text = self.execute(command)
            finally:
                if current:
                    self.execute(f"thread {current.group(1)}")
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
