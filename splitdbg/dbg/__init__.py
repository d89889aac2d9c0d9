"""The debugger abstraction (pwndbg style): one small interface, two ways to reach gdb.

- GdbInProcess: inside gdb (the plugin), through gdb's Python API.
- GdbMI: outside gdb (CLI, TUI, tests), a gdb subprocess driven through pygdbmi.

Both give `execute(cmd) -> str`, `read_memory(addr, size) -> bytes` (as gdb reads: virtual unless
QEMU's physical mode is on), `read_registers() -> dict`, `interrupt()`, `cont()`, `close()`.
"""
from .base import Debugger  # noqa: F401
