"""The gdb plugin's `split snapshot FILE` without gdb: a stand-in `gdb` module is enough to import
the commands; the snapshot is a hand-made one. Same rules as the CLI (splitdbg/fileio)."""
from __future__ import annotations

import importlib
import sys
import types

import pytest

from .test_check_rules import container, snapshot


@pytest.fixture
def commands(monkeypatch):
    gdb = types.ModuleType("gdb")

    class Command:
        def __init__(self, *a, **kw):
            pass

    class Parameter(Command):
        pass

    class GdbError(Exception):
        pass

    out = []
    gdb.Command, gdb.Parameter, gdb.GdbError, gdb.error, gdb.MemoryError = Command, Parameter, GdbError, \
        RuntimeError, RuntimeError
    for name in ("COMMAND_DATA", "COMPLETE_COMMAND", "COMPLETE_FILENAME", "COMPLETE_NONE", "PARAM_ENUM"):
        setattr(gdb, name, 0)
    gdb.write, gdb.flush = out.append, lambda: None
    gdb.execute = lambda *a, **kw: ""
    gdb.events = types.SimpleNamespace(exited=types.SimpleNamespace(connect=lambda f: None))
    monkeypatch.setitem(sys.modules, "gdb", gdb)
    for mod in [m for m in sys.modules if m.startswith("splitdbg.gdb_plugin") or m == "splitdbg.dbg.inprocess"]:
        monkeypatch.delitem(sys.modules, mod)
    mod = importlib.import_module("splitdbg.gdb_plugin.commands")
    mod.written = out
    yield mod
    for m in [m for m in sys.modules if m.startswith("splitdbg.gdb_plugin") or m == "splitdbg.dbg.inprocess"]:
        del sys.modules[m]


def test_split_snapshot_refuses_a_foreign_file_and_replaces_a_snapshot(commands, tmp_path, monkeypatch):
    snap = snapshot([container(0, [])], [])
    monkeypatch.setattr(commands.Snap, "snapshot", lambda self, **kw: snap)
    cmd = commands.Snap()
    mine = tmp_path / "notes.txt"
    mine.write_text("mine\n")
    with pytest.raises(commands.gdb.GdbError, match="a file splitdbg did not write"):
        cmd.invoke(str(mine), False)
    assert mine.read_text() == "mine\n"
    out = tmp_path / "s.json"
    cmd.invoke(str(out), False)
    cmd.invoke(str(out), False)                  # an older snapshot: replaced
    assert out.read_text() == snap.to_json()
    cmd.invoke(f"{mine} --force", False)
    assert mine.read_text() == snap.to_json()
