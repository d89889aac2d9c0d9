"""Symbols and struct layouts read with pyelftools, checked against gdb reading the same vmlinux."""
from __future__ import annotations

import re
import subprocess

import pytest

from splitdbg import lab
from splitdbg.target.symbols import ElfSymbols, SymbolError
from splitdbg.target.types import DwarfTypes, TypeError_

MEMBERS = [("task_struct", "tasks"), ("task_struct", "pid"), ("task_struct", "comm"), ("task_struct", "mm"),
           ("task_struct", "active_mm"), ("mm_struct", "pgd"), ("module", "list"), ("module", "name"),
           ("module", "core_layout.base"), ("module", "core_layout.size"), ("list_head", "next")]


@pytest.fixture(scope="module")
def vmlinux():
    return lab.artifacts()["vmlinux"]


def gdb_eval(vmlinux: str, exprs: list[str]) -> list[int]:
    argv = ["gdb", "-q", "-batch", "-nx", "-ex", f"file {vmlinux}"]
    for e in exprs:
        argv += ["-ex", f"p/x {e}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120).stdout
    return [int(v, 16) for v in re.findall(r"^\$\d+ = (0x[0-9a-f]+)", out, re.M)]


def test_layouts_match_gdb(vmlinux, tmp_path):
    syms = ElfSymbols(vmlinux)
    types = DwarfTypes(vmlinux, syms.build_id, cache_dir=tmp_path)
    ours = [types.offsetof(s, m) for s, m in MEMBERS] + [types.sizeof("task_struct"), types.sizeof("module")]
    theirs = gdb_eval(vmlinux, [f"(unsigned long)&((struct {s} *)0)->{m}" for s, m in MEMBERS]
                      + ["sizeof(struct task_struct)", "sizeof(struct module)"])
    assert ours == theirs
    # The cache answers the same without DWARF access.
    cached = DwarfTypes(vmlinux, syms.build_id, cache_dir=tmp_path)
    assert cached._layouts.keys() >= {"task_struct", "module"}
    assert [cached.offsetof(s, m) for s, m in MEMBERS] == ours[: len(MEMBERS)]


def test_symbols_match_gdb(vmlinux):
    syms = ElfSymbols(vmlinux)
    names = ["init_task", "init_top_pgt", "modules", "startup_64", "_stext", "__start_rodata", "_etext", "jiffies"]
    assert [syms.address(n) for n in names] == gdb_eval(vmlinux, [f"(unsigned long)&{n}" for n in names])
    assert syms.symbolize(syms.address("startup_64") + 0x10) == "startup_64+0x10"


def test_missing_things_are_named(vmlinux, tmp_path):
    syms = ElfSymbols(vmlinux)
    with pytest.raises(SymbolError, match="no_such_symbol"):
        syms.address("no_such_symbol")
    with pytest.raises(SymbolError, match="not found"):
        ElfSymbols(tmp_path / "nothing")
    types = DwarfTypes(vmlinux, None, cache_dir=None)
    with pytest.raises(TypeError_, match="no member 'nope'"):
        types.offsetof("list_head", "nope")
