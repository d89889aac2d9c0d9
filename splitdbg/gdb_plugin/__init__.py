"""The gdb plugin: `split ...` commands. Importable only inside gdb (it needs the `gdb` module).

One command a module (pwndbg style); each module registers its gdb.Command subclass on import.
"""
import gdb  # noqa: F401  (fails clearly outside gdb)

from . import commands  # noqa: F401
