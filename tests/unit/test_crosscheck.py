"""Cross-checking recorded violations against the model, for both vendors, on synthetic tables.
The expected qualifications and EXITINFO1 values are worked out by hand from SDM table 28-7 and
APM 15.25.6 (and kvm-unit-tests' published value for a write to a read-only nPTE)."""
from __future__ import annotations

from dataclasses import dataclass

from splitdbg.vmx_model import ept as E
from splitdbg.vmx_model.crosscheck import crosscheck_event, ept_access

from .test_vmx_model import CR0, CR4, EFER, GPA, GVA, RW, Lab


@dataclass
class Ev:
    exit_code: int
    exitinfo1: int
    exitinfo2: int
    slat_root: int
    cr3: int = 0
    cpl: int = 0
    guest_linear: int = 0
    action_name: str = "deny"


def ept_lab_readonly():
    lab = Lab("vmx")
    a = lab.slat_entry(GPA)
    lab.mem.write_u64(a, lab.mem.read_u64(a) & ~E.W)      # the data page: R and X, not W
    return lab


# write (bit 1) | readable (3) | executable (5) | GLA valid (7) | to the translated address (8)
# | linear address writable (10): the guest maps GVA P|RW (supervisor, executable)
WRITE_RO_Q = 0x2 | 0x8 | 0x20 | 0x80 | 0x100 | 0x400
REGS = {"cr0": CR0, "cr4": CR4, "efer": EFER, "cr3": 0}


def test_ept_violation_agrees_with_the_two_dimensional_walk():
    lab = ept_lab_readonly()
    ev = Ev(48, WRITE_RO_Q, GPA, lab.root, cr3=lab.cr3, guest_linear=GVA)
    assert crosscheck_event(lab.mem, ev, arch="vmx", guest_regs=REGS) == "agree"


def test_ept_violation_nmi_unblocking_bit_is_not_a_difference():
    lab = ept_lab_readonly()
    ev = Ev(48, WRITE_RO_Q | E.Q_NMI_UNBLOCKING, GPA, lab.root, cr3=lab.cr3, guest_linear=GVA)
    assert crosscheck_event(lab.mem, ev, arch="vmx", guest_regs=REGS) == "agree"


def test_ept_violation_with_a_wrong_qualification_differs():
    lab = ept_lab_readonly()
    ev = Ev(48, WRITE_RO_Q & ~0x20, GPA, lab.root, cr3=lab.cr3, guest_linear=GVA)   # "not executable": wrong
    verdict = crosscheck_event(lab.mem, ev, arch="vmx", guest_regs=REGS)
    assert verdict.startswith("differs: the model expects qualification 0x5aa"), verdict


def test_ept_violation_where_the_tables_allow_it_differs_unless_the_handler_changed_them():
    lab = Lab("vmx")                                      # the page is writable now
    ev = Ev(48, WRITE_RO_Q, GPA, lab.root, cr3=lab.cr3, guest_linear=GVA)
    assert crosscheck_event(lab.mem, ev, arch="vmx", guest_regs=REGS).startswith("differs: the model expects no")
    ev.action_name = "isolate"
    assert crosscheck_event(lab.mem, ev, arch="vmx", guest_regs=REGS).startswith("not checkable now")


def test_ept_violation_without_guest_registers_checks_the_second_level_only():
    lab = ept_lab_readonly()
    ev = Ev(48, WRITE_RO_Q, GPA, lab.root, cr3=lab.cr3, guest_linear=GVA)
    assert crosscheck_event(lab.mem, ev, arch="vmx", guest_regs=None) == "agree"
    ev.exitinfo1 &= ~0x8                                  # "not readable": wrong either way
    assert crosscheck_event(lab.mem, ev, arch="vmx", guest_regs=None).startswith("differs")


def test_ept_access_and_final_from_the_qualification():
    assert ept_access(WRITE_RO_Q) == ("write", True)
    assert ept_access(0x1 | 0x80) == ("read", False)       # a guest paging-structure read
    assert ept_access(0x4) == ("fetch", True)              # no linear address: final


def test_npt_violation_agrees_and_freed_container_is_said():
    lab = Lab("svm")
    a = lab.slat_entry(GPA)
    lab.mem.write_u64(a, lab.mem.read_u64(a) & ~RW)
    ev = Ev(0x400, 0x100000007, GPA, lab.root)            # kvm-unit-tests npt_rw
    assert crosscheck_event(lab.mem, ev) == "agree"
    assert crosscheck_event(lab.mem, ev, live_roots={123}).startswith("not checkable now")
    assert crosscheck_event(lab.mem, Ev(0x400, 0x100000005, GPA, lab.root)).startswith("differs")


def test_ept_violation_of_a_dead_address_space_checks_what_still_exists():
    lab = ept_lab_readonly()
    ev = Ev(48, WRITE_RO_Q, GPA, lab.root, cr3=lab.cr3, guest_linear=GVA)
    gone = {lab.root: [0x777000]}      # the faulting process's tables were freed since
    # a user-half address: only the second level can be recomputed (linear-address bits unchecked)
    assert crosscheck_event(lab.mem, ev, arch="vmx", guest_regs=REGS, live_pgds=gone) == "agree"
    ev.exitinfo1 ^= 0x8                # a wrong "readable" bit is still caught
    assert crosscheck_event(lab.mem, ev, arch="vmx", guest_regs=REGS, live_pgds=gone).startswith("differs")


def _walk(mem, root: int, gpa: int, levels: int = 4) -> tuple[int, ...]:
    """The entries a handler would record (sk_slat_walk): top level first, down to the leaf."""
    out, table = [], root & 0x000FFFFFFFFFF000
    for level in range(levels, 0, -1):
        e = mem.read_u64(table + ((gpa >> (12 + 9 * (level - 1))) & 511) * 8)
        out.append(e)
        if level == 1 or not e & 1 or (level <= 3 and e & 0x80):
            break
        table = e & 0x000FFFFFFFFFF000
    return tuple(out + [0] * (5 - len(out)))


@dataclass
class EvAtExit(Ev):
    slat_walk: tuple = ()


def test_a_verdict_from_the_walk_at_exit_survives_later_changes():
    """The handler isolates the page (the leaf becomes writable) and later the container is freed:
    the recorded walk still says what the hardware saw, so the verdict is exact, not 'not checkable'."""
    from splitdbg.vmx_model.crosscheck import basis

    lab = Lab("svm")
    a = lab.slat_entry(GPA)
    lab.mem.write_u64(a, lab.mem.read_u64(a) & ~RW)
    walk = _walk(lab.mem, lab.root, GPA)
    lab.mem.write_u64(a, lab.mem.read_u64(a) | RW)          # isolate/log: writable since
    ev = EvAtExit(0x400, 0x100000007, GPA, lab.root, action_name="isolate", slat_walk=walk)
    assert basis(ev) == "at exit"
    assert crosscheck_event(lab.mem, ev) == "agree"
    assert crosscheck_event(lab.mem, ev, live_roots={123}) == "agree"     # container freed since
    # A recorded walk that could not have faulted so is a real difference, never "not checkable".
    ok = EvAtExit(0x400, 0x100000007, GPA, lab.root, action_name="isolate", slat_walk=_walk(lab.mem, lab.root, GPA))
    assert crosscheck_event(lab.mem, ok).startswith("differs")
    # Without a recorded walk (a module before ABI v5) it is judged from today's tables.
    old = Ev(0x400, 0x100000007, GPA, lab.root, action_name="isolate")
    assert basis(old) == "now" and crosscheck_event(lab.mem, old).startswith("not checkable now")
