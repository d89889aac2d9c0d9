"""Liveness and run state (issue 12, "splitdbg tells the truth or says it cannot"), against the
real guest: a dead QEMU is noticed within about a second by `events --follow` and the TUI, the TUI
reconnects to a new QEMU on the same port; a guest paused over QMP stays paused through `status`
and `dump`; a gdbstub another debugger holds is a quick error; on a user's own QEMU (gdbstub, no
shared RAM file, no module) `status` answers in seconds instead of scanning all RAM through the stub.

Each test boots its own guest, one at a time (the machine is shared)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splitdbg import lab

from .conftest import boot, until_first_snapshot

MODULE = "splitdbg.load=splitkernel,sktest"


def splitdbg(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "splitdbg", *args], capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - t0


def kill_qemu(g: lab.Guest) -> float:
    os.kill(g.pid, signal.SIGKILL)
    return time.monotonic()


@pytest.mark.parametrize("how", ["kill -9", "reboot -f"])
def test_events_follow_exits_when_qemu_is_killed(how):
    g = boot(smp=2, append=MODULE, base_port=16410)
    try:
        p = subprocess.Popen([sys.executable, "-m", "splitdbg", "events", f":{g.port}", "--follow"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert "following the events" in p.stderr.readline()
        time.sleep(0.5)
        if how == "kill -9":
            t0 = kill_qemu(g)
        else:                               # the lab's QEMU runs with -no-reboot: it exits
            t0 = time.monotonic()
            with pytest.raises(lab.SplitdbgError):
                g.run("reboot -f", timeout=10)
        try:
            rc = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            raise AssertionError("events --follow did not notice that QEMU is gone")
        noticed = time.monotonic() - t0
        err = p.stderr.read()
        print(f"events --follow exited {noticed:.2f} s after {how}: {err.strip()}")
        assert rc == 2 and "target lost: QEMU exited" in err and err.count("\n") == 1, err
        assert noticed < 3
    finally:
        g.down()


def test_the_tui_says_the_target_is_lost_and_reconnects_to_a_new_qemu():
    from splitdbg.tui.app import SplitdbgApp
    from splitdbg.tui.source import LiveSource

    g = boot(smp=2, append=MODULE, base_port=16420)
    port, old_file = g.port, g.ram_file
    src = LiveSource(f":{port}")
    app = SplitdbgApp(src, interval=0.5)
    app.retry_after = 0.5
    new = []

    async def go():
        loop = asyncio.get_running_loop()
        async with app.run_test(size=(160, 50)) as pilot:
            await until_first_snapshot(app, pilot)
            assert src.session.mem.path == old_file and app.guest_state == "running"
            nonce = app.snap.module["load_nonce"]
            t0 = kill_qemu(g)
            while app.lost is None and time.monotonic() - t0 < 10:
                await pilot.pause(0.02)
            noticed = time.monotonic() - t0
            header = str(app.query_one("#status").render())
            print(f"the TUI said the target was lost {noticed:.2f} s after kill -9 of QEMU: {header}")
            assert app.lost and header.startswith("target lost: QEMU exited") and "not live" in header, header
            assert app.guest_state == "lost"
            assert noticed < 2
            # A new QEMU on the same port: the app finds it (its new RAM file) by itself.
            await pilot.pause(1.0)
            assert app.lost, "still lost while no QEMU runs"
            while g.alive() and time.monotonic() - t0 < 10:      # run-guest.sh refuses a port whose QEMU lives
                await pilot.pause(0.1)
            t1 = time.monotonic()
            new.append(await loop.run_in_executor(None, lambda: lab.up(port=port, smp=2, append=MODULE, timeout=180)))
            booted = time.monotonic() - t1
            while (app.lost or not app.snap.module or app.snap.module["load_nonce"] == nonce) \
                    and time.monotonic() - t1 < 60:
                await pilot.pause(0.1)
            back = time.monotonic() - t1
            print(f"the TUI was back {back:.2f} s after `lab up` began (boot to ready {booted:.2f} s)")
            assert app.lost is None and app.snap.module and app.snap.module["load_nonce"] != nonce
            assert src.session.mem.path == new[0].ram_file != old_file
            assert "SVM/NPT" in str(app.query_one("#status").render())
            app.exit()

    try:
        asyncio.run(go())
    finally:
        src.close()
        for guest in [g] + new:
            guest.down()


def test_status_and_dump_leave_a_paused_guest_paused(tmp_path):
    g = boot(smp=2, append=MODULE, base_port=16430)
    try:
        g.pause()
        assert g.status() == "paused"
        p, _ = splitdbg("status", f":{g.port}")
        assert p.returncode == 0, p.stderr
        assert g.status() == "paused", "status resumed a paused guest"
        assert "guest          : paused" in p.stdout, p.stdout
        p, _ = splitdbg("dump", f":{g.port}", str(tmp_path / "g.raw"))
        assert p.returncode == 0, p.stderr
        assert g.status() == "paused", "dump resumed a paused guest"
        assert "stays paused" in p.stdout, p.stdout
        # A running guest runs on, as before.
        g.resume()
        p, _ = splitdbg("status", f":{g.port}")
        assert p.returncode == 0 and "guest          : running" in p.stdout, p.stdout + p.stderr
        assert g.status() == "running"
    finally:
        g.down()


def test_a_gdbstub_held_by_another_debugger_is_a_quick_error():
    from splitdbg.dbg.gdbmi import GdbMI

    g = boot(smp=2, base_port=16440)
    try:
        other = GdbMI.connect(f"localhost:{g.port}")        # "the user's gdb"
        try:
            p, took = splitdbg("status", f":{g.port}")
        finally:
            other.close()
        print(f"status with the stub held: rc {p.returncode} in {took:.2f} s: {p.stderr.strip()}")
        assert p.returncode == 2 and "another debugger holds the gdbstub on" in p.stderr and took < 30, p.stderr
        time.sleep(0.5)
        # Nothing of ours was left in the stub's backlog to stop the guest once the other gdb let go.
        assert g.status() == "running"
    finally:
        g.down()


@pytest.fixture
def plain_qemu(tmp_path):
    """A user's own QEMU: the bundled kernel, `-gdb tcp::PORT`, plain RAM (no memory-backend-file),
    no QMP, no module."""
    arts = lab.artifacts()
    port = lab.free_port(16450)
    log, pidfile = tmp_path / "serial.log", tmp_path / "pid"
    subprocess.run(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max,la57=off", "-smp", "2", "-m", "512M",
                    "-kernel", arts["bzImage"], "-initrd", arts["initrd"], "-append", "console=ttyS0 panic=-1",
                    "-display", "none", "-no-reboot", "-nodefaults", "-serial", f"file:{log}",
                    "-gdb", f"tcp:127.0.0.1:{port}", "-pidfile", str(pidfile), "-daemonize"], check=True)
    pid = int(pidfile.read_text())
    try:
        t0 = time.monotonic()
        while lab.READY_MARKER not in (log.read_text(errors="replace") if log.exists() else ""):
            assert time.monotonic() - t0 < 120, "the plain guest did not boot"
            time.sleep(0.1)
        yield port
    finally:
        os.kill(pid, signal.SIGKILL)


def test_status_through_the_gdbstub_without_the_module_is_bounded(plain_qemu):
    port = plain_qemu
    p, took = splitdbg("status", f":{port}", timeout=30)
    print(f"status through the gdbstub, symbols, no module: {took:.2f} s\n{p.stdout}")
    assert p.returncode == 0, p.stderr
    assert "memory backend : gdbstub" in p.stdout
    assert "split kernel   : not loaded (module not loaded: splitkernel is not in the guest kernel's module list)" \
        in p.stdout, p.stdout
    # Bounded by the kernel's lists, not by RAM (a scan through the stub took 400 s): the 2 s goal
    # is measured in bench/bench_cli.py, not here (a shared machine's load is not the code's).
    assert took < 30
    # Without symbols the state is unknown, and said so with what a scan would cost.
    p, took = splitdbg("status", f":{port}", "--vmlinux", "", timeout=30)
    print(f"status through the gdbstub, no symbols: {took:.2f} s\n{p.stdout}")
    assert p.returncode == 0, p.stderr
    assert "split kernel   : unknown (module state unknown" in p.stdout and "--scan does it" in p.stdout
    assert "MiB/s measured now" in p.stdout and took < 30
    # The guest runs on (QEMU without QMP: its state before is unknown, and said so).
    assert "run state is unknown" in p.stdout


def test_events_follow_exits_when_the_guest_reboots_under_a_living_qemu(tmp_path):
    """A user's QEMU without -no-reboot: QEMU and its RAM file stay, the guest is a new boot
    (QMP system_reset): the session sees jiffies go back (or the descriptor go) and says so."""
    import json
    import socket

    arts = lab.artifacts()
    port = lab.free_port(16460)
    ram, qmp, log, pidfile = f"/dev/shm/splitdbg-test-{port}", tmp_path / "qmp.sock", tmp_path / "serial.log", \
        tmp_path / "pid"
    subprocess.run(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max,la57=off", "-smp", "2",
                    "-object", f"memory-backend-file,id=mem,size=512M,mem-path={ram},share=on",
                    "-machine", "q35,memory-backend=mem", "-m", "512M",
                    "-kernel", arts["bzImage"], "-initrd", arts["initrd"],
                    "-append", f"console=ttyS0 panic=-1 {MODULE}", "-display", "none", "-nodefaults",
                    "-serial", f"file:{log}", "-qmp", f"unix:{qmp},server=on,wait=off",
                    "-gdb", f"tcp:127.0.0.1:{port}", "-pidfile", str(pidfile), "-daemonize"], check=True)
    pid = int(pidfile.read_text())
    try:
        t0 = time.monotonic()
        while lab.READY_MARKER not in (log.read_text(errors="replace") if log.exists() else ""):
            assert time.monotonic() - t0 < 120, "the guest did not boot"
            time.sleep(0.1)
        p = subprocess.Popen([sys.executable, "-m", "splitdbg", "events", f":{port}", "--follow"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert "following the events" in p.stderr.readline()
        time.sleep(1.0)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(qmp))
            f = s.makefile("rwb")
            f.readline()
            for cmd in ("qmp_capabilities", "system_reset"):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                while "event" in json.loads(f.readline()):
                    pass
        t0 = time.monotonic()
        try:
            rc = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            raise AssertionError("events --follow did not notice that the guest rebooted")
        noticed = time.monotonic() - t0
        err = p.stderr.read()
        print(f"events --follow exited {noticed:.2f} s after system_reset: {err.strip()}")
        assert rc == 2 and ("the guest rebooted" in err or "module unloaded" in err), err
        assert os.kill(pid, 0) is None                  # QEMU itself lives on
    finally:
        os.kill(pid, signal.SIGKILL)
        Path(ram).unlink(missing_ok=True)


def test_module_reloaded_in_a_loop_under_a_follower_and_the_tui():
    """rmmod and insmod, three times, while `events --follow` and the TUI watch: each follower
    says the module went and ends (rc 2) instead of reading a dead module's rings; the TUI stays
    attached, says the module is not loaded while it is not, and shows each new load (its nonce),
    never a ghost of the old one."""
    from splitdbg.tui.app import SplitdbgApp
    from splitdbg.tui.source import LiveSource

    g = boot(smp=2, append=MODULE, base_port=16440)
    src = LiveSource(f":{g.port}")
    app = SplitdbgApp(src, interval=0.3)
    seen: list[str] = []

    def follower() -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-m", "splitdbg", "events", f":{g.port}", "--follow", "--json"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        line = ""
        while "following" not in line and time.monotonic() - t0 < 60:
            line = p.stderr.readline()
        assert "following" in line, line
        return p

    async def go():
        loop = asyncio.get_running_loop()
        async with app.run_test(size=(160, 50)) as pilot:
            await until_first_snapshot(app, pilot)
            for cycle in range(3):
                nonce = app.snap.module["load_nonce"]
                f = await loop.run_in_executor(None, follower)
                await loop.run_in_executor(None, lambda: g.run("rmmod sktest; rmmod splitkernel", check=True))
                rc = await loop.run_in_executor(None, lambda: f.wait(timeout=30))
                said = f.stderr.read()
                assert rc == 2 and "module unloaded" in said, (rc, said)
                seen.append(said.strip().splitlines()[-1])
                t0 = time.monotonic()
                while app.snap.module is not None and time.monotonic() - t0 < 15:
                    await pilot.pause(0.1)
                assert app.snap.module is None, f"cycle {cycle}: the TUI still shows the unloaded module"
                await loop.run_in_executor(None, lambda: g.run(
                    "insmod /lib/modules/splitdbg/splitkernel.ko && insmod /lib/modules/splitdbg/sktest.ko && "
                    "split-run -- true", check=True))
                t0 = time.monotonic()
                while (app.snap.module is None or app.snap.module["load_nonce"] == nonce) \
                        and time.monotonic() - t0 < 15:
                    await pilot.pause(0.1)
                assert app.snap.module and app.snap.module["load_nonce"] != nonce, f"cycle {cycle}: no new load"
                assert app.lost is None
            app.exit()

    try:
        asyncio.run(go())
    finally:
        src.close()
        g.down()
    print("followers said:", seen)
