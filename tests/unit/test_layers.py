"""The layers of docs/architecture.md, checked: every import in splitdbg/ (module level and inside
functions) goes down, never up, and the lab is imported only by presentation.

    presentation   cli, gdb_plugin, tui, api, pytest_plugin, __main__
    introspection  target, policy (rules checked on a snapshot)
    model          arch, vmx_model
    memory         mem, dbg
    (any layer)    errors, fileio

Imports that break this today are listed in KNOWN with the reason they are not fixed yet: the
test fails on any other, and on a KNOWN one that is gone (so the list only shrinks)."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "splitdbg"
LAYER = {"errors": 0, "fileio": 0, "mem": 1, "dbg": 1, "arch": 2, "vmx_model": 2, "target": 3, "policy": 3,
         "cli": 4, "gdb_plugin": 4, "tui": 4, "api": 4, "pytest_plugin": 4, "__main__": 4, "__init__": 4}
LAB = {"lab", "lab_bochs"}
PRESENTATION = {"cli", "gdb_plugin", "tui", "api", "pytest_plugin", "__main__", "__init__"}
# Presentation shares the CLI's text rendering (one definition of each screen): allowed sideways.
SHARED = {"cli.render"}
# Front ends that start another: `splitdbg attach` runs the TUI, the pytest plugin gives the API.
STARTS = {("cli.tui", "tui"), ("pytest_plugin", "api")}

KNOWN = {
    # The snapshot finds the lab's module builds for symbols (issue 13: pass paths in).
    ("target.snapshot", "lab"): "module .ko paths from the lab build (issue 13)",
    ("target.session", "lab"): "the lab build's vmlinux as default (issue 13)",
}


def top(name: str) -> str:
    return name.split(".", 1)[0]


def imports(path: Path, module: str):
    """(imported module, line) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    pkg_parts = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("splitdbg."):
                    yield a.name.removeprefix("splitdbg."), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[:len(pkg_parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("splitdbg"):
                target = node.module.removeprefix("splitdbg").removeprefix(".")
            else:
                continue
            for a in node.names:         # `from ..cli import render`: the module cli.render
                sub = ".".join(filter(None, [target, a.name]))
                as_path = PKG.joinpath(*sub.split("."))
                yield (sub if as_path.with_suffix(".py").exists() or as_path.is_dir() else target), node.lineno


def violations():
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        module = ".".join(rel.parts)
        mine = top(module)
        for target, line in imports(path, module):
            if not target:
                continue
            theirs = top(target)
            if theirs == mine:
                continue
            if theirs in LAB:
                bad = mine not in PRESENTATION and mine not in LAB
            elif mine in LAB:
                bad = False              # the lab may use anything (it is the test bench)
            elif theirs not in LAYER or mine not in LAYER:
                bad = True               # a new top-level module: give it a layer here
            elif LAYER[theirs] > LAYER[mine]:
                bad = True               # upward
            elif LAYER[theirs] == LAYER[mine] == 4:
                bad = (target not in SHARED and mine not in ("__main__", "__init__")
                       and (module, theirs) not in STARTS)
            else:
                bad = False
            if bad:
                key = (module.removesuffix(".__init__"), ".".join(target.split(".")[:2]))
                out.setdefault(key, f"splitdbg/{rel}.py:{line} imports splitdbg.{target}")
    return out


def test_every_import_goes_down_the_layers():
    found = violations()
    new = {k: v for k, v in found.items() if k not in KNOWN}
    assert not new, "imports against docs/architecture.md's layers:\n" + "\n".join(new.values())


def test_the_known_exceptions_are_still_there():
    gone = [f"{a} -> {b} ({why})" for (a, b), why in KNOWN.items() if (a, b) not in violations()]
    assert not gone, "fixed, remove from KNOWN: " + "; ".join(gone)
