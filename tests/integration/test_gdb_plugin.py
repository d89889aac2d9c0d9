"""The gdb plugin in a real gdb attached to the guest's gdbstub."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from splitdbg import lab
from splitdbg.arch import x86_paging as xp
from splitdbg.mem import SharedRamFile

LOAD = Path(__file__).resolve().parents[2] / "splitdbg" / "gdb_plugin" / "load.py"


def gdb_batch(port: int, *commands: str) -> str:
    argv = ["gdb", "-q", "-batch", "-nx", "-ex", f"file {lab.artifacts()['vmlinux']}", "-ex", f"target remote :{port}",
            "-ex", f"source {LOAD}"]
    for c in commands:
        argv += ["-ex", c]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return proc.stdout + proc.stderr


def test_status_and_pagetable(guest4):
    out = gdb_batch(guest4.port, "split status --json", "split pagetable --json", "p/x *(unsigned long *)0xffffffff81000000",
                    "split pagetable --nonsense")
    lines = [l for l in out.splitlines() if l.startswith("{")]
    status, table = json.loads(lines[0]), json.loads(lines[1])
    assert status["backend"] == "shared-ram-file" and status["paging_levels"] == 4
    assert table["cr3"] == status["cr3"] and not table["problems"]
    # The same address space read directly (gdb is detached; the tables are the kernel's and the
    # process's, stable enough for the kernel half we compare).
    with SharedRamFile(guest4.ram_file) as mem:
        ours = [r for r in xp.ranges(mem, status["cr3"], xp.PagingMode(4)) if r.start >= 0xFFFFFFFF80000000]
    theirs = [r for r in table["ranges"] if r["start"] >= 0xFFFFFFFF80000000]
    assert [(r.start, r.end, r.phys, r.perms) for r in ours] == [(r["start"], r["end"], r["phys"], r["perms"]) for r in theirs]
    # gdb still reads virtual addresses after the plugin read physical memory.
    assert "= 0x4800803f51258d48" in out
    assert "unrecognized arguments: --nonsense" in out and "usage: split pagetable" in out


def test_gdbstub_backend_leaves_gdb_virtual(guest4):
    out = gdb_batch(guest4.port, "set split-backend gdbstub", "split status --json",
                    "split pagetable --range ffffffff81000000-ffffffff81200000",
                    "p/x *(unsigned long *)0xffffffff81000000")
    status = json.loads([l for l in out.splitlines() if l.startswith("{")][0])
    assert status["backend"] == "gdbstub"
    assert "ffffffff81000000-" in out and "= 0x4800803f51258d48" in out


def test_split_check_says_what_the_cli_says():
    """One policy engine: gdb's `split check` and `splitdbg check` give every rule of the default
    policy the same verdict on the same guest (a container alive), and none fails for want of
    something the gdb session lacks (it once had no module state: an AttributeError)."""
    import sys

    from .conftest import boot

    policy = Path(__file__).resolve().parents[2] / "policies" / "default.toml"
    g = boot(smp=2, append="splitdbg.load=splitkernel,sktest", base_port=15150)
    try:
        g.run("split-run -- sleep 300 > /dev/null 2>&1 &")
        out = gdb_batch(g.port, f"split check {policy} --json")
        line = next(x for x in out.splitlines() if x.startswith("[{"))
        in_gdb = [(r["name"], r["ok"], r["vacuous"]) for r in json.loads(line)]
        cli = subprocess.run([sys.executable, "-m", "splitdbg", "check", f":{g.port}", str(policy), "--json"],
                             capture_output=True, text=True, timeout=120)
        in_cli = [(r["name"], r["ok"], r["vacuous"]) for r in json.loads(cli.stdout)["rules"]]
        assert in_gdb == in_cli, (out, cli.stdout)
        assert all(ok and not vac for _, ok, vac in in_gdb), in_gdb
        assert "Traceback" not in out and "cannot be checked" not in out, out
    finally:
        g.down()
