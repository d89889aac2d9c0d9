"""Policy files (docs/policies.md): every key checked for its type and range, named in a one-line
error with exit code 2 before any target is touched; a rule that selects nothing is not a PASS."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from splitdbg.cli import main
from splitdbg.policy import Checker, PolicyError, load_policy
from splitdbg.target.snapshot import RangeRec

from .test_check_rules import container, snapshot

DEFAULT = Path(__file__).parents[2] / "policies" / "default.toml"
TEXT = 'name = "t"\nkind = "permissions"\nregion = "kernel-text"\nforbid = "w"\n'


@pytest.mark.parametrize("body, words", [
    ('[[rule]]\nkind = "handler-pages"\npages = ["code", "heap"]\n', ["pages = ['code', 'heap']", "heap unknown",
                                                                     "host-tables"]),
    ('[[rule]]\nkind = "handler-pages"\npages = []\n', ["pages = []", "non-empty list"]),
    ('[[rule]]\nkind = "module-text"\nmodules = "sktest"\n', ["modules = 'sktest'", "list of names"]),
    ('[[rule]]\nkind = "cpu-containers"\ncontainers = "all"\n', ["unknown key containers", "cpu-containers"]),
    ('[[rule]]\nname = "v"\nkind = "violations"\nmax = "lots"\n', ["rule 1 (v)", "max = 'lots'", "table"]),
    ('[[rule]]\nkind = "violations"\nmax = { text = -1 }\n', ["max.text = -1", "integer >= 0"]),
    ('[[rule]]\nkind = "violations"\nmax = { text = true }\n', ["max.text = True"]),
    ('[[rule]]\nkind = "violations"\nmax = { txet = 0 }\n', ["max.txet", "unknown region"]),
    ('[[rule]]\nkind = "violations"\nmax = {}\n', ["max = {}", "vacuously"]),
    ('[[rule]]\n' + TEXT + 'containers = [1, [2], {a = 1}]\n', ["rule 1 (t)", "containers = [1, [2], {'a': 1}]", "[2]"]),
    ('[[rule]]\n' + TEXT + 'containers = [-1]\n', ["containers = [-1]", "-1"]),
    ('[[rule]]\n' + TEXT + 'containers = []\n', ["containers = []", "vacuously"]),
    ('[[rule]]\n' + TEXT + 'containers = "some"\n', ["containers = 'some'"]),
    ('[[rule]]\nkind = "nonsense"\n', ["kind must be one of", "'nonsense'"]),
    ('[[rule]]\nname = "n"\n', ["kind must be one of", "no kind given"]),
    ('[[rule]]\n' + TEXT + 'forbd = "w"\n', ["unknown key forbd", "permissions rule"]),
    ('[[rule]]\nkind = "no-aliases"\ncontainers = "all"\n', ["unknown key containers", "no-aliases"]),
    ('[[rules]]\n' + TEXT, ["unknown top-level key rules"]),
    ('[[rule]]\nkind = "permissions"\nregion = "kernel-text"\n', ["forbid or require", "vacuously"]),
    ('[[rule]]\nkind = "permissions"\nregion = "kernel-text"\nforbid = "W"\n', ["forbid = 'W'", "r w x u"]),
    ('[[rule]]\nkind = "permissions"\nregion = "kernel-text"\nforbid = 1\n', ["forbid = 1"]),
    ('[[rule]]\nkind = "permissions"\nforbid = "w"\n', ["names its memory"]),
    ('[[rule]]\nkind = "permissions"\nregion = "kernel-txt"\nforbid = "w"\n', ["region = 'kernel-txt'"]),
    ('[[rule]]\nkind = "permissions"\nrange = "2000-1000"\nforbid = "w"\n', ["range '2000-1000'", "below END"]),
    ('[[rule]]\nkind = "permissions"\nrange = "zz-1000"\nforbid = "w"\n', ["range 'zz-1000'", "hexadecimal"]),
    ('[[rule]]\nkind = "permissions"\nrange = 4096\nforbid = "w"\n', ["range = 4096"]),
    ('[[rule]]\nkind = "permissions"\nregion = "kernel-text"\nsymbol = "x"\nforbid = "w"\n', ["region and symbol"]),
    ('[[rule]]\nname = 3\nkind = "address-spaces"\n', ["name = 3"]),
    ('rule = [1]\n', ["a rule must be a [[rule]] table"]),
    ('[[rule]\n', ["not valid TOML"]),
])
def test_a_bad_policy_is_a_one_line_error_naming_the_key(body, words, tmp_path, capsys):
    policy = tmp_path / "p.toml"
    policy.write_text(body)
    rc = main(["check", ":1", str(policy)])          # refused before the target is touched
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def test_the_default_policy_and_the_documented_examples_load():
    assert [r["kind"] for r in load_policy(str(DEFAULT))] == ["permissions", "permissions",
                                                             "protected-only-in-owner", "no-aliases", "module-text",
                                                             "handler-pages", "cpu-containers", "contained-tasks"]
    strict = load_policy(str(DEFAULT.with_name("strict.toml")))
    assert any(r.get("pages", [])[-1:] == ["host-tables"] for r in strict)
    doc = (Path(__file__).parents[2] / "docs" / "policies.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    assert len(load_policy_text(example)) == 5


def load_policy_text(text: str):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(text)
        f.flush()
        return load_policy(f.name)


def checker(containers):
    snap = snapshot(containers, [])
    snap.module = {"kernel_text_pa": 0x1000000, "kernel_text_end_pa": 0x1200000, "rodata_pa": 0, "rodata_end_pa": 0}
    return Checker(snap)


def test_a_rule_that_selects_no_container_is_vacuous_not_a_pass():
    """Over whatever non-root containers exist, with none: it holds vacuously and says so. Naming
    containers that are not there: it fails."""
    rules = load_policy_text("[[rule]]\n" + TEXT + "\n[[rule]]\nkind = 'permissions'\nregion = 'kernel-text'\n"
                             "containers = ['sshd']\nforbid = 'w'\n")
    res = checker([container(0, [])]).run(rules)
    assert [(r["ok"], r["vacuous"]) for r in res] == [(True, True), (False, True)]
    assert "no container is selected (containers = 'non-root')" in res[0]["problems"][0]
    assert "holds vacuously" in res[0]["problems"][0] and "not there" in res[1]["problems"][0]


def test_require_counts_what_is_not_mapped_at_all():
    c = container(1, [0xA000])
    c.ranges = [RangeRec(0x1000000, 0x1100000, 0x1000000, "r-x-", 0x1000)]
    rule = {"kind": "permissions", "region": "kernel-text", "require": "r"}
    assert checker([container(0, []), c]).permissions(rule) == [
        "container 1 (split-run): 0x1100000-0x1200000 is not mapped (missing r)"]
    c.ranges.append(RangeRec(0x1100000, 0x1200000, 0x1100000, "r---", 0x1000))
    assert checker([container(0, []), c]).permissions(rule) == []
    with pytest.raises(PolicyError):
        load_policy_text("[[rule]]\nkind = 'permissions'\nregion = 'kernel-text'\nrequire = 'q'\n")
