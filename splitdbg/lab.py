"""The guest lab: boot the splitdbg guest under QEMU, talk to it, stop it.

A guest is known by its gdbstub port. `qemu-scripts/run-guest.sh` starts QEMU detached and keeps
everything about it in ``$SPLITDBG_RUN/guest-PORT/`` (default /tmp/splitdbg): ``info.json``,
the serial log, the command-agent socket (second serial port), the HMP monitor and QMP sockets.
Any process can therefore find a running guest again from its port alone (`Guest.find`).

What the guest boots comes from ``build/guest.json``, written by ``make guest``: the cached kernel
(bzImage, vmlinux with DWARF) and the initramfs with our modules and tools.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SplitdbgError, TargetGone

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = Path(os.environ.get("SPLITDBG_RUN", "/tmp/splitdbg"))
ARTIFACTS = REPO / "build" / "guest.json"
READY_MARKER = "SPLITDBG: ready"


class LabError(SplitdbgError):
    pass


def artifacts(path: Path = ARTIFACTS) -> dict:
    """Paths of the built guest: kernel (bzImage), vmlinux, initrd, kernel build tree."""
    if not path.exists():
        raise LabError(f"{path} is missing: run `make guest` to build the guest kernel and initramfs")
    arts = json.loads(path.read_text())
    for key in ("bzImage", "vmlinux", "initrd"):
        if not Path(arts[key]).exists():
            raise LabError(f"{arts[key]} ({key}) is missing: run `make guest`")
    return arts


@dataclass
class Guest:
    """A running guest, as described by its info.json."""

    port: int
    pid: int
    smp: int
    paging: int
    ram_file: str
    ram_size: int
    dir: str
    monitor: str
    qmp: str
    serial_log: str
    console: str
    agent: str
    kernel: str
    initrd: str
    stopped: bool = False
    _agent_sock: socket.socket | None = field(default=None, repr=False)
    _agent_buf: bytes = field(default=b"", repr=False)
    _ids = itertools.count(1)

    # -- finding and lifetime ------------------------------------------------------------------
    @classmethod
    def find(cls, port: int) -> "Guest":
        info = RUN_DIR / f"guest-{port}" / "info.json"
        if not info.exists():
            raise LabError(f"no guest on port {port} (nothing at {info}); start one with `splitdbg lab up --port {port}`")
        guest = cls(**json.loads(info.read_text()))
        if not guest.alive():
            raise TargetGone(f"the guest on port {port} (QEMU pid {guest.pid}) is not running any more")
        return guest

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # A pid can be reused: check it is our QEMU.
        try:
            return "qemu" in Path(f"/proc/{self.pid}/comm").read_text()
        except OSError:
            return False

    def serial_text(self) -> str:
        try:
            return Path(self.serial_log).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait for init's ready marker on the console; returns seconds waited."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            text = self.serial_text()
            if READY_MARKER in text:
                return time.monotonic() - t0
            if "Kernel panic" in text:
                raise LabError(f"the guest kernel panicked during boot; see {self.serial_log}:\n" + text[-2000:])
            if not self.alive():
                raise TargetGone(f"QEMU exited during boot; see {self.serial_log} and {self.dir}/qemu.err")
            time.sleep(0.05)
        raise LabError(f"guest not ready after {timeout:.0f}s; last console lines:\n" + self.serial_text()[-2000:])

    def down(self, timeout: float = 10.0) -> None:
        """Stop QEMU (QMP quit, then SIGTERM, then SIGKILL) and remove the RAM file."""
        self.close()
        if self.alive():
            try:
                self.qmp_command("quit")
            except (OSError, SplitdbgError):
                pass
            t0 = time.monotonic()
            while self.alive() and time.monotonic() - t0 < timeout:
                time.sleep(0.05)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if not self.alive():
                    break
                os.kill(self.pid, sig)
                time.sleep(0.5)
        # The watcher started by run-guest.sh deletes it too; doing it here makes `down` synchronous.
        Path(self.ram_file).unlink(missing_ok=True)

    def close(self) -> None:
        if self._agent_sock is not None:
            self._agent_sock.close()
            self._agent_sock = None

    # -- the command agent on ttyS1 --------------------------------------------------------------
    def run(self, command: str, timeout: float = 60.0, check: bool = False) -> tuple[int, str]:
        """Run a shell command in the guest; returns (exit code, output with stderr)."""
        if "\n" in command:
            raise ValueError("one line at a time: join commands with ';'")
        if self._agent_sock is None:
            self._connect_agent()
        return self._run(command, timeout, check)

    def _connect_agent(self) -> None:
        self._agent_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._agent_sock.connect(self.agent)
        self._agent_buf = b""
        # The first bytes sent to a freshly booted guest's ttyS1 are sometimes lost (seen under
        # load: a command arrived without its first character). Every line starts with a newline
        # the agent ignores, and a first no-op round trip proves the channel before real work.
        for _ in range(5):
            try:
                self._run("true", timeout=3, check=True)
                return
            except LabError:
                continue
        raise LabError(f"the guest's command agent does not answer on {self.agent}")

    def _run(self, command: str, timeout: float, check: bool) -> tuple[int, str]:
        cid = f"c{next(self._ids)}x{os.getpid()}"
        self._agent_sock.sendall(f"\n{cid}\t{command}\n".encode())
        out, deadline = [], time.monotonic() + timeout
        while True:
            while b"\n" not in self._agent_buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabError(f"guest command timed out after {timeout:.0f}s: {command}\n"
                                   f"{self.stall_report()}")
                self._agent_sock.settimeout(min(left, 1.0))
                try:
                    chunk = self._agent_sock.recv(65536)
                except socket.timeout:
                    if not self.alive():
                        raise TargetGone("QEMU exited while a guest command was running")
                    continue
                if not chunk:
                    raise TargetGone("the guest's agent connection closed")
                self._agent_buf += chunk
            line, self._agent_buf = self._agent_buf.split(b"\n", 1)
            parts = line.decode(errors="replace").strip().split(" ")
            if len(parts) >= 3 and parts[1] == cid:
                if parts[0] == "SPLITDBG-OUT":
                    out.append(base64.b64decode(parts[2]))
                elif parts[0] == "SPLITDBG-RC":
                    rc, text = int(parts[2]), b"".join(out).decode(errors="replace")
                    if check and rc != 0:
                        raise LabError(f"guest command failed (rc={rc}): {command}\n{text}")
                    return rc, text

    # -- QEMU's own interfaces -------------------------------------------------------------------
    def qmp_command(self, execute: str, **arguments) -> object:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(60)
            s.connect(self.qmp)
            f = s.makefile("rwb")
            json.loads(f.readline())  # greeting
            for cmd in ({"execute": "qmp_capabilities"}, {"execute": execute, "arguments": arguments}):
                f.write(json.dumps(cmd).encode() + b"\n")
                f.flush()
                while True:
                    line = f.readline()
                    if not line:
                        if execute == "quit":
                            return None
                        raise TargetGone("QMP connection closed")
                    reply = json.loads(line)
                    if "event" in reply:
                        continue
                    if "error" in reply:
                        raise LabError(f"QMP {cmd['execute']}: {reply['error'].get('desc')}")
                    break
            return reply.get("return")

    def hmp(self, command_line: str) -> str:
        """A human-monitor command (`info mem`, `gva2gpa ADDR`, `xp ...`): QEMU's own view, an oracle."""
        return self.qmp_command("human-monitor-command", **{"command-line": command_line})

    def stall_report(self) -> str:
        """What QEMU says of each CPU of a guest that stopped answering: halted or not, and its
        local APIC's in-service and pending vectors. A vector left in service with nothing running
        is an interrupt that was acknowledged and never handled (docs/module.md, exits during
        event delivery). Read-only; best effort."""
        try:
            regs, lapics = self.hmp("info registers -a"), []
            for cpu in range(self.smp):
                lapic = self.qmp_command("human-monitor-command", **{"command-line": "info lapic", "cpu-index": cpu})
                lapics.append(" ".join(" ".join(line.split()) for line in lapic.splitlines()
                                       if line.startswith(("ISR", "IRR", "APR"))))
        except SplitdbgError as exc:
            return f"(no report from QEMU: {exc})"
        halted = [int(m) for m in re.findall(r"HLT=(\d)", regs)]
        return "\n".join(f"CPU {cpu}: {'halted' if cpu < len(halted) and halted[cpu] else 'running'}, "
                         f"local APIC {lapic or '(unknown)'}" for cpu, lapic in enumerate(lapics))

    def pause(self) -> None:
        self.qmp_command("stop")

    def resume(self) -> None:
        self.qmp_command("cont")

    def status(self) -> str:
        return self.qmp_command("query-status")["status"]


