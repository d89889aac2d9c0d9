"""Load splitdbg into gdb:  (gdb) source /path/to/splitdbg/gdb_plugin/load.py

gdb embeds the system's Python, not the project's virtual environment: put the checkout and the
venv's site-packages on sys.path first, then import the plugin, which registers the `split` commands.
"""
import glob
import os
import sys

_repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_paths = [_repo] + sorted(glob.glob(os.path.join(_repo, ".venv", "lib", "python3*", "site-packages")))
for _p in reversed(_paths):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import splitdbg.gdb_plugin  # noqa: E402  (registers the commands)

# Symbols of the guest's modules at their real addresses, when gdb has the kernel and a target:
# quietly, since a plugin loaded before `target remote` has nothing to read yet.
try:
    import gdb as _gdb

    if _gdb.current_progspace().filename and _gdb.selected_inferior().pid:
        _gdb.execute("split symbols", to_string=True)
except Exception:  # noqa: BLE001  (no target, no module list, no .ko files: `split symbols` says why)
    pass
