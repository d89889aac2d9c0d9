"""The splitdbg command line against the real guest running the module and its scenarios; each
output checked against the guest's own truth (/proc, the module's counters, QEMU)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splitdbg import lab

from .conftest import boot

POLICY = Path(__file__).resolve().parents[2] / "policies" / "default.toml"


def splitdbg(*args: str, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "splitdbg", *args], capture_output=True, text=True, timeout=300)
    if check_rc is not None:
        assert p.returncode == check_rc, f"splitdbg {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def guest():
    g = boot(paging=4, smp=2, append="splitdbg.load=splitkernel,sktest", base_port=15700)
    yield g
    g.down()


def background(guest, cmd: str) -> int:
    rc, out = guest.run(f"{cmd} >/dev/null 2>&1 & echo $!")
    time.sleep(0.5)
    return int(out.strip())


def stop(guest, *pids: int) -> None:
    """End these processes and everything else in their containers (their children too)."""
    for pid in pids:
        guest.run(f"c=$(awk '$1 == {pid} {{print $2}}' /proc/splitkernel); "
                  f"[ -n \"$c\" ] && kill $(awk -v c=$c '$2 == c {{print $1}}' /proc/splitkernel) 2>/dev/null; "
                  f"kill {pid} 2>/dev/null; true")
    time.sleep(0.3)


def test_status_and_ps_match_the_guest(guest):
    nr = background(guest, "split-run -- sleep 300")
    st = json.loads(splitdbg("status", f":{guest.port}", "--json").stdout)
    assert st["module"]["vendor_name"] == "SVM" and st["cpus"] == [0, 1]
    assert st["backend"].startswith("shared RAM file")
    # What each CPU runs as its last exit left it: a CR3 and the container the handler put it in,
    # the one listing that CR3 when one does (an idle CPU may still run a released container on an
    # address space freed since: listed nowhere).
    assert [c["cpu"] for c in st["cpu_state"]] == [0, 1]
    assert all(c["container"] == c["cr3_listed_in"] for c in st["cpu_state"] if c["cr3_listed_in"]), st["cpu_state"]
    ps = json.loads(splitdbg("ps", f":{guest.port}", "--json").stdout)
    proc = guest.run("for d in /proc/[0-9]*; do echo ${d#/proc/}; done")[1].split()
    ours = {p["pid"] for p in ps if p["pid"]}
    assert len(ours & {int(x) for x in proc}) >= len(proc) - 3    # the listing itself comes and goes
    (sleeper,) = [p for p in ps if p["pid"] == nr]
    assert sleeper["mode"] == "NR" and sleeper["comm"] == "sleep" and sleeper["container"] > 0
    # /proc/splitkernel says the same
    assert re.search(rf"^{nr} {sleeper['container']}$", guest.run("cat /proc/splitkernel")[1], re.M)
    assert all(p["mode"] == "R" for p in ps if p["pid"] == 1)
    stop(guest, nr)


def test_tasks_say_where_each_process_waits(guest):
    nr = background(guest, "split-run -- sleep 300")
    tasks = json.loads(splitdbg("tasks", f":{guest.port}", "--json").stdout)
    (sleeper,) = [t for t in tasks if t["pid"] == nr]
    assert (sleeper["state"], sleeper["wchan"]) == ("S", "hrtimer_nanosleep") and sleeper["container"] > 0
    assert guest.run(f"cat /proc/{nr}/wchan")[1].strip() == "hrtimer_nanosleep"
    text = splitdbg("tasks", f":{guest.port}", "--stacks", "--pid", str(nr)).stdout
    lines = text.splitlines()
    assert re.match(rf"\s*{nr}\s+{nr} sleep\s+S\s+\d+ NR\s+{sleeper['container']}\s+hrtimer_nanosleep$", lines[1]), text
    assert any("? do_nanosleep+0x" in line for line in lines) and len(lines) > 4
    stop(guest, nr)


def test_events_and_counters_agree_with_the_module(guest):
    guest.run("split-scenarios kwriter-text-isolate", timeout=120)
    # The denied writer dies; its parent keeps the container (and so its tables) alive.
    keeper = background(guest, "split-run -- sh -c 'sh -c \"echo write-text > /proc/sktest\"; sleep 300; true'")
    evs = json.loads(splitdbg("events", f":{guest.port}", "--kind", "violation", "--json").stdout)
    assert {e["action"] for e in evs} >= {"deny", "isolate"}
    ps = json.loads(splitdbg("ps", f":{guest.port}", "--json").stdout)
    cid = next(p["container"] for p in ps if p["pid"] == keeper)
    denied = [e for e in evs if e["action"] == "deny" and e["container"] == cid]
    # The denied write still faults in the container's current tables: the model must agree.
    assert denied and all(e["check"] == "agree" for e in denied), denied
    # The isolated write made the page writable since, and its container is gone: judged on the walk
    # the handler recorded at the exit, it agrees all the same (ABI v5; before, "not checkable").
    isolated = [e for e in evs if e["action"] == "isolate"]
    assert isolated and all(e["check"] == "agree" and e["check_basis"] == "at exit" for e in isolated), isolated
    containers = json.loads(splitdbg("containers", f":{guest.port}", "--json").stdout)
    (mine,) = [c for c in containers if c["id"] == cid]
    assert mine["counters"]["denied"] == len(denied) and mine["counters"]["violations"]["text"] == len(denied)
    stop(guest, keeper)
    text = splitdbg("events", f":{guest.port}", "--kind", "violation").stdout
    assert "agree" in text and "EXITINFO1" in text


def test_ept_of_root_and_of_a_container(guest):
    nr = background(guest, "split-run -p text=isolate -- sh -c 'echo write-text > /proc/sktest; sleep 300; true'")
    ps = json.loads(splitdbg("ps", f":{guest.port}", "--json").stdout)
    cid = next(p["container"] for p in ps if p["pid"] == nr)
    root = json.loads(splitdbg("ept", f":{guest.port}", "0", "--json").stdout)
    st = json.loads(splitdbg("status", f":{guest.port}", "--json").stdout)["module"]
    # The root container is an identity map of everything but the module's pool.
    assert all(r["start"] == r["hpa"] for r in root["ranges"])
    assert not any(r["start"] <= st["pool_pa"] < r["end"] for r in root["ranges"])
    c = json.loads(splitdbg("ept", f":{guest.port}", "--pid", str(nr), "--json").stdout)
    assert c["container"] == cid
    text = [r for r in c["ranges"] if r["start"] < st["kernel_text_end_pa"] and r["end"] > st["kernel_text_pa"]]
    assert text and all("w" not in r["perms"] or r["note"] == "isolated copy" for r in text)
    iso = [r for r in c["ranges"] if r["note"] == "isolated copy"]
    assert len(iso) == 1 and iso[0]["hpa"] != iso[0]["start"] and "w" in iso[0]["perms"]
    filtered = json.loads(splitdbg("ept", f":{guest.port}", str(cid), "--filter", "isolated", "--json").stdout)
    assert filtered["ranges"] == iso
    stop(guest, nr)


def test_policy_holds_then_fails_when_a_scenario_breaks_it(guest, tmp_path):
    nr = background(guest, "split-run -- sleep 300")
    ok = splitdbg("check", f":{guest.port}", str(POLICY))
    assert "8 of 8 rules hold" in ok.stdout
    # The handler's own page tables (a copy in the pool) are absent from the container too.
    strict = splitdbg("check", f":{guest.port}", str(POLICY.with_name("strict.toml")))
    assert "6 of 6 rules hold" in strict.stdout, strict.stdout
    # Under `log`, the kernel writer gets a writable text page in its container, and a kept
    # writable alias makes the no-aliases rule fail too.
    bad = background(guest, "split-run -p text=log -- sh -c 'echo write-text > /proc/sktest; echo map-text > /proc/sktest;"
                            " sleep 300; true'")
    fail = splitdbg("check", f":{guest.port}", str(POLICY), check_rc=1)
    assert "FAIL  kernel text is never writable" in fail.stdout
    assert "FAIL  no guest-virtual alias writes a kernel-text frame" in fail.stdout
    assert "PASS  kernel rodata is never writable" in fail.stdout
    res = json.loads(splitdbg("check", f":{guest.port}", str(POLICY), "--json", check_rc=1).stdout)
    assert not res["ok"] and sum(r["ok"] for r in res["rules"]) == 6
    stop(guest, bad, nr)
    # Under module=log, a write to sktest's text (a module loaded after splitkernel) is let
    # through in that container: its page is writable there, and module-text says which.
    bad = background(guest, "split-run -p module=log -- sh -c 'echo write-sym sktest_victim > /proc/sktest; sleep 300; true'")
    fail = splitdbg("check", f":{guest.port}", str(POLICY), check_rc=1)
    assert "FAIL  every loaded module's text and rodata is read-only" in fail.stdout, fail.stdout
    assert re.search(r"container \d+ \(\S+\): sktest text 0x[0-9a-f]+ at 0x[0-9a-f]+ is rw", fail.stdout), fail.stdout
    assert "PASS  the handler's descriptor, state and code" in fail.stdout
    stop(guest, bad)
    guest.run("echo unmap-text > /proc/sktest; split-run -p text=log -- sh -c 'echo write-text > /proc/sktest'")
    # A bad policy file is a clear error, not a traceback.
    (tmp_path / "bad.toml").write_text("[[rule]]\nkind = 'nonsense'\n")
    err = splitdbg("check", f":{guest.port}", str(tmp_path / "bad.toml"), check_rc=2)
    assert "kind must be one of" in err.stderr


def test_snapshots_and_diff(guest, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    splitdbg("snapshot", f":{guest.port}", "-o", str(a))
    nr = background(guest, "split-run -p rodata=isolate -- sh -c 'echo write-rodata > /proc/sktest; sleep 300; true'")
    splitdbg("snapshot", f":{guest.port}", "-o", str(b))
    d = json.loads(splitdbg("diff", str(a), str(b), "--json", check_rc=1).stdout)
    new = [c for c in d if c["state"] == "added"]
    assert new, d
    isolated = [r for c in new for r in c["added"] if r["note"] == "isolated copy"]
    assert len(isolated) == 1
    assert splitdbg("diff", str(a), str(a), check_rc=0).stdout.strip() == "no differences"
    stop(guest, nr)


def test_walk_through_the_model(guest):
    nr = background(guest, "split-run -- sleep 300")
    w = json.loads(splitdbg("walk", f":{guest.port}", str(nr), "ffffffff81000000", "--json").stdout)
    assert w["kind"] == "ok" and w["hpa"] == 0x1000000 and w["container"] > 0
    assert [s["walk"] for s in w["steps"]].count("guest") >= 3
    stop(guest, nr)


def test_bad_targets_are_clear_errors(tmp_path):
    p = splitdbg("status", ":1", check_rc=2)
    assert "splitdbg:" in p.stderr and "Traceback" not in p.stderr
    (tmp_path / "img").write_bytes(bytes(1 << 20))
    p = splitdbg("events", str(tmp_path / "img"), check_rc=2)
    assert "not loaded" in p.stderr


def test_gdb_plugin_shows_the_same_state(guest):
    from .test_gdb_plugin import gdb_batch

    nr = background(guest, "split-run -- sleep 300")
    out = gdb_batch(guest.port, "split ps --json", "split vmcb 0 --json", "split events --kind violation --json",
                    "split ept --pid %d --json" % nr, "split walk %d ffffffff81000000 --json" % nr,
                    "split tasks --pid %d --json" % nr)
    docs = []
    for line in out.splitlines():
        try:
            docs.append(json.loads(line))
        except ValueError:
            pass                       # gdb's own lines ("[Inferior 1 (process 1) detached]")
    ps, vm, evs, ept, walk, tasks = docs
    cli_ps = json.loads(splitdbg("ps", f":{guest.port}", "--json").stdout)
    assert {(p["pid"], p["mode"], p["container"]) for p in ps if p["pid"] == nr} == \
        {(p["pid"], p["mode"], p["container"]) for p in cli_ps if p["pid"] == nr}
    assert vm["control"]["decoded"]["np_enable"] and 3 in vm["control"]["decoded"]["cr_write_intercepts"]
    assert ept["container"] == next(p["container"] for p in cli_ps if p["pid"] == nr)
    assert walk["kind"] == "ok" and walk["hpa"] == 0x1000000
    assert isinstance(evs, list)
    assert [(t["pid"], t["state"], t["wchan"], t["container"] > 0) for t in tasks] == \
        [(nr, "S", "hrtimer_nanosleep", True)]
    stop(guest, nr)


def test_events_follow_sees_a_new_violation(guest):
    p = subprocess.Popen([sys.executable, "-m", "splitdbg", "events", f":{guest.port}", "--follow", "--for", "20",
                          "--kind", "violation", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "following the events" in p.stderr.readline()     # attached, and "from now on" is fixed
    t0 = time.monotonic()
    guest.run("split-run -p rodata=isolate -- sh -c 'echo write-rodata > /proc/sktest'")
    line = p.stdout.readline()
    delay = time.monotonic() - t0
    p.terminate()
    ev = json.loads(line)
    assert ev["kind_name"] == "violation" and ev["region_name"] == "rodata" and ev["action_name"] == "isolate"
    assert delay < 10


def test_pytest_plugin_runs_user_checks(guest):
    example = Path(__file__).resolve().parents[2] / "examples" / "regression"
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example),
                        f"--splitdbg-target=:{guest.port}"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "3 passed" in p.stdout


def test_gdb_loads_module_symbols_at_their_addresses(guest):
    from .test_gdb_plugin import gdb_batch

    sections = guest.run("cat /sys/module/splitkernel/sections/.text")[1].strip()
    # Loading the plugin after `target remote` loads the modules' symbols by itself.
    out = gdb_batch(guest.port, "info address sk_svm_handle_exit", "p/x &sk_desc_page", "split symbols")
    assert "loaded symbols of" in out and "splitkernel" in out
    text = int(sections, 16)
    addr = int(re.search(r"sk_svm_handle_exit\" is a function at address (0x[0-9a-f]+)", out).group(1), 16)
    assert text <= addr < text + 0x10000
    desc = int(re.search(r"^\$1 = (0x[0-9a-f]+)", out, re.M).group(1), 16)
    assert desc >= 0xffffffffa0000000          # the descriptor, in the module's data


def test_gdb_events_follow(guest):
    import threading

    from splitdbg.dbg.gdbmi import GdbMI

    from .test_gdb_plugin import LOAD

    dbg = GdbMI.connect(f":{guest.port}")          # the guest stops while gdb holds it
    try:
        dbg.execute(f"source {LOAD}")
        assert "split kernel" in dbg.execute("split status")   # opens the memory backend first
        dbg.cont()                                  # then gdb lets it run while we follow
        writer = threading.Timer(3, lambda: guest.run("split-run -p text=isolate -- sh -c 'echo write-text > /proc/sktest'"))
        writer.start()
        out = dbg.execute("split events --follow --for 10 --kind violation --json", timeout=60)
        writer.join()
    finally:
        dbg.close()
    evs = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    assert any(e["kind_name"] == "violation" and e["action_name"] == "isolate" for e in evs), out


def test_a_vmlinux_that_is_not_the_guests_kernel_is_refused(guest, tmp_path):
    """The right symbols or none: a vmlinux whose linux_banner differs from the one in guest memory
    (another build of the same kernel) is an error that says both versions."""
    import shutil

    from splitdbg.target.symbols import ElfSymbols

    ours = lab.artifacts()["vmlinux"]
    other = tmp_path / "vmlinux"
    shutil.copyfile(ours, other)
    sym = ElfSymbols(ours)
    addr = sym.address("linux_banner")
    from elftools.elf.elffile import ELFFile
    with open(ours, "rb") as f:
        sec = next(s for s in ELFFile(f).iter_sections() if s["sh_addr"] <= addr < s["sh_addr"] + s["sh_size"])
        off = sec["sh_offset"] + addr - sec["sh_addr"]
    with open(other, "r+b") as f:
        f.seek(off + len("Linux version "))
        f.write(b"9")                                   # "Linux version 9.1.192 ...": another kernel
    p = splitdbg("status", f":{guest.port}", "--vmlinux", str(other), check_rc=2)
    assert "does not match the guest" in p.stderr and "Linux version 9.1" in p.stderr \
        and "Linux version 6.1" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    splitdbg("status", f":{guest.port}", "--vmlinux", ours)     # the right one is used
