"""The plugin's connection to the target: one memory backend for the gdb session, opened lazily
and dropped when the inferior goes away."""
from __future__ import annotations

import gdb

from ..dbg.inprocess import GdbInProcess
from ..mem import open_memory

_memory = None
_kernel = None


class Backend(gdb.Parameter):
    """Which memory backend the split commands read through: auto (the shared RAM file when QEMU
has one, else the gdbstub), shared-ram-file, or gdbstub."""

    set_doc = "Set the memory backend of the split commands."
    show_doc = "Show the memory backend of the split commands."

    def __init__(self):
        super().__init__("split-backend", gdb.COMMAND_DATA, gdb.PARAM_ENUM, ["auto", "shared-ram-file", "gdbstub"])
        self.value = "auto"

    def get_set_string(self):
        _forget()
        return f"split commands read memory through: {self.value}"


def memory():
    global _memory
    if _memory is None:
        _memory = open_memory(GdbInProcess(), prefer=_backend.value)
    return _memory


def kernel():
    """The guest kernel (symbols from the file gdb has loaded), or None without one."""
    global _kernel
    if _kernel is None:
        path = gdb.current_progspace().filename
        if not path:
            return None
        from ..errors import SplitdbgError
        from ..target.kernel import Kernel

        try:
            _kernel = Kernel(memory(), path)
        except SplitdbgError:
            return None
    _kernel.flush()
    return _kernel


def _forget(*_):
    global _memory, _kernel
    if _memory is not None:
        _memory.close()
    _memory = None
    _kernel = None
_kernel = None


gdb.events.exited.connect(_forget)
if hasattr(gdb.events, "connection_removed"):
    gdb.events.connection_removed.connect(_forget)

_backend = Backend()
