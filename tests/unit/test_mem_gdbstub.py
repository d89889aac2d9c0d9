"""The gdbstub backend and the debugger layer without QEMU: a scripted stub for the physical-mode
protocol, and a real gdb (no target) for the MI plumbing and the TargetGone paths."""
from __future__ import annotations

import shutil
import socket
import time

import pytest

from splitdbg.dbg.base import Debugger
from splitdbg.errors import MemoryReadError, NotAvailable, TargetGone
from splitdbg.mem.gdbstub import GdbstubMemory
from pathlib import Path

DATA = Path(__file__).parent / "data"


class ScriptedStub(Debugger):
    """Plays QEMU's stub: PhyMemMode switches the address space reads see; logs every packet."""

    def __init__(self, keeps=False, refuse=False, fail_at=None):
        self.keeps_physical_mode = keeps
        self.refuse, self.fail_at = refuse, fail_at
        self.stub_physical = False
        self.log: list[str] = []
        self.phys = bytes(range(256)) * 64          # 16 KiB "RAM"
        self.virt = bytes(255 - b for b in self.phys)

    def execute(self, command):
        self.log.append(command)
        if command.startswith("maint packet Qqemu.PhyMemMode:"):
            if self.refuse:
                return 'sending: Qqemu.PhyMemMode:1\nreceived: ""\n'  # what gdb 13 prints for an unknown packet
            self.stub_physical = command.endswith("1")
            return f'sending: {command[len("maint packet "):]}\nreceived: "OK"\n'
        if command == "monitor info mtree -f":
            return (DATA / "info_mtree_f.txt").read_text()
        if command == "thread":
            return "[Current thread is 2 (Thread 1.2)]\n"
        if command.startswith("info"):
            return "rip            0xffffffff81000000  0xffffffff81000000\ncr3            0x483000            [ PDBR=1155 PCID=0 ]\n"
        return ""

    def _read_memory(self, addr, size):
        if self.fail_at is not None and addr <= self.fail_at < addr + size:
            raise MemoryReadError(addr, size, "Cannot access memory")
        src = self.phys if self.stub_physical else self.virt
        return src[addr:addr + size]

    def interrupt(self):
        pass

    def cont(self):
        pass


def modes(log):
    return [c[-1] for c in log if c.startswith("maint packet")]


def test_users_gdb_gets_virtual_mode_back_after_every_read():
    stub = ScriptedStub(keeps=False)
    mem = GdbstubMemory(stub)
    assert mem.read(0x100, 4) == bytes([0, 1, 2, 3]) and not stub.stub_physical
    assert mem.read(0x2000, 0x2000) == stub.phys[0x2000:0x4000]
    assert modes(stub.log) == ["1", "0", "1", "0"]
    # A chunk that fails still restores virtual mode, and the error is a MemoryReadError.
    stub.fail_at = 0x10
    with pytest.raises(MemoryReadError):
        mem.read(0, 0x20)
    assert not stub.stub_physical and modes(stub.log)[-2:] == ["1", "0"]


def test_own_gdb_keeps_physical_mode_but_virtual_reads_switch_back():
    stub = ScriptedStub(keeps=True)
    mem = GdbstubMemory(stub)
    for a in range(0, 0x100, 8):
        mem.read_u64(a)
    assert modes(stub.log) == ["1"]          # one switch for 32 reads
    assert stub.read_memory(0, 2) == bytes([255, 254])  # virtual by default: switched back first
    assert modes(stub.log) == ["1", "0"]
    assert stub.read_memory(0, 2, physical=True) == bytes([0, 1])


def test_a_stub_without_physical_mode_is_refused_not_misread():
    stub = ScriptedStub(refuse=True)
    with pytest.raises(NotAvailable, match="PhyMemMode"):
        GdbstubMemory(stub).read(0, 8)


def test_registers_of_another_vcpu_restore_the_selected_thread():
    stub = ScriptedStub()
    mem = GdbstubMemory(stub)
    regs = mem.registers(cpu=0)
    assert regs == {"rip": 0xFFFFFFFF81000000, "cr3": 0x483000}
    assert [c for c in stub.log if c.startswith("thread")] == ["thread", "thread 1", "thread 2"]
    assert mem.ram_ranges() == [(0, 512 << 20)]
    assert "gdbstub" in mem.describe()


gdb_missing = pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")


@gdb_missing
def test_gdbmi_runs_console_commands_quickly():
    from splitdbg.dbg.gdbmi import GdbMI

    dbg = GdbMI(timeout=10)
    try:
        assert dbg.execute("print 6*7").strip() == "$1 = 42"
        t = time.monotonic()
        for _ in range(50):
            dbg.execute("print 1")
        per = (time.monotonic() - t) / 50
        assert per < 0.05, f"{per * 1000:.1f} ms per command: pygdbmi's 0.2 s wait is back?"
    finally:
        dbg.close()


@gdb_missing
def test_gdbmi_connection_refused_is_target_gone():
    from splitdbg.dbg.gdbmi import GdbMI

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.monotonic()
    with pytest.raises(TargetGone, match=f"{port}"):
        GdbMI.connect(f"127.0.0.1:{port}", timeout=5)
    assert time.monotonic() - t < 5


@gdb_missing
def test_gdbmi_stub_that_dies_is_target_gone():
    # A "stub" that accepts and hangs up at once: gdb reports the closed connection.
    from splitdbg.dbg.gdbmi import GdbMI

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    import threading

    def serve():
        c, _ = srv.accept()
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    with pytest.raises(TargetGone):
        GdbMI.connect(f"127.0.0.1:{srv.getsockname()[1]}", timeout=3)
    srv.close()


@gdb_missing
def test_gdbmi_gdb_that_exits_is_target_gone():
    from splitdbg.dbg.gdbmi import GdbMI

    dbg = GdbMI(timeout=5)
    dbg._gdb.gdb_process.kill()
    dbg._gdb.gdb_process.wait()
    with pytest.raises(TargetGone):
        dbg.execute("print 1")
    with pytest.raises(TargetGone):  # and every later command, without waiting for a timeout
        dbg.execute("print 2")
    dbg.close()


@gdb_missing
def test_in_process_debugger_without_a_target_says_so():
    # Inside a real gdb (its own Python): no `target remote` yet -> TargetGone, not gdb.error.
    import os
    import subprocess

    import numpy

    paths = [str(Path(__file__).resolve().parents[2]), os.path.dirname(os.path.dirname(numpy.__file__))]
    script = (f"import sys; sys.path[:0] = {paths!r}\n"
              "from splitdbg.dbg.inprocess import GdbInProcess\n"
              "from splitdbg.mem import open_memory\n"
              "d = GdbInProcess(); print('OUT', d.execute('print 6*7').strip())\n"
              "try:\n    open_memory(d)\nexcept Exception as e:\n    print('ERR', type(e).__name__)\n")
    out = subprocess.run(["gdb", "-q", "-nx", "-batch", "-ex", f"python exec({script!r})"],
                         capture_output=True, text=True, timeout=60).stdout
    assert "OUT $1 = 42" in out and "ERR TargetGone" in out, out
