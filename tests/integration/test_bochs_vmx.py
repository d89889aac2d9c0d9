"""The split kernel's VMX backend under Bochs 2.7 (corei7_skylake_x: VMX with EPT), and splitdbg on
the memory image taken there.

One Bochs run (`splitdbg.lab_bochs.capture`) loads splitkernel.ko, which picks its VMX backend
from CPUID, and runs in the guest: five unload/reload cycles, every scenario of the module issue,
the model's differential test on EPT (`ept-probes`: one EPT entry changed, one access, the exit
recorded by the root-mode handler and the entry restored), and finally `hold-for-dump`, which
stops Bochs from inside a live container; the image is dumped in VMX root mode. Then, offline:
- every scenario passed (the guest's own checks, on the console);
- for every probe, the model given the same tables predicts what Bochs did: no exit, an EPT
  violation with the same exit qualification and guest-physical address, or an EPT
  misconfiguration at the same address; where Bochs differs from the architecture, the
  `bochs-2.7` profile must say why;
- the snapshot of the image shows the VMX module, EPT containers with the policies' permissions,
  the pool absent everywhere, and the kernel writer's violations, each checked against the
  model's two-dimensional walk ("agree").
"""
from __future__ import annotations

import re
import shutil

import pytest

from splitdbg import lab, lab_bochs
from splitdbg.mem import ImageFile
from splitdbg.target import snapshot as snap
from splitdbg.target.kernel import Kernel
from splitdbg.target.splitkernel import SplitKernel
from splitdbg.vmx_model import translate
from splitdbg.vmx_model.crosscheck import _UNMODELLED
from splitdbg.vmx_model.events import decode as decode_delivery

from .conftest import Patched, until_first_snapshot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RUN = "split-scenarios unload-cycles all attacks deliver-probes ept-probes hold-for-dump"
ATTACKS = {"attack-leader-exit", "attack-nonleader-exec", "attack-flood", "attack-write-sk_state_page",
           "attack-write-sk_desc_page", "attack-write-sk_write", "attack-query-pointer", "attack-devirt",
           "attack-insn-vmxoff", "attack-insn-vmread", "attack-insn-vmptrst", "attack-wrmsr-1b", "attack-wrmsr-250",
           "attack-wrmsr-2ff", "attack-cr4-reserved", "attack-efer-reserved", "attack-ptrace-out",
           "attack-tty-inject", "attack-kernel-helpers", "attack-lazy-enter", "attack-enter-shared", "attack-unpriv-policy",
           "attack-exit-race"}   # docs/security.md, VMX
SCENARIOS = 19          # `all`, as in the QEMU tests
CPUS = 2
PROBES = 2 * 7 * 3 + 8 * 3
PROBE = re.compile(r"probe acc=(\w+) target=(\w+) level=(\d) op=(\w+) gpa=(0x[0-9a-f]+) va=(0x[0-9a-f]+) "
                   r"old=(0x[0-9a-f]+) new=(0x[0-9a-f]+) faulted=(\w+)")
KIND = {48: "ept_violation", 49: "ept_misconfig"}
DELIVER = re.compile(r"deliver kind=(\w+) idt=(0x[0-9a-f]+) gpa=(0x[0-9a-f]+) old=(0x[0-9a-f]+) "
                     r"delivered=(\w+) faulted=(\w+)")


def deliver_gpas(console: str) -> set[int]:
    """The IDT pages of the deliver-probes (one per CPU that ran one)."""
    return {int(m[2], 16) & ~0xFFF for m in DELIVER.findall(console)}


