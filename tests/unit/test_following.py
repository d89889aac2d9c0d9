"""Events lost between two reads of the module's rings (splitdbg/target/following.py): the TUI's
count over snapshots is the CLI follower's (splitkernel.follow's on_loss), on synthetic rings that
a busy guest overruns; and the CLI says it in the same words as before."""
from __future__ import annotations

import argparse
import time

import pytest

from splitdbg.target import snapshot as snap
from splitdbg.target import splitkernel as skm
from splitdbg.target.following import LossTracker, loss_text, lost

from .test_corrupt_state import DESC, ENTRIES, RING0, SEC1, build, event, ring_header

SEC_ENTRIES = ENTRIES // 4


def write(mem, ring_pa: int, cpu: int, kind: int, seqs: range) -> None:
    """The module writing events seqs to one of a CPU's rings (kind 0 busy, 1 security)."""
    entries = SEC_ENTRIES if kind else ENTRIES
    for seq in seqs:
        event(mem, ring_pa, (seq - 1) % entries, cpu=cpu, seq=seq, kind=6 if kind else 1)
    ring_header(mem, ring_pa, head=seqs[-1], overflow=max(0, seqs[-1] - entries), cpu=cpu, kind=kind)


# What a busy guest does between two reads: CPU 0's busy ring is overrun (99 events into 64 slots),
# then CPU 1's security ring (35 into 16), and a quiet poll after.
STEPS = [lambda m: (write(m, RING0, 0, 0, range(2, 101)), write(m, SEC1, 1, 1, range(2, 6))),
         lambda m: (write(m, SEC1, 1, 1, range(6, 41)), write(m, RING0, 0, 0, range(101, 102))),
         lambda m: None]
EXPECTED = [[], [(0, 0, 99 - ENTRIES)], [(1, 1, 35 - SEC_ENTRIES)], []]


def test_the_arithmetic():
    assert lost(10, 10, 0) == 0 and lost(10, 20, 10) == 0 and lost(10, 100, 64) == 26
    assert lost(10, 5, 0) == 0                          # a head that went back loses nothing
    assert loss_text(0, 0, 1) == "lost 1 event on CPU 0 (busy ring)"
    assert loss_text(1, 1, 19) == "lost 19 events on CPU 1 (security ring)"


class Done(Exception):
    pass


def test_snapshots_count_what_the_cli_follower_counts(monkeypatch):
    # The follower: splitkernel.follow polling the rings, each sleep a step of the guest.
    mem = build()
    said: list[list] = [[]]
    steps = iter(STEPS)

    def sleep(_):
        try:
            next(steps)(mem)
        except StopIteration:
            raise Done from None
        said.append([])
    monkeypatch.setattr(time, "sleep", sleep)
    with pytest.raises(Done):
        for _ in skm.follow(skm.SplitKernel(mem, DESC), on_loss=lambda c, r, n: said[-1].append((c, r, n))):
            pass
    assert said == EXPECTED

    # The TUI: one snapshot per poll of the same guest.
    mem, t, seen = build(), LossTracker(), []
    seen.append(t.update(snap.take(mem, crosscheck=False)))
    for step in STEPS:
        step(mem)
        seen.append(t.update(snap.take(mem, crosscheck=False)))
    assert seen == EXPECTED
    assert t.total == 35 + 19 and t.lines() == ["lost 35 events on CPU 0 (busy ring)",
                                                "lost 19 events on CPU 1 (security ring)"]


def test_a_slot_torn_at_the_head_is_read_next_time_and_a_reload_starts_again():
    mem, t = build(), LossTracker()
    t.update(snap.take(mem, crosscheck=False))
    write(mem, RING0, 0, 0, range(2, 4))
    ring_header(mem, RING0, head=4, cpu=0)              # seq 4 being written: its slot still old
    assert t.update(snap.take(mem, crosscheck=False)) == []
    write(mem, RING0, 0, 0, range(4, 5))
    assert t.update(snap.take(mem, crosscheck=False)) == [] and t.total == 0
    # another load of the module: its rings start again from seq 1, nothing is lost by that
    s = snap.take(build(load_nonce=2), crosscheck=False)
    assert t.update(s) == [] and t.total == 0


def test_the_cli_follower_says_a_loss_as_before(monkeypatch, capsys):
    """`splitdbg events --follow`'s line for a loss, byte for byte as it was."""
    import splitdbg.cli.inspect as inspect

    class Sess:
        def __init__(self, *a, **kw):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def splitkernel(self):
            return type("SK", (), {"slat_name": "NPT"})()

    def follow(sk, seconds, pid, kind, on_ready=None, on_loss=None):
        on_ready()
        on_loss(0, 0, 3)
        on_loss(1, 1, 1)
        yield from ()
    monkeypatch.setattr(inspect, "Session", Sess)
    monkeypatch.setattr(skm, "follow", follow)
    args = argparse.Namespace(target=":1", vmlinux=None, backend="auto", scan=False, json=True, seconds=None,
                              pid=None, kind=None)
    assert inspect.follow_events(args) == 0
    assert capsys.readouterr().err.splitlines()[1:] == [
        "splitdbg: lost 3 events on CPU 0 (busy ring): overwritten before they were read",
        "splitdbg: lost 1 event on CPU 1 (security ring): overwritten before they were read"]