def up(port: int = 1234, smp: int = 1, mem_mib: int = 512, paging: int = 4, stopped: bool = False,
       append: str = "", wait: bool = True, timeout: float = 120.0, arts: dict | None = None,
       cpu: str | None = None) -> Guest:
    """Boot a guest (detached) and, unless stopped or told not to, wait for init's ready marker."""
    arts = arts or artifacts()
    cmd = [str(REPO / "qemu-scripts" / "run-guest.sh"), "--port", str(port), "--smp", str(smp),
           "--mem", str(mem_mib), "--paging", str(paging), "--kernel", arts["bzImage"],
           "--initrd", arts["initrd"], "--append", append]
    if stopped:
        cmd.append("--stopped")
    if cpu:
        cmd += ["--cpu", cpu]   # a QEMU CPU model, e.g. "max,la57=off,-svm"
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise LabError(proc.stderr.strip() or f"run-guest.sh failed ({proc.returncode})")
    line = next((l for l in proc.stdout.splitlines() if l.startswith("SPLITDBG-GUEST ")), None)
    if line is None:
        raise LabError(f"run-guest.sh printed no SPLITDBG-GUEST line: {proc.stdout!r}")
    guest = Guest(**json.loads(line.split(" ", 1)[1]))
    if wait and not stopped:
        guest.wait_ready(timeout)
    return guest


def down(port: int) -> None:
    Guest.find(port).down()


def free_port(start: int = 1234) -> int:
    """The first port from `start` that neither a lab guest nor anything else uses."""
    for port in range(start, start + 1000):
        if (RUN_DIR / f"guest-{port}" / "info.json").exists():
            try:
                Guest.find(port)
                continue
            except SplitdbgError:
                pass
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise LabError("no free port")
