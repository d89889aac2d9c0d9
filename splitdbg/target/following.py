"""Events a reader of the module's rings never saw, and the words every presentation says it in.

Each CPU has two rings (splitkernel.py): the busy one and the security one. A ring's head is the
seq of the newest event written to it; the ring holds the last `entries` of them. A reader that
last saw seq `seen` and now finds the head at `head` with `got` of the events after `seen` still
in the ring has lost the rest: overwritten (or torn) before it read them. That is the arithmetic of
`splitkernel.follow` (its `on_loss`), which the CLI's and the gdb plugin's `events --follow` use;
`LossTracker` applies it to a sequence of snapshots, for readers that see the rings only through
snapshots (the TUI's poller, a replayed recording).

The module's own overflow counter (`ring_overflow`, "overwritten N") is not this: it counts
entries overwritten whether or not a reader had seen them first.
"""
from __future__ import annotations

from .snapshot import Snapshot

RING_NAMES = {0: "busy", 1: "security"}       # EventRec.ring / splitkernel.RING_ALL, RING_SECURITY


def lost(seen: int, head: int, got: int) -> int:
    """Events of one ring this reader will never see: the head moved from `seen` to `head`, and
    `got` of the events after `seen` were still in the ring when it was read."""
    return (head - seen) - got if head > seen else 0


def ring_name(ring: int) -> str:
    return f"{RING_NAMES.get(ring, str(ring))} ring"


def loss_text(cpu: int, ring: int, n: int) -> str:
    """'lost N events on CPU c (busy ring)': how the CLI, the gdb plugin and the TUI say a loss."""
    return f"lost {n} event{'s' if n != 1 else ''} on CPU {cpu} ({ring_name(ring)})"


class LossTracker:
    """Counts, over the snapshots of one target taken one after another, the events each ring
    wrote and lost between two of them (cumulatively: nothing lost is ever forgotten).

    A ring's head is taken as the newest seq of its events in the snapshot (a snapshot holds every
    event still in its rings): a slot torn at the top of a ring is then read at the next poll
    instead of being counted lost. The first snapshot of a ring (and the first after the module
    was reloaded, or after a ring started again from seq 1) is where counting starts."""

    def __init__(self) -> None:
        self.seen: dict[tuple[int, int], int] = {}       # (cpu, ring) -> newest seq seen
        self.totals: dict[tuple[int, int], int] = {}     # (cpu, ring) -> events lost so far
        self._load = None

    def update(self, snap: Snapshot) -> list[tuple[int, int, int]]:
        """(cpu, ring, n) for each ring that lost n > 0 events since the previous snapshot."""
        if snap.module is None:
            return []            # no rings read: nothing to say, and the last heads stay
        load = (snap.module.get("descriptor_pa"), snap.module.get("load_nonce"))
        if load != self._load:
            self._load, self.seen = load, {}             # another load of the module: its own seqs
        seqs: dict[tuple[int, int], set[int]] = {}
        for e in snap.events:
            seqs.setdefault((e.cpu, e.ring), set()).add(e.seq)
        out = []
        for key, have in sorted(seqs.items()):
            head, seen = max(have), self.seen.get(key)
            if seen is None or head < seen:
                self.seen[key] = head                    # counting starts here
                continue
            n = lost(seen, head, sum(1 for s in have if s > seen))
            self.seen[key] = head
            if n > 0:
                self.totals[key] = self.totals.get(key, 0) + n
                out.append((key[0], key[1], n))
        return out

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    def lines(self) -> list[str]:
        """Each ring's losses so far, in loss_text's words."""
        return [loss_text(cpu, ring, n) for (cpu, ring), n in sorted(self.totals.items())]
