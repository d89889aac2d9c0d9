"""The real TUI in tmux against the booted guest: attach, run the kernel-writer scenario, see its
violations appear, open one, and find the model's verdict on screen."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time

from .conftest import boot


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30).stdout


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def wait_for(session: str, text: str, timeout: float = 60) -> tuple[str, float]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        s = screen(session)
        if text in s or text in " ".join(s.split()):   # the header may wrap between words
            return s, time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared; screen:\n{screen(session)}")


def test_attach_see_violation_open_it(tmp_path):
    assert shutil.which("tmux"), "tmux is installed by `make test`"
    g = boot(paging=4, smp=2, append="splitdbg.load=splitkernel,sktest", base_port=15800)
    session = f"splitdbg-e2e-{g.port}"
    try:
        tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "48",
             f"{sys.executable} -m splitdbg attach :{g.port}")
        _, first = wait_for(session, "SVM/NPT")
        t0 = time.monotonic()
        keeper = int(g.run("split-run -- sh -c 'sh -c \"echo write-text > /proc/sktest\"; sleep 120; true' "
                           ">/dev/null 2>&1 & echo $!")[1])
        tmux("send-keys", "-t", session, "3")
        s, _ = wait_for(session, "violation")
        delay = time.monotonic() - t0
        assert "deny" in s and "text" in s
        # Open the newest violation: filter to violations, go to the last row, enter.
        tmux("send-keys", "-t", session, "/")
        time.sleep(0.5)
        tmux("send-keys", "-t", session, "kind=violation")
        time.sleep(0.3)
        tmux("send-keys", "-t", session, "Enter")
        time.sleep(1)
        s = screen(session)
        assert "hypercall" not in s and "violation" in s       # the filter applied
        tmux("send-keys", "-t", session, "Enter")                # the newest violation is selected
        s, _ = wait_for(session, "model's verdict")
        assert "agree" in s and "EXITINFO1" in s, s
        # The walk tool: the writer's own address space, the kernel's first text page.
        tmux("send-keys", "-t", session, "Escape")
        time.sleep(0.5)
        tmux("send-keys", "-t", session, "w")
        time.sleep(0.5)
        tmux("send-keys", "-t", session, f"{keeper} ffffffff81000000 read")
        time.sleep(0.3)
        tmux("send-keys", "-t", session, "Enter")
        s, _ = wait_for(session, "translates")
        assert f"process {keeper}" in s and "host-physical 0x1000000" in s
        # Control through gdb: stop and continue the guest, then stop it in the root-mode handler.
        tmux("send-keys", "-t", session, "Escape")
        time.sleep(0.5)
        tmux("send-keys", "-t", session, "z")
        wait_for(session, "guest stopped")
        assert g.status() in ("debug", "paused")
        tmux("send-keys", "-t", session, "z")
        wait_for(session, "guest running")
        assert g.status() == "running"
        tmux("send-keys", "-t", session, "b")
        time.sleep(3)
        # Any VM exit will do: a new process makes CR3 writes. The command itself is frozen with the
        # guest at the breakpoint, so it runs in a thread and finishes after we continue.
        import threading
        trigger = threading.Thread(target=lambda: g.run("split-run -- true", timeout=120))
        trigger.start()
        wait_for(session, "guest in R handler")
        # The notification with the whole sentence may be drawn a frame after the header.
        wait_for(session, "root-mode handler", timeout=10)
        assert g.status() in ("debug", "paused")
        tmux("send-keys", "-t", session, "z")
        wait_for(session, "guest running")
        trigger.join(timeout=120)
        print(f"first full screen after {first:.1f} s; violation on screen {delay:.1f} s after it happened")
    finally:
        tmux("kill-session", "-t", session)
        g.down()
