"""Memory images of the real guest (`splitdbg dump`) read offline: every read-only command must
say on the image what it says on the guest the image was taken from; the guest runs on."""
from __future__ import annotations

import asyncio
import hashlib
import json
import time

import pytest

from splitdbg import lab
from splitdbg.mem.image import sidecar_path

from .conftest import boot, until_first_snapshot
from .test_cli import POLICY, background, splitdbg

# What differs between two views of the same memory: where it was read and when.
WHERE = ("target", "backend", "taken", "notes")


@pytest.fixture(scope="module")
def guest():
    g = boot(paging=4, smp=2, append="splitdbg.load=splitkernel,sktest", base_port=15900)
    yield g
    g.down()


@pytest.fixture(scope="module")
def image(guest, tmp_path_factory):
    """Containers and violations (deny, isolate), two processes kept in non-root mode; then, with the
    guest stopped (QMP), the commands' output on its RAM file, and the dump."""
    guest.run("split-scenarios kwriter-text-isolate", timeout=120)
    keeper = background(guest, "split-run -- sh -c 'sh -c \"echo write-text > /proc/sktest\"; sleep 600; true'")
    iso = background(guest, "split-run -p text=isolate -- sh -c 'echo write-text > /proc/sktest; sleep 600; true'")
    out = tmp_path_factory.mktemp("image") / "guest.raw"
    guest.pause()
    try:
        frozen = views(guest.ram_file, iso, out.parent / "frozen.json")
        frozen["sha256"] = sha256(guest.ram_file)
        t0 = time.monotonic()
        r = json.loads(splitdbg("dump", f":{guest.port}", str(out), "--json").stdout)
        r["wall"] = time.monotonic() - t0
        r["status_after"] = guest.status()
    finally:
        if guest.status() != "running":
            guest.resume()
    return {"path": out, "frozen": frozen, "dump": r, "keeper": keeper, "iso": iso}


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def views(target: str, pid: int, snapfile) -> dict:
    """ps, containers, ept --pid, events, tasks --stacks and snapshot of a target, as JSON."""
    v = {cmd: json.loads(splitdbg(cmd, target, "--json").stdout) for cmd in ("ps", "containers", "events")}
    v["ept"] = json.loads(splitdbg("ept", target, "--pid", str(pid), "--json").stdout)
    v["tasks"] = json.loads(splitdbg("tasks", target, "--stacks", "--json").stdout)
    splitdbg("snapshot", target, "-o", str(snapfile))
    v["snapshot"] = {k: val for k, val in json.loads(snapfile.read_text()).items() if k not in WHERE}
    return v


def test_dump_writes_image_and_sidecar_and_leaves_the_guest_as_it_was(guest, image):
    # The guest was paused (QMP) for the dump: it stays paused (issue 12; a dump used to resume it).
    # A running guest runs on: test_dump_of_a_running_guest_stops_it_only_for_the_copy.
    assert image["dump"]["status_after"] == "paused" and image["dump"]["state_before"] == "paused"
    assert guest.run("echo still-here")[1].strip() == "still-here"
    side = json.loads(sidecar_path(image["path"]).read_text())
    assert side["format"] == "splitdbg-image" and side["version"] == 1 and side["source"] == "qemu-7.2"
    assert side["ranges"] == [{"gpa": 0, "offset": 0, "size": guest.ram_size}]
    assert image["path"].stat().st_size == guest.ram_size
    assert [c["cpu"] for c in side["cpus"]] == [0, 1] and all(c["mode"] in ("guest", "svm-host") for c in side["cpus"])
    assert all(set(c["regs"]) == {"rip", "rsp", "cr0", "cr2", "cr3", "cr4", "efer"} for c in side["cpus"])
    assert all(c["regs"]["cr0"] & 0x80000001 == 0x80000001 for c in side["cpus"])   # paging, protected mode
    assert side["vmlinux"] == lab.artifacts()["vmlinux"]
    assert "splitdbg.load=splitkernel,sktest" in side["kernel_cmdline"]
    assert "SPLITDBG: ready" in open(side["serial_log"]).read()
    d = image["dump"]
    assert d["bytes"] == guest.ram_size and d["mb_per_s"] > 50 and 0 < d["copied"] <= d["bytes"]
    assert image["path"].stat().st_blocks * 512 < guest.ram_size          # untouched RAM stays a hole
    print(f"\ndump of {d['bytes'] >> 20} MiB ({d['copied'] >> 20} MiB in use): {d['wall']:.2f} s in all, copy {d['copy_seconds']:.2f} s "
          f"({d['mb_per_s']:.0f} MB/s), guest stopped {d['stopped_seconds']:.2f} s")