@pytest.fixture(scope="module")
def vmx_capture(tmp_path_factory):
    for tool in ("bochs", "xorriso"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (make deps)")
    arts = lab.artifacts()
    out = tmp_path_factory.mktemp("bochs-vmx")
    # Two CPUs: shootdowns (an IPI and a VMCALL on each CPU) and migrations between VMCSs are part
    # of what runs.
    cap = lab_bochs.capture(out, load="splitkernel,sktest", run=RUN, smp=CPUS, boot_timeout=700)
    console = (out / "serial.txt").read_text(errors="replace")
    mem = ImageFile(str(cap.image))
    yield dict(cap=cap, console=console, mem=mem, vmlinux=arts["vmlinux"])
    mem.close()


def test_the_module_ran_the_vmx_backend_and_every_scenario_passed(vmx_capture):
    console, cap = vmx_capture["console"], vmx_capture["cap"]
    assert "under the root-mode handler (VMX, EPT)" in console, console[-3000:]
    results = dict(re.findall(r"SPLIT-SCENARIO name=(\S+) result=(\w+)", console))
    failed = {k: v for k, v in results.items() if v != "pass"}
    assert not failed, [line for line in console.splitlines() if "result=fail" in line]
    assert len(results) >= SCENARIOS + 2 and "unload-cycles" in results and "ept-probes" in results
    assert ATTACKS <= set(results), ATTACKS - set(results)     # each attack held under VMX too
    assert cap.mode == "vmx-root"


def test_interrupted_deliveries_are_delivered_again(vmx_capture):
    """deliver-probes under VMX: each event's delivery meets an unreachable IDT page; the EPT
    violation's IDT-vectoring information names it, and its handler still runs."""
    lines = DELIVER.findall(vmx_capture["console"])
    assert [m[0] for m in lines] == ["irq", "nmi", "pf"] * 2
    assert all(m[4:] == ("yes", "yes") for m in lines), lines
    idt = deliver_gpas(vmx_capture["console"])
    evs = [e for e in SplitKernel(vmx_capture["mem"]).events()
           if e.action_name == "probe" and e.exitinfo2 & ~0xFFF in idt]
    got = sorted((d.type_name, d.vector, d.error_code) for d in (decode_delivery(e.exitintinfo, "vmx") for e in evs))
    # The SDM's types, unlike QEMU's: external interrupt 0, NMI 2, hardware exception 3.
    assert got == sorted([("external interrupt", 0xF6, None), ("NMI", 2, None), ("hardware exception", 14, 0)] * 2)


def test_model_agrees_with_bochs_on_every_ept_probe(vmx_capture):
    mem = vmx_capture["mem"]
    lines = PROBE.findall(vmx_capture["console"])
    assert len(lines) == PROBES
    sk = SplitKernel(mem)
    assert sk.vendor == "VMX" and sk.slat_name == "EPT"
    caps, regs = sk.caps(), sk.guest_regs(0)
    idt = deliver_gpas(vmx_capture["console"])
    probes = [e for e in sk.events() if e.action_name == "probe" and e.exitinfo2 & ~0xFFF not in idt]
    faulted = [x for x in lines if x[-1] == "yes"]
    assert len(probes) == len(faulted) >= 40
    (prober,) = {e.slat_root for e in probes}
    events = iter(probes)
    disagreements, quirky = [], []
    for acc, target, level, op, gpa, va, old, new, hit in lines:
        gpa, va, new, level = int(gpa, 16), int(va, 16), int(new, 16), int(level)
        ev = next(events) if hit == "yes" else None
        # The EPT entry the probe changed: level `level` on the path of `gpa` in the prober's tables.
        t, entry = prober & ~0xFFF, None
        for lv in range(sk.levels, level - 1, -1):
            entry = t + 8 * ((gpa >> (12 + 9 * (lv - 1))) & 511)
            t = mem.read_u64(entry) & 0xFFFFFFFFFF000
        if ev is not None:
            assert ev.extra == entry and ev.slat_root == prober
        gva, access = va, acc
        if ev is not None and target == "gpt" and ev.exitinfo2 != gpa:
            # Once the guest page-table page is unusable, the first access that walks through it
            # exits: often the prober's own stack, mapped by another entry of that page. Its
            # linear address is recorded for violations; for misconfigurations (no linear address)
            # it follows from the entry's index. A guest-walk access reads the entry.
            gva = ev.guest_linear if ev.exitinfo1 & 0x80 else \
                (va & ~((1 << 21) - 1)) | ((ev.exitinfo2 & 0xFFF) // 8) << 12
            access = "read"
        patches = {entry: new}
        if op == "roa":
            # the probe also cleared the accessed flag of the guest PTE (at `gpa`) before the access
            patches[gpa] = mem.read_u64(gpa) & ~(1 << 5)
        kw = dict(mem=Patched(mem, patches), arch="vmx", gva=gva, access=access, cpl=0, cr0=regs["cr0"],
                  cr3=ev.cr3 if ev else probes[0].cr3, cr4=regs["cr4"], efer=regs["efer"], slat_root=prober,
                  caps=caps)
        model, arch = translate(**kw, quirks="bochs-2.7"), translate(**kw)

        def outcome(r):
            return (r.kind if r.kind in KIND.values() else "ok", r.qualification, r.gpa if r.kind in KIND.values() else None)

        real = (KIND[ev.exit_code], ev.exitinfo1 & ~_UNMODELLED if ev.exit_code == 48 else None, ev.exitinfo2) \
            if ev else ("ok", None, None)
        if outcome(arch) != outcome(model):
            quirky.append(op)
            assert model.quirks_applied, f"{acc} {target} {op}: differs from the architecture unexplained"
        if outcome(model) != real:
            disagreements.append(f"{acc} {target} L{level} {op}: Bochs {real}, model {outcome(model)} "
                                 f"({model.reason})")
    assert not disagreements, "\n".join(disagreements)
    # Bochs 2.7's known deviation showed: a guest A-bit update through a read-only EPT mapping.
    assert "roa" in quirky


def test_snapshot_of_the_image_shows_the_vmx_containers(vmx_capture):
    mem = vmx_capture["mem"]
    kernel = Kernel(mem, vmlinux_path := vmx_capture["vmlinux"])
    assert vmlinux_path
    s = snap.take(mem, target="image", backend=mem.describe(), kernel=kernel)
    m = s.module
    assert s.slat == "EPT" and m["vendor_name"] == "VMX" and s.cpus == list(range(CPUS))
    # the sidecar: every CPU's registers; the one that stopped at the VM exit in VMX root mode
    modes = {c["cpu"]: c["mode"] for c in mem.meta.cpus}
    assert set(modes) == set(range(CPUS)) and modes[vmx_capture["cap"].stop.cpu] == "vmx-root", modes
    assert set(modes.values()) <= {"vmx-root", "vmx-non-root"}, modes
    pool = (m["pool_pa"], m["pool_pa"] + m["pool_size"])
    text = (m["kernel_text_pa"], m["kernel_text_end_pa"])
    nonroot = [c for c in s.containers if c.id]
    assert len(nonroot) >= 3        # the protected page's owner, the prober, the kernel writer
    for c in s.containers:
        # the module's pool is in no container, the root one included
        assert not any(r.start < pool[1] and pool[0] < r.end for r in c.ranges), c.id
    for c in nonroot:
        over_text = [r for r in c.ranges if r.start < text[1] and text[0] < r.end and r.hpa == r.start]
        assert over_text and all("w" not in r.perms for r in over_text), (c.id, over_text[:3])
    owner = next(c for c in nonroot if c.protected)
    for c in s.containers:
        if c.id != owner.id:
            assert not any(r.start <= owner.protected[0] < r.end for r in c.ranges), c.id
    # the kernel writer: text write isolated (a private copy), rodata write denied; both checked
    writer = next(c for c in nonroot if c.isolated)
    viol = [e for e in s.events if e.kind == "violation" and e.container == writer.id]
    assert {e.action for e in viol} >= {"isolate", "deny"}, [(e.action, e.region) for e in viol]
    for e in viol:
        assert e.exit_code == 48 and e.guest_linear and e.exitinfo1 & 0x2, e
        assert e.detail["decoded"]["data write"] and e.detail["walk"]
        # The private copy is mapped writable now, but the verdict is made on the EPT walk the
        # handler recorded at the exit: deny and isolate alike agree.
        assert e.check == "agree" and e.check_basis == "at exit", (e.action, e.check)
    procs = {p.pid: p for p in s.processes}
    assert any(p.mode == "NR" for p in procs.values())


def test_cli_and_tui_on_the_vmx_image_speak_the_intel_manual(vmx_capture):
    """Every view of an EPT target uses Intel's words: EPTP, exit qualification, GPA, EPT violation."""
    import asyncio

    from textual.widgets import DataTable, Static

    from splitdbg.tui.app import EventDetail, SplitdbgApp
    from splitdbg.tui.source import ImageSource

    from .test_cli import splitdbg

    img = str(vmx_capture["cap"].image)
    assert "VMX with extended page tables (EPT, 4 levels)" in splitdbg("status", img).stdout
    out = splitdbg("containers", img).stdout
    assert "EPTP" in out and "EPT-V" in out and "nCR3" not in out and "NPF" not in out
    out = splitdbg("events", img, "--kind", "violation").stdout
    assert "QUALIFICATION" in out and "GPA" in out and "EXITINFO" not in out and " agree" in out

    async def go():
        a = SplitdbgApp(ImageSource(img, vmlinux=vmx_capture["vmlinux"]), interval=0.01)
        async with a.run_test(size=(160, 50)) as pilot:
            await until_first_snapshot(a, pilot)
            status = str(a.query_one("#status", Static).render())
            assert "OFFLINE image from bochs-2.7" in status and "VMX/EPT" in status
            cols = [str(c.label) for c in a.query_one("#containers-table", DataTable).columns.values()]
            assert "EPTP" in cols and "EPT-V" in cols
            await pilot.press("3")
            a.event_filter = "kind=violation deny"   # the writer's denied rodata write
            a.render_events()
            ev = a.query_one("#events-table", DataTable)
            assert "QUALIFICATION" in [str(c.label) for c in ev.columns.values()] and ev.row_count > 0
            ev.focus()
            await pilot.press("enter")
            await pilot.pause(0.2)
            assert isinstance(a.screen, EventDetail)
            text = str(a.screen.query_one("#detail-text", Static).render())
            assert "exit reason 0x30" in text and "QUALIFICATION" in text and "guest-linear" in text
            assert "EPT walk of the faulting guest-physical address" in text
    asyncio.run(go())


def test_the_default_policy_and_live_address_spaces_hold_on_the_image(vmx_capture, tmp_path):
    """The default policy, and no container lists an address space that nobody uses any more
    (with two CPUs, a refused SK_HC_DEL_PGD from another container's CPU left such entries)."""
    from .test_cli import POLICY, splitdbg

    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.read_text() + '\n[[rule]]\nname = "containers list only live address spaces"\n'
                      'kind = "address-spaces"\n')
    out = splitdbg("check", str(vmx_capture["cap"].image), str(policy)).stdout
    assert "9 of 9 rules hold" in out, out
    # Under VMX the handler still runs on the kernel's init_top_pgt (an NMI in root mode runs the
    # kernel's NMI handlers, which need its live mappings): strict.toml says so, on that rule only.
    out = splitdbg("check", str(vmx_capture["cap"].image), str(POLICY.with_name("strict.toml")), check_rc=1).stdout
    assert "5 of 6 rules hold" in out and "FAIL  no page the handler relies on, its page tables included" in out, out
    assert "host PML4 table (init_top_pgt)" in out, out
