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

    out, streams = [], []

    def write(text, stream=0):
        out.append(text)
        streams.append(("stderr" if stream == 1 else "stdout", text))
    gdb.Command, gdb.Parameter, gdb.GdbError, gdb.error, gdb.MemoryError = Command, Parameter, GdbError, \
        RuntimeError, RuntimeError
    for name in ("COMMAND_DATA", "COMPLETE_COMMAND", "COMPLETE_FILENAME", "COMPLETE_NONE", "PARAM_ENUM"):
        setattr(gdb, name, 0)
    gdb.STDOUT, gdb.STDERR, gdb.STDLOG = 0, 1, 2
    gdb.write, gdb.flush = write, lambda: None
    gdb.execute = lambda *a, **kw: ""
    gdb.events = types.SimpleNamespace(exited=types.SimpleNamespace(connect=lambda f: None))
    monkeypatch.setitem(sys.modules, "gdb", gdb)
    for mod in [m for m in sys.modules if m.startswith("splitdbg.gdb_plugin") or m == "splitdbg.dbg.inprocess"]:
        monkeypatch.delitem(sys.modules, mod)
    mod = importlib.import_module("splitdbg.gdb_plugin.commands")
    mod.written, mod.streams = out, streams
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


# -- problems (corrupt guest data) are said as the CLI says them: one line each, first --------------
PROBLEMS = ["CPU 1's busy ring at 0x160000 is corrupt: entries 65537 (the descriptor says 64): its events are "
            "not shown", "container slot 3 at 0x101000 is corrupt (id 7 in slot 3): left out"]


@pytest.fixture
def sick(commands, monkeypatch):
    """A snapshot with problems behind every command; no gdb, no memory."""
    from types import SimpleNamespace

    s = snapshot([container(0, [])], [])
    s.problems = list(PROBLEMS)
    monkeypatch.setattr(commands._Command, "take", lambda self, **kw: s)
    monkeypatch.setattr(commands.session, "memory", lambda: SimpleNamespace(name="test", describe=lambda: "test"))
    monkeypatch.setattr(commands.session, "kernel", lambda: None)
    monkeypatch.setattr(commands, "_paging_state", lambda: (0x1000, SimpleNamespace(levels=4, nxe=True)))
    return s


def said(commands) -> tuple[list[str], list[str]]:
    """(the problem lines on stderr, what followed them), after checking that the problems came first."""
    kinds = [k for k, _ in commands.streams]
    first_out = kinds.index("stdout") if "stdout" in kinds else len(kinds)
    assert "stderr" not in kinds[first_out:], commands.streams            # before the output
    err = "".join(t for k, t in commands.streams if k == "stderr").splitlines()
    out = "".join(t for k, t in commands.streams if k == "stdout")
    commands.streams.clear()
    return err, out


@pytest.mark.parametrize("cls, arg", [("Ps", ""), ("Ps", "--json"), ("Ept", "0"), ("Ept", "--json"),
                                      ("Events", ""), ("Events", "--json"), ("Status", "--json"),
                                      ("Check", "POLICY"), ("Check", "POLICY --json"), ("Snap", "FILE")])
def test_every_command_on_a_snapshot_says_its_problems_first(commands, sick, cls, arg, tmp_path):
    from pathlib import Path

    policy = Path(__file__).parents[2] / "policies" / "default.toml"
    arg = arg.replace("POLICY", str(policy)).replace("FILE", str(tmp_path / "s.json"))
    getattr(commands, cls)().invoke(arg, False)
    err, out = said(commands)
    assert err == [f"splitdbg: problem: {p}" for p in PROBLEMS], (cls, err)      # as `splitdbg ps` says them
    assert out and "splitdbg: problem" not in out
    if "--json" in arg:
        import json

        json.loads(out)                                       # stdout stays JSON
    if cls == "Snap":
        assert out.endswith("(2 problems in it)\n")


def test_status_lists_the_problems_in_its_text_as_the_cli_does(commands, sick):
    sick.module, sick.notes = None, ["no live split-kernel descriptor in guest memory"]
    commands.Status().invoke("", False)
    err, out = said(commands)
    assert err == [] and f"problem        : {PROBLEMS[0]}" in out


def test_many_problems_are_cut_as_the_cli_cuts_them(commands, sick, capsys):
    from splitdbg.cli.inspect import say_problems

    sick.problems = [f"problem {i}" for i in range(25)]
    commands.Ps().invoke("", False)
    err, _ = said(commands)
    say_problems(sick.problems)
    assert err == capsys.readouterr().err.splitlines() and err[-1] == "splitdbg: ... and 5 more problems"
    assert len(err) == 21


def test_split_tasks_says_an_unusable_module_and_the_task_problems(commands, monkeypatch):
    from types import SimpleNamespace

    import splitdbg.target.splitkernel as skm
    import splitdbg.target.tasks as tasks

    def unusable(mem):
        raise skm.ModuleUnusable("split-kernel descriptor at 0x10000 is corrupt: slat_levels 64 (not 4 or 5)")

    def states(kernel, stacks=False, pids=None, sk=None, problems=None):
        problems.append("the task list loops after 3 tasks")
        return []
    monkeypatch.setattr(commands.session, "kernel", lambda: SimpleNamespace())
    monkeypatch.setattr(commands.session, "memory", lambda: None)
    monkeypatch.setattr(skm, "SplitKernel", unusable)
    monkeypatch.setattr(tasks, "task_states", states)
    commands.Tasks().invoke("", False)
    err, out = said(commands)
    assert err == ["splitdbg: problem: split-kernel descriptor at 0x10000 is corrupt: slat_levels 64 (not 4 or 5): "
                   "containers not shown", "splitdbg: problem: the task list loops after 3 tasks"]
    assert out.startswith("   PID")


def test_split_events_follow_says_a_loss_as_the_cli_does(commands, monkeypatch):
    from types import SimpleNamespace

    import splitdbg.target.splitkernel as skm

    def follow(sk, seconds, pid, kind, on_ready=None, on_loss=None):
        on_loss(0, 0, 3)
        on_loss(1, 1, 1)
        yield from ()
    monkeypatch.setattr(commands.session, "memory", lambda: None)
    monkeypatch.setattr(skm, "SplitKernel", lambda mem: SimpleNamespace(slat_name="NPT"))
    monkeypatch.setattr(skm, "follow", follow)
    commands.Events().invoke("--follow", False)
    assert [t for k, t in commands.streams if k == "stderr"] == [
        "splitdbg: lost 3 events on CPU 0 (busy ring): overwritten before they were read\n",
        "splitdbg: lost 1 event on CPU 1 (security ring): overwritten before they were read\n"]