def test_image_says_what_the_stopped_guest_said(image):
    assert sha256(image["path"]) == image["frozen"]["sha256"]        # byte for byte, holes and all
    got = views(str(image["path"]), image["iso"], image["path"].parent / "image.json")
    for what in ("ps", "containers", "events", "ept", "snapshot", "tasks"):
        assert got[what] == image["frozen"][what], what
    # where the processes kept in non-root mode sleep, and their stacks, read off the image
    keeper = {t["pid"]: t for t in got["tasks"]}[image["keeper"]]
    assert keeper["state"] == "S" and keeper["wchan"] == "do_wait" and keeper["frames"]
    # and the guest had what the test asked for: violations denied and isolated, an isolated copy
    assert {e["action"] for e in got["events"] if e["kind"] == "violation"} >= {"deny", "isolate"}
    assert [r for r in got["ept"]["ranges"] if r["note"] == "isolated copy"]
    assert {p["pid"]: p["mode"] for p in got["ps"]}[image["keeper"]] == "NR"


def test_image_agrees_with_the_live_target(guest, image):
    """Against the running guest: what does not change while it idles must be the same."""
    img, live = str(image["path"]), f":{guest.port}"

    def nr(ps):
        return {(p["pid"], p["comm"], p["container"], p["mode"]) for p in ps if p["mode"] == "NR"}

    ps = [json.loads(splitdbg("ps", t, "--json").stdout) for t in (img, live)]
    assert nr(ps[0]) == nr(ps[1]) and len(nr(ps[0])) >= 2

    def shape(cs):
        return [{k: c[k] for k in ("id", "owner_pid", "owner_comm", "released", "policy", "slat_root", "pgds",
                                   "protected", "isolated")} for c in cs]

    cs = [json.loads(splitdbg("containers", t, "--json").stdout) for t in (img, live)]
    assert shape(cs[0]) == shape(cs[1])
    eps = [json.loads(splitdbg("ept", t, "--pid", str(image["iso"]), "--json").stdout) for t in (img, live)]
    assert eps[0] == eps[1]
    evs = [json.loads(splitdbg("events", t, "--kind", "violation", "--json").stdout) for t in (img, live)]
    assert evs[0] == evs[1] and evs[0]
    s = [json.loads(splitdbg("status", t, "--json").stdout) for t in (img, live)]
    assert s[0]["cpus"] == s[1]["cpus"] and s[0]["module"]["descriptor_pa"] == s[1]["module"]["descriptor_pa"]
    assert s[0]["backend"].startswith("memory image") and s[1]["backend"].startswith("shared RAM file")


def test_every_read_only_command_on_the_image(image, tmp_path):
    img = str(image["path"])
    assert "memory image" in splitdbg("status", img).stdout
    w = json.loads(splitdbg("walk", img, str(image["keeper"]), "ffffffff81000000", "--json").stdout)
    assert w["kind"] == "ok" and w["hpa"] == 0x1000000 and w["container"] > 0
    assert "8 of 8 rules hold" in splitdbg("check", img, str(POLICY)).stdout
    splitdbg("snapshot", img, "-o", str(tmp_path / "a.json"))
    splitdbg("snapshot", img, "-o", str(tmp_path / "b.json"))
    assert splitdbg("diff", str(tmp_path / "a.json"), str(tmp_path / "b.json")).stdout.strip() == "no differences"
    assert json.loads((tmp_path / "a.json").read_text())["taken"] == \
        json.loads((tmp_path / "b.json").read_text())["taken"]          # the image's time, not now
    p = splitdbg("snapshot", img, "-o", str(sidecar_path(image["path"])), check_rc=2)
    assert "sidecar: write the snapshot elsewhere" in p.stderr            # never over the image's sidecar
    p = splitdbg("events", img, "--follow", check_rc=2)
    assert "is a memory image" in p.stderr and "Traceback" not in p.stderr
    assert "violation" in splitdbg("events", img, "--last", "50").stdout


