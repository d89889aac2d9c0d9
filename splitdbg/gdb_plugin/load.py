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
