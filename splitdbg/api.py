"""The Python API for scripts and regression checks.

    import splitdbg.api as sd
    with sd.connect(":1234") as s:
        snap = s.snapshot()                      # the same data model the CLI and TUI render
        for c in snap.containers: ...
        results = sd.check(s, "policies/default.toml")   # [{"name", "ok", "problems"}, ...]
"""
from __future__ import annotations

from .policy import Checker, load_policy
from .target.session import Session
from .target.snapshot import Snapshot


def connect(target: str, vmlinux: str | None = None, backend: str = "auto") -> Session:
    """A session on :PORT, HOST:PORT (QEMU gdbstub) or a memory image file."""
    return Session(target, vmlinux=vmlinux, prefer=backend)


def check(session: Session, policy_path: str) -> list[dict]:
    """Run a policy file's rules against the target now."""
    snap = session.snapshot(crosscheck=False)
    return Checker(snap, mem=session.mem, kernel=session.kernel, splitkernel=session.splitkernel).run(
        load_policy(policy_path))


__all__ = ["connect", "check", "Session", "Snapshot"]