def test_tui_opens_the_image(image):
    from textual.widgets import DataTable, Static

    from splitdbg.tui.app import EventDetail, SplitdbgApp
    from splitdbg.tui.source import ImageSource

    async def go():
        a = SplitdbgApp(ImageSource(str(image["path"])), interval=0.01)
        async with a.run_test(size=(160, 50)) as pilot:
            await until_first_snapshot(a, pilot)
            status = str(a.query_one("#status", Static).render())
            assert "OFFLINE image from qemu-7.2, taken" in status and "/s)" not in status
            ids = {c["id"] for c in image["frozen"]["containers"]}
            t = a.query_one("#containers-table", DataTable)
            assert t.row_count == len(ids) > 1
            await pilot.press("z")
            await pilot.pause(0.3)
            assert any("memory image" in n.message for n in a._notifications)
            await pilot.press("3")
            a.event_filter = "kind=violation"
            a.render_events()
            ev = a.query_one("#events-table", DataTable)
            assert ev.row_count == sum(e["kind"] == "violation" for e in image["frozen"]["events"]) > 0
            ev.focus()
            await pilot.press("enter")
            await pilot.pause(0.2)
            assert isinstance(a.screen, EventDetail)
            text = str(a.screen.query_one("#detail-text", Static).render())
            assert "model's verdict" in text and "EXITINFO1" in text
            assert a.polls is None and a.source._snap is a.snap     # built once, served from then on
    asyncio.run(go())


def test_dump_of_a_running_guest_stops_it_only_for_the_copy(guest, tmp_path):
    before = int(guest.run("cat /proc/uptime")[1].split()[0].split(".")[0])
    r = json.loads(splitdbg("dump", f":{guest.port}", str(tmp_path / "r.raw"), "--json").stdout)
    assert guest.status() == "running" and guest.run("echo up")[1].strip() == "up"
    assert r["stopped_seconds"] < 30 and int(guest.run("cat /proc/uptime")[1].split()[0].split(".")[0]) >= before
    # The guest stood still during the copy: each of a CPU's rings in the image holds consecutive
    # sequence numbers (a slot written during the copy would be skipped as torn).
    evs = json.loads(splitdbg("events", str(tmp_path / "r.raw"), "--json").stdout)
    for ring in {(e["cpu"], e["ring"]) for e in evs}:
        seqs = sorted(e["seq"] for e in evs if (e["cpu"], e["ring"]) == ring)
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), ring


def test_open_in_a_terminal(image):
    """`splitdbg open` itself, in tmux: the offline header, the events, guest control refused."""
    import shutil
    import sys

    from .test_tui_e2e import tmux, wait_for

    assert shutil.which("tmux"), "tmux is installed by `make test`"
    session = f"splitdbg-open-{image['path'].stat().st_ino}"
    try:
        tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "48",
             f"{sys.executable} -m splitdbg open {image['path']}")
        _, first = wait_for(session, "OFFLINE image from qemu-7.2")
        tmux("send-keys", "-t", session, "3")
        wait_for(session, "hypercall")                           # the newest events, in view
        tmux("send-keys", "-t", session, "/")
        time.sleep(0.5)
        tmux("send-keys", "-t", session, "kind=violation")
        time.sleep(0.3)
        tmux("send-keys", "-t", session, "Enter")
        s, _ = wait_for(session, "deny", timeout=10)
        assert "isolate" in s and "hypercall" not in s
        tmux("send-keys", "-t", session, "Enter")                # the newest violation's detail
        s, _ = wait_for(session, "model's verdict")
        tmux("send-keys", "-t", session, "Escape")
        time.sleep(1.5)                  # past tmux's and Textual's escape-sequence wait: not Alt-z
        tmux("send-keys", "-t", session, "z")
        wait_for(session, "memory image", timeout=10)
        tmux("send-keys", "-t", session, "q")
        for _ in range(100):                                   # q quits, the window closes (a loaded
            if session not in tmux("list-sessions"):          # machine may take a moment to exit)
                break
            time.sleep(0.1)
        assert session not in tmux("list-sessions")
        print(f"\nsplitdbg open: first full screen after {first:.1f} s")
    finally:
        tmux("kill-session", "-t", session)


def test_dead_images_are_clear_errors(image, tmp_path):
    bad = tmp_path / "bad.raw"
    with open(bad, "wb") as f:
        f.truncate(100 << 20)                  # a copy cut short (sparse: costs no disk)
    side = json.loads(sidecar_path(image["path"]).read_text())
    sidecar_path(bad).write_text(json.dumps(side))
    for cmd in (["ps", str(bad)], ["open", str(bad)]):
        p = splitdbg(*cmd, check_rc=2)
        assert "the image is truncated: range gpa 0x0-0x20000000" in p.stderr and "Traceback" not in p.stderr
    sidecar_path(bad).write_text(json.dumps(dict(side, version=9)))
    assert "version 9 is not supported" in splitdbg("status", str(bad), check_rc=2).stderr
    p = splitdbg("dump", ":1", str(tmp_path / "x.raw"), check_rc=2)
    assert "splitdbg:" in p.stderr and "Traceback" not in p.stderr and not (tmp_path / "x.raw").exists()
