"""An exit that interrupts the delivery of an event: the root-mode handler must deliver it again.

sktest's `deliver KIND` makes its CPU's IDT page not present in its container (a probe on the
nested PTE), then raises one event with interrupts held off until the probe is armed, so the
first access to that page is the event's delivery: a self-IPI (irq_work, vector 0xf6), a self-NMI,
or a #PF on a vmalloc guard page that the exception table fixes. QEMU's #VMEXIT(NPF) carries the
interrupted event in EXITINTINFO; the handler undoes the probe and must put the event in EVENTINJ.

Before it did, such events were lost. A lost interrupt stays in service at the local APIC without
an EOI and blocks every vector of its priority class and below, the timer's included: the guest
hung in HLT for good (seen once in about 15 runs of the differential test, `info lapic`: ISR 236,
IRR 236, PPR 0xe0)."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from splitdbg.mem import SharedRamFile
from splitdbg.target.snapshot import take
from splitdbg.target.splitkernel import SplitKernel
from splitdbg.vmx_model.events import decode

from .conftest import boot

KINDS = ["irq", "nmi", "pf", "irq", "pf", "nmi"]
LINE = re.compile(r"deliver kind=(\w+) idt=(0x[0-9a-f]+) gpa=(0x[0-9a-f]+) old=(0x[0-9a-f]+) "
                  r"delivered=(\w+) faulted=(\w+)")
IRQ_WORK_VECTOR = 0xF6       # arch/x86/include/asm/irq_vectors.h


@pytest.fixture(scope="module")
def delivered():
    g = boot(paging=4, smp=1, base_port=15650)
    try:
        g.run("insmod /lib/modules/splitdbg/splitkernel.ko probe=1 && insmod /lib/modules/splitdbg/sktest.ko",
              check=True)
        script = "; ".join(f"echo deliver {k} > /proc/sktest; cat /proc/sktest" for k in KINDS)
        out = g.run(f"split-run -- sh -c '{script}'", timeout=120, check=True)[1]
        # Still ticking afterwards: a lost interrupt would have left the timer's class blocked.
        alive = g.run("sleep 1; echo alive", timeout=60)[1]
        mem = SharedRamFile(g.ram_file)
        probes = [e for e in SplitKernel(mem).events() if e.action_name == "probe"]
        snap = take(mem, target=f":{g.port}", crosscheck=False)
        cli = subprocess.run([sys.executable, "-m", "splitdbg", "events", f":{g.port}", "--kind", "violation"],
                             capture_output=True, text=True, timeout=300)
        yield dict(lines=LINE.findall(out), out=out, alive=alive, probes=probes, snap=snap, cli=cli)
    finally:
        g.down()


def test_every_event_reached_its_handler(delivered):
    lines = delivered["lines"]
    assert [line[0] for line in lines] == KINDS, delivered["out"]
    for kind, idt, gpa, old, handled, faulted in lines:
        assert faulted == "yes", f"{kind}: the probe on the IDT page was never met"
        assert handled == "yes", f"{kind}: the event whose delivery exited was lost"
    assert "alive" in delivered["alive"]


def test_exitintinfo_names_the_interrupted_event(delivered):
    lines, probes = delivered["lines"], delivered["probes"]
    assert len(probes) == len(lines)
    for (kind, idt, gpa, *_), ev in zip(lines, probes):
        # The NPF is on the IDT page itself, a final guest-physical access.
        assert ev.exitinfo2 & ~0xFFF == int(gpa, 16) & ~0xFFF
        info = decode(ev.exitintinfo, "svm")
        assert info is not None, f"{kind}: EXITINTINFO not valid ({ev.exitintinfo:#x})"
        if kind == "pf":
            # A kernel read of a not-present page: #PF with error code 0.
            assert (info.type, info.vector, info.error_code) == (3, 14, 0)
        else:
            # QEMU 7.2 types interrupts and NMIs as exceptions (quirk exitintinfo-type-exception).
            assert info.type == 3 and info.error_code is None
            assert info.vector == (IRQ_WORK_VECTOR if kind == "irq" else 2)
            assert ("external interrupt" if kind == "irq" else "NMI") in info.describe()


def test_snapshot_says_which_delivery(delivered):
    recs = [e for e in delivered["snap"].events if e.action == "probe"]
    want = {"irq": "external interrupt, vector 0xf6 (TYPE 3: QEMU types interrupts as exceptions)",
            "nmi": "NMI (TYPE 3: QEMU types interrupts as exceptions)",
            "pf": "exception #PF (vector 14), error code 0x0"}
    assert [r.delivery for r in recs] == [want[k] for k in KINDS]


def test_cli_events_say_which_delivery(delivered):
    cli = delivered["cli"]
    assert cli.returncode == 0, cli.stderr
    probe_lines = [line for line in cli.stdout.splitlines() if " probe " in line]
    assert len(probe_lines) == len(KINDS)
    assert sum("[delivering external interrupt, vector 0xf6" in line for line in probe_lines) == KINDS.count("irq")
    assert sum("[delivering exception #PF (vector 14), error code 0x0]" in line for line in probe_lines) == 2
