"""Liveness and run state without a guest: a RAM file deleted or replaced under its mapping, the
QEMU process behind a port (its QMP socket from its command line), the TUI's header."""
from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from splitdbg.dbg.qemu import QemuProcess, qmp_socket
from splitdbg.errors import TargetGone
from splitdbg.mem import SharedRamFile
from splitdbg.tui.app import SnapshotArrived, SplitdbgApp, TargetLost
from splitdbg.tui.source import ReplaySource

REC = Path(__file__).parent / "data" / "recording.jsonl"


def ram(path: Path, byte: int = 1) -> Path:
    path.write_bytes(bytes([byte]) * (2 << 20))
    return path


def test_a_deleted_ram_file_is_a_lost_target_and_is_not_read_again(tmp_path):
    mem = SharedRamFile(str(ram(tmp_path / "ram")))
    assert mem.read(0x1000, 4) == b"\1" * 4
    os.unlink(tmp_path / "ram")
    mem._checked = 0.0                       # no wait for the read path's next check
    with pytest.raises(TargetGone, match="QEMU exited .*was deleted"):
        mem.read(0x1000, 4)
    assert mem._map is None                  # the mapping of the dead file is gone
    with pytest.raises(TargetGone):
        mem.read_u64(0x1000)                 # the fast path too: nothing is read from it again


def test_a_replaced_ram_file_is_a_new_qemu(tmp_path):
    mem = SharedRamFile(str(ram(tmp_path / "ram")))
    ram(tmp_path / "new", 2).rename(tmp_path / "ram")
    with pytest.raises(TargetGone, match="replaced"):
        mem.check_alive()


def test_a_watched_process_that_exits_is_a_lost_target(tmp_path):
    mem = SharedRamFile(str(ram(tmp_path / "ram")))
    p = subprocess.Popen(["sleep", "30"])
    q = QemuProcess(p.pid, 0)
    mem.watch(q.gone)
    mem.check_alive()
    p.kill()
    p.wait()
    with pytest.raises(TargetGone, match=f"QEMU exited \\(pid {p.pid}\\)"):
        mem.check_alive()
    q.close()


def test_qmp_socket_from_a_qemu_command_line():
    assert qmp_socket(["qemu", "-qmp", "unix:/run/q.sock,server=on,wait=off"]) == "/run/q.sock"
    assert qmp_socket(["qemu", "-chardev", "socket,id=m,path=/run/m.sock,server=on,wait=off",
                       "-mon", "chardev=m,mode=control"]) == "/run/m.sock"
    assert qmp_socket(["qemu", "-chardev", "socket,id=m,path=/run/m.sock,server=on",
                       "-mon", "chardev=m,mode=readline"]) is None        # HMP, not QMP
    assert qmp_socket(["qemu", "-gdb", "tcp::1234"]) is None


def test_no_qemu_behind_a_port_nobody_listens_on():
    assert QemuProcess.find("", 1) is None
    assert QemuProcess.find("192.0.2.1", 1234) is None      # not this machine: nothing to look at


class StateSource(ReplaySource):
    run_state = "paused"
    control = None


def test_the_header_shows_qemus_run_state_and_a_lost_target_is_not_live():
    src = StateSource(str(REC))

    async def go():
        a = SplitdbgApp(src, interval=0.02, polls=2)
        async with a.run_test(size=(160, 40)) as pilot:
            await pilot.pause(0.5)
            assert "guest paused" in str(a.query_one("#status").render())
            src.run_state = None
            a.post_message(SnapshotArrived(a.snap))
            await pilot.pause(0.2)
            assert "guest state unknown" in str(a.query_one("#status").render())

            a.post_message(TargetLost("target lost: QEMU exited (pid 42)"))
            a.post_message(TargetLost("cannot attach to the gdbstub at localhost:1: Connection refused"))
            await pilot.pause(0.2)
            header = str(a.query_one("#status").render())
            assert header.startswith("target lost: QEMU exited (pid 42); retrying: cannot attach"), header
            assert "not live: the screens show its last state" in header and a.guest_state == "lost"
    asyncio.run(go())
