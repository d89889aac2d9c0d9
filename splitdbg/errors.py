"""Errors splitdbg raises on purpose. Everything a user can cause derives from SplitdbgError,
so the presentation layers can show a clear message instead of a traceback."""


class SplitdbgError(Exception):
    """Base of every error splitdbg raises deliberately."""


class MemoryReadError(SplitdbgError):
    """A physical read outside the guest's RAM, or one the backend could not perform."""

    def __init__(self, addr: int, size: int, why: str):
        super().__init__(f"cannot read {size:#x} bytes at physical {addr:#x}: {why}")
        self.addr, self.size, self.why = addr, size, why


class TargetGone(SplitdbgError):
    """The gdbstub, QEMU or the guest went away."""


class TargetBusy(SplitdbgError):
    """Another debugger holds the target's gdbstub (QEMU's serves one client at a time)."""


class NotAvailable(SplitdbgError):
    """The backend cannot provide this (registers from a RAM file, for instance)."""


class PageTableError(SplitdbgError):
    """Page tables that cannot be walked: corrupt or cyclic."""


class CorruptTable(PageTableError):
    pass


class CyclicTable(PageTableError):
    pass


class WalkBudgetExceeded(PageTableError):
    """A page-table dump visited more entries than its budget: tables that share subtrees so much
    that they map more than any real address space (or a walk that was asked to stop early)."""
