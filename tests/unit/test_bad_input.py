"""Bad input is an error, not a traceback and not a silent pass: ept --range/--filter, diff of
what is not a snapshot, --vmlinux that is not a kernel with symbols, and main()'s last resorts
(a closed pipe, an internal error)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from splitdbg.cli import inspect as inspect_cmd
from splitdbg.cli import main, render
from splitdbg.errors import SplitdbgError
from splitdbg.target.snapshot import RangeRec
from splitdbg.target.symbols import SymbolError, check_vmlinux

from .elfbuild import elf
from .test_check_rules import container, snapshot

REPO = Path(__file__).parents[2]


def error_line(capsys, rc, *words):
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("splitdbg: ") and "Traceback" not in err, (rc, err)
    for w in words:
        assert w in err, err
    return err


@pytest.fixture
def no_target(monkeypatch):
    """Fail the test if a command reaches for its target: the bad argument must be caught first."""
    monkeypatch.setattr(inspect_cmd, "_snapshot", lambda *a, **kw: pytest.fail("the target was read"))


# -- ept --range, --filter -----------------------------------------------------------------------------
@pytest.mark.parametrize("arg, words", [
    ("2000-1000", ["--range '2000-1000'", "START must be below END"]),
    ("1000-1000", ["START must be below END"]),
    ("1000", ["--range '1000'", "START-END"]),
    ("zz-top", ["--range 'zz-top'", "hexadecimal"]),
    ("", ["--range ''", "START-END"]),
])
def test_ept_range_errors(arg, words, capsys, no_target):
    error_line(capsys, main(["ept", ":1", "--range", arg]), *words)


def test_ept_filter_bogus_lists_the_valid_words(capsys, no_target):
    err = error_line(capsys, main(["ept", ":1", "--filter", "w,bogus"]), "--filter 'bogus'")
    assert all(w in err for w in render.FILTER_WORDS) and "START-END" in err
    error_line(capsys, main(["ept", ":1", "--filter", "3000-2000"]), "START must be below END")


def test_ept_good_range_and_filter_still_list(capsys, monkeypatch):
    snap = snapshot([container(0, [])], [])
    snap.containers[0].ranges = [RangeRec(0, 0x1000, 0, "rwx-", 0x1000),
                                 RangeRec(0x1000, 0x2000, 0x1000, "r---", 0x1000)]
    monkeypatch.setattr(inspect_cmd, "_snapshot", lambda *a, **kw: snap)
    assert main(["ept", ":1", "--range", "0x1000-0x2000", "--filter=-w,-u", "--json"]) == 0
    assert [r["start"] for r in json.loads(capsys.readouterr().out)["ranges"]] == [0x1000]


def test_filter_words_and_match():
    assert render.parse_filter("r, -w differs 0x1000-0x2000") == {"r", "-w", "differs", "0x1000-0x2000"}
    with pytest.raises(SplitdbgError, match="'zzz': not a filter word"):
        render.parse_filter("zzz")
    r = RangeRec(0, 0x1000, 0, "r--u", 0x1000)
    assert render._match(r, {"-u"}) is False and render._match(r, {"u", "-w"}) is True


# -- diff -------------------------------------------------------------------------------------------
def good_snapshot_json(**change) -> str:
    s = snapshot([container(0, [])], [])
    s.containers[0].ranges = [RangeRec(0, 0x1000, 0, "rwx-", 0x1000)]
    return json.dumps({**json.loads(s.to_json()), **change})


@pytest.mark.parametrize("text, words", [
    ("[1, 2]", ["a JSON list, not a splitdbg snapshot"]),
    ('{"format": "splitdbg-snapshot/1"}', ["missing", "containers", "not a complete snapshot"]),
    ('{"format": "splitdbg-image", "version": 1}', ["memory image's sidecar"]),
    ("{oops", ["not valid JSON"]),
    ("[" * 100000 + "]" * 100000, ["nested too deeply"]),
    (good_snapshot_json(containers={"0": 1}), ["containers must be a list"]),
    (good_snapshot_json(containers=[{"id": 0}]), ["containers[0] is missing", "owner_pid"]),
    (good_snapshot_json(containers=[{**json.loads(good_snapshot_json())["containers"][0], "ranges": [{"start": "0"}]}]),
     ["containers[0].ranges[0] is missing"]),
    (good_snapshot_json(events=[{"seq": 1}]), ["malformed snapshot"]),
])
def test_diff_of_what_is_not_a_snapshot_is_one_line(text, words, tmp_path, capsys):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(good_snapshot_json())
    bad.write_text(text)
    error_line(capsys, main(["diff", str(good), str(bad)]), "bad.json", *words)


def test_diff_of_a_binary_file_and_of_good_snapshots(tmp_path, capsys):
    good, img = tmp_path / "good.json", tmp_path / "g.raw"
    good.write_text(good_snapshot_json())
    img.write_bytes(b"\xff\xfe" + os.urandom(4096))
    error_line(capsys, main(["diff", str(img), str(good)]), "binary")
    assert main(["diff", str(good), str(good)]) == 0 and capsys.readouterr().out.strip() == "no differences"


# -- --vmlinux --------------------------------------------------------------------------------------
def vmlinuxes(tmp_path) -> dict[str, tuple[Path, str]]:
    # A user program that is always there: the interpreter running this test (an ELF executable).
    files = {"ls": (Path(os.path.realpath(sys.executable)), "a user program"),
             "text": (tmp_path / "notes.txt", "not an ELF file"),
             "truncated": (tmp_path / "vmlinux.part", "truncated"),
             "ko": (tmp_path / "sktest.ko", "a module .ko"),
             "stripped": (tmp_path / "vmlinux.stripped", "no symbol table"),
             "user-static": (tmp_path / "static", "not a Linux kernel"),
             "missing": (tmp_path / "nope", "no such file"),
             "dir": (tmp_path, "not a file")}
    files["text"][0].write_text("not a kernel\n")
    files["truncated"][0].write_bytes(elf()[:200])
    files["ko"][0].write_bytes(elf(e_type=1))
    files["stripped"][0].write_bytes(elf(symbols=False))
    files["user-static"][0].write_bytes(elf(text_va=0x401000))
    return files


@pytest.mark.parametrize("which", ["ls", "text", "truncated", "ko", "stripped", "user-static", "missing", "dir"])
def test_a_vmlinux_that_is_not_a_kernel_with_symbols_is_an_error(which, tmp_path, capsys, no_target):
    path, words = vmlinuxes(tmp_path)[which]
    for cmd in (["status", ":1"], ["check", ":1", str(REPO / "policies" / "default.toml")], ["dump", ":1", "x.raw"]):
        error_line(capsys, main(cmd + ["--vmlinux", str(path)]), f"--vmlinux {path}", words)


def test_a_kernel_elf_passes_and_the_kernel_view_says_why_not(tmp_path):
    k = tmp_path / "vmlinux"
    k.write_bytes(elf())
    check_vmlinux(k)                                       # a kernel-like ELF with symbols: fine
    from splitdbg.target.kernel import Kernel

    with pytest.raises(SymbolError, match="vmlinux .*sktest.ko: a relocatable object"):
        Kernel(None, str(vmlinuxes(tmp_path)["ko"][0]))


# -- main(): closed pipes, internal errors -----------------------------------------------------------
def test_a_closed_pipe_is_a_quiet_exit(tmp_path):
    """`splitdbg diff a b | head -1`: the reader goes away after one line."""
    a, b = snapshot([container(0, [])], []), snapshot([container(0, [])], [])
    b.containers[0].ranges = [RangeRec(i << 12, (i + 1) << 12, i << 12, "rw--", 0x1000) for i in range(100000)]
    (tmp_path / "a.json").write_text(a.to_json())
    (tmp_path / "b.json").write_text(b.to_json())
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-m", "splitdbg", "diff", str(tmp_path / "a.json"), str(tmp_path / "b.json")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert p.stdout.readline().startswith(b"container 0")
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141 and err == "", err


def test_an_internal_error_is_one_line_unless_debugging(monkeypatch, capsys):
    def bug(args):
        return {}["no such key"]
    monkeypatch.setattr(inspect_cmd, "cmd_status", bug)
    monkeypatch.delenv("SPLITDBG_DEBUG", raising=False)
    assert main(["status", ":1"]) == 70
    err = capsys.readouterr().err
    assert err == "splitdbg: internal error: KeyError: 'no such key' (SPLITDBG_DEBUG=1 shows the traceback)\n"
    monkeypatch.setenv("SPLITDBG_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["status", ":1"])
