"""The QEMU process behind a gdbstub port on this machine: who it is, whether it still lives, what
its run state is, and whether another debugger already holds its stub.

Everything here is read from /proc and QEMU's QMP socket; nothing connects to the gdbstub itself.
That matters: a TCP connection to QEMU 7.2's stub stops the guest (vm_stop on CHR_EVENT_OPENED),
and one that closes without the detach packet leaves it stopped, so "is the port alive?" must never
be asked by connecting to it. A stub that already has a client leaves new connections in the
listen backlog: QEMU accepts one the moment its current client lets go, and then stops the guest
even when that connection was abandoned long before. So a held stub is told from /proc/net/tcp,
not by trying.
"""
from __future__ import annotations

import json
import os
import select
import socket
from pathlib import Path

_LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1", "0.0.0.0", "::"}
# A TCP table line: sl, local address:port, remote address:port, state, ..., inode (10th field)
_LISTEN, _ESTABLISHED = "0A", "01"


def is_local(host: str) -> bool:
    if host in _LOCAL_HOSTS or host.startswith("127."):
        return True
    try:
        return host in (socket.gethostname(), socket.getfqdn())
    except OSError:
        return False


def tcp_sockets(port: int) -> list[tuple[str, int, int]]:
    """(state, remote port, inode) of this machine's TCP sockets whose local port is `port`."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10:
                continue
            local, remote, state = f[1], f[2], f[3]
            if int(local.rsplit(":", 1)[1], 16) == port:
                out.append((state, int(remote.rsplit(":", 1)[1], 16), int(f[9])))
    return out


def _socket_owners(inodes: set[int], comm_filter=None) -> dict[int, int]:
    """inode -> pid of the processes holding these sockets (those we may look at)."""
    want = {f"socket:[{i}]" for i in inodes if i}
    found: dict[int, int] = {}
    if not want:
        return found
    for d in os.scandir("/proc"):
        if not d.name.isdigit():
            continue
        if comm_filter is not None:
            try:
                if not comm_filter(Path(d.path, "comm").read_text().strip()):
                    continue
            except OSError:
                continue
        try:
            fds = os.scandir(os.path.join(d.path, "fd"))
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    link = os.readlink(fd.path)
                except OSError:
                    continue
                if link in want:
                    found[int(link[8:-1])] = int(d.name)
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]     # field 22, starttime


def qmp_socket(argv: list[str]) -> str | None:
    """The QMP unix socket of a QEMU command line: `-qmp unix:PATH,...` or a `-chardev
    socket,id=X,path=P,server=on` that `-mon chardev=X,mode=control` uses."""
    chardevs, mons = {}, []
    for opt, val in zip(argv, argv[1:]):
        if opt in ("-qmp", "--qmp") and val.startswith("unix:"):
            return val[5:].split(",", 1)[0]
        if opt in ("-chardev", "--chardev") and val.startswith("socket,"):
            kv = dict(p.split("=", 1) for p in val.split(",")[1:] if "=" in p)
            if "id" in kv and "path" in kv and kv.get("server", "off") in ("on", "true", "yes"):
                chardevs[kv["id"]] = kv["path"]
        if opt in ("-mon", "--mon"):
            kv = dict(p.split("=", 1) for p in val.split(",") if "=" in p)
            if kv.get("mode") == "control" and "chardev" in kv:
                mons.append(kv["chardev"])
    return next((chardevs[m] for m in mons if m in chardevs), None)


class QemuProcess:
    """The local QEMU listening on a gdbstub port."""

    def __init__(self, pid: int, port: int):
        self.pid, self.port = pid, port
        self.start_time = _start_time(pid)
        try:
            self.argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode(errors="replace").split("\0")
        except OSError:
            self.argv = []
        self.qmp = qmp_socket(self.argv)
        self._pidfd = None
        try:
            self._pidfd = os.pidfd_open(pid)     # readable once the process has exited
        except (OSError, AttributeError):
            pass

    @classmethod
    def find(cls, host: str, port: int) -> "QemuProcess | None":
        """The QEMU process whose gdbstub listens on `port` here; None when the stub is not local,
        or its process is not one we can see (another user, another pid namespace)."""
        if not is_local(host):
            return None
        listeners = {inode for state, _, inode in tcp_sockets(port) if state == _LISTEN}
        if not listeners:
            return None
        owners = _socket_owners(listeners, comm_filter=lambda c: "qemu" in c)
        return cls(next(iter(owners.values())), port) if owners else None

    def holders(self) -> list[str]:
        """Who is connected to the stub now ("pid 123 (gdb)", or "a client on port N")."""
        conns = [(rport, inode) for state, rport, inode in tcp_sockets(self.port) if state == _ESTABLISHED]
        if not conns:
            return []
        # The client's end of each connection: its local port is the server end's remote port.
        client_inodes = {}
        for rport, _ in conns:
            for state, r2, inode in tcp_sockets(rport):
                if state == _ESTABLISHED and r2 == self.port:
                    client_inodes[inode] = rport
        owners = _socket_owners(set(client_inodes))
        out = []
        for rport, _ in conns:
            pid = next((p for i, p in owners.items() if client_inodes.get(i) == rport), None)
            out.append(f"pid {pid} ({_comm(pid)})" if pid else f"a client on port {rport}")
        return out

    def gone(self) -> str | None:
        """Why this QEMU is no longer there, or None while it runs."""
        if self._pidfd is not None:
            r, _, _ = select.select([self._pidfd], [], [], 0)
            if r:
                return f"QEMU exited (pid {self.pid})"
            return None
        if _start_time(self.pid) != self.start_time:
            return f"QEMU exited (pid {self.pid})"
        return None

    def run_state(self, timeout: float = 1.0) -> str | None:
        """QEMU's own run state (`query-status`: running, paused, debug, prelaunch, ...) over its
        QMP socket; None when it has none we can use (no QMP, or another client holds it)."""
        if not self.qmp:
            return None
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(self.qmp)
                f = s.makefile("rwb")
                json.loads(f.readline())                      # the greeting
                for cmd in ("qmp_capabilities", "query-status"):
                    f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                    f.flush()
                    while True:
                        reply = json.loads(f.readline() or b"{}")
                        if "event" not in reply:
                            break
                    if "return" not in reply:
                        return None
                return reply["return"].get("status")
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def describe_state(state: str | None) -> str:
    return {"running": "running", "paused": "paused", "debug": "stopped (debug)", "prelaunch": "not started (-S)",
            None: "state unknown"}.get(state, state or "state unknown")


__all__ = ["QemuProcess", "describe_state", "is_local", "qmp_socket", "tcp_sockets"]
