"""More table-driven cases of the model, each worked out by hand from the manual section cited
(SDM vol. 3C in 2023+ numbering: 29.3.x EPT, 28.2.1 exit qualifications; APM vol. 2: 15.25.x
nested paging, 5.3.3 long-mode entries MBZ bits, 8.4.2 #PF error code; SDM vol. 3A 4.5-4.7),
and from Linux's arch/x86/kvm/mmu/paging_tmpl.h where the manuals are terse (the nested access
of a guest paging-structure read is a user write when A/D bits are in use).

Expected values are written as the manual's bits, never taken from running the model."""
from __future__ import annotations

import pytest

from splitdbg.vmx_model import Caps, slat_translate, translate
from splitdbg.vmx_model import ept as E
from splitdbg.vmx_model import vmcb, vmcs

from .test_vmx_model import CR0, CR4, EFER, GPA, GVA, PS, XD, A, D, Lab, P, RW, US

WB = 6 << 3
ADV_W = E.Q_GLA_VALID | E.Q_GLA_TRANSLATED | E.Q_GLA_WRITABLE   # Lab's guest page: supervisor, writable, not XD


def _set(lab, addr, value):
    lab.mem.write_u64(addr, value)


def _or(lab, addr, bits):
    lab.mem.write_u64(addr, lab.mem.read_u64(addr) | bits)


def _and(lab, addr, bits):
    lab.mem.write_u64(addr, lab.mem.read_u64(addr) & bits)


# ---------------------------------------------------------------------------------------------
# EPT violations: SDM 29.3.3.2 (permissions are the AND over every entry used) and table 28-7
# (bits 5:3 report that AND; bits 8:7 say whether the access was to the translated linear address)

@pytest.mark.parametrize("level,clear,access,expected_q", [
    # SDM 29.3.3.2: an EPT PDE without W forbids writes to the whole 2 MiB region, even with W in the PTE.
    (2, E.W, "write", E.Q_WRITE | E.Q_READABLE | E.Q_EXECUTABLE | ADV_W),
    # the same at the PDPTE: bits 5:3 are the AND over all levels, so W is 0 in the qualification.
    (3, E.W, "write", E.Q_WRITE | E.Q_READABLE | E.Q_EXECUTABLE | ADV_W),
    # X cleared in the PML4E: a fetch violates; a read of the page would still be allowed.
    (4, E.X, "fetch", E.Q_FETCH | E.Q_READABLE | E.Q_WRITABLE | ADV_W),
])
def test_ept_upper_level_permissions_are_anded(level, clear, access, expected_q):
    lab = Lab("vmx")
    if level == 4:
        # The PML4E also maps the guest's tables: give the data page its own PML4 slot at 512 GiB.
        gpa = 1 << 39
        lab.gmap(GVA, gpa, P | RW | A | D)
        lab.slat_map(gpa, GPA, E.R | E.W | E.X | WB)
    else:
        gpa = GPA
    _and(lab, lab.slat_entry(gpa, level), ~clear)
    r = lab.go(access)
    assert (r.kind, r.qualification, r.gpa, r.guest_linear) == ("ept_violation", expected_q, gpa, GVA)
    if access == "fetch":
        assert lab.go("read").kind == "ok"


def test_ept_not_present_top_level_during_guest_walk():
    # SDM table 28-7: bit 7 = 1 (linear address valid), bit 8 = 0 (access to a paging-structure
    # entry), bits 5:3 = 0 (the EPT PML4E is not present), bit 0 (the walker reads without EPT A/D).
    lab = Lab("vmx")
    _set(lab, lab.slat_entry(lab.cr3, 4), 0)
    r = lab.go("write")
    assert (r.kind, r.gpa, r.guest_linear, r.during_guest_walk) == ("ept_violation", lab.cr3, GVA, True)
    assert r.qualification == E.Q_READ | E.Q_GLA_VALID


def test_ept_final_write_with_ad_enabled_sets_only_the_write_bit():
    # SDM 28.2.1 table 28-7 footnote: both bits 0 and 1 only for guest paging-structure accesses
    # treated as writes under EPT A/D; a data write to the final page reports bit 1 alone.
    lab = Lab("vmx")
    _set(lab, lab.slat_entry(GPA), GPA | E.R | E.X | WB)
    r = lab.go("write", root=lab.root | E.EPTP_AD)
    assert r.kind == "ept_violation" and not r.during_guest_walk
    assert r.qualification == E.Q_WRITE | E.Q_READABLE | E.Q_EXECUTABLE | ADV_W


def test_ept_guest_table_execute_only_without_ad_is_a_read_violation():
    # SDM 29.3.3.2: without EPT A/D, guest paging-structure accesses are reads; an X-only EPT page
    # (allowed: execute-only supported) holding the guest PDPT faults with bits 0 and 5 (and 7).
    lab = Lab("vmx")
    pdpt = lab.mem.read_u64(lab.cr3 + 8 * ((GVA >> 39) & 0x1FF)) & 0xFFFFFFFFFF000
    _set(lab, lab.slat_entry(pdpt), pdpt | E.X | WB)
    r = lab.go("read")
    assert (r.kind, r.gpa, r.qualification) == ("ept_violation", pdpt, E.Q_READ | E.Q_EXECUTABLE | E.Q_GLA_VALID)


@pytest.mark.parametrize("leaf,access,kind", [
    (E.X | WB, "fetch", "ok"),                     # SDM 29.3.3.1: execute-only is fine when supported
    (E.R | E.W | E.X | WB | E.SUPPRESS_VE, "write", "ok"),   # bit 63 suppress #VE: no effect without EPT-violation #VE
    (E.R | E.W | E.X | E.IGNORE_PAT, "write", "ok"),         # memory type 0 (UC) with ignore-PAT is valid
    (E.R | E.W | E.X | (4 << 3), "read", "ok"),    # WT (4) is a valid EPT memory type
    (E.R | E.W | E.X | (5 << 3), "read", "ok"),    # WP (5) as well
    (E.R | E.W | E.X | (3 << 3), "read", "ept_misconfig"),   # 3 is reserved (29.3.3.1)
])
def test_ept_leaf_attributes(leaf, access, kind):
    lab = Lab("vmx")
    _set(lab, lab.slat_entry(GPA), GPA | leaf)
    r = lab.go(access)
    assert r.kind == kind
    if kind == "ok":
        assert r.hpa == GPA


@pytest.mark.parametrize("level,bits,caps,why", [
    (4, PS, Caps(), "reserved bits 7:3"),                   # SDM 29.3.2 table 29-2: PML4E bits 7:3 reserved
    (4, 1 << 3, Caps(), "reserved bits 7:3"),
    (2, 1 << 5, Caps(), "reserved bits 6:3"),               # table 29-5: PDE referencing a PT, bits 6:3 reserved
    (2, 1 << 45, Caps(maxphyaddr=40), "reserved address bits"),   # bits 51:MAXPHYADDR reserved
])
def test_ept_misconfig_in_upper_levels(level, bits, caps, why):
    lab = Lab("vmx")
    _or(lab, lab.slat_entry(GPA, level), bits)
    # The level 4 entry is shared with the guest's tables: the misconfiguration hits the first guest access.
    r = lab.go("read", caps=caps)
    assert r.kind == "ept_misconfig" and why in r.reason and r.qualification is None


def test_ept_large_pages():
    # SDM 29.3.2 tables 29-3/29-4: a PDE with bit 7 maps 2 MiB (bits 20:12 reserved); a PDPTE with
    # bit 7 maps 1 GiB where supported (IA32_VMX_EPT_VPID_CAP bit 17), else it is a misconfiguration.
    lab = Lab("vmx")
    gpa, hpa = 0x40123000, 0x7F200000       # GVA (page-aligned) -> this GPA, 1 GiB + 1 MiB + 0x23000
    lab.gmap(GVA, gpa, P | RW | A | D)
    pdpt = lab.slat_entry(0, 3)             # PDPT of the identity map
    pd = lab._alloc()
    _set(lab, pdpt + 8, pd | E.R | E.W | E.X)                        # PDPTE 1 -> a PD
    _set(lab, pd + 8 * ((gpa >> 21) & 0x1FF), hpa | PS | E.R | E.W | E.X | WB)
    r = lab.go("read")
    assert (r.kind, r.hpa) == ("ok", 0x7F323000)
    _set(lab, pd + 8 * ((gpa >> 21) & 0x1FF), hpa | (1 << 12) | PS | E.R | E.W | E.X | WB)
    assert lab.go("read").kind == "ept_misconfig"
    _set(lab, pdpt + 8, 0x80000000 | PS | E.R | E.W | E.X | WB)      # 1 GiB page
    r = lab.go("read")
    assert (r.kind, r.hpa) == ("ok", 0x80123000)
    assert lab.go("read", caps=Caps(ept_1g=False)).kind == "ept_misconfig"


# ---------------------------------------------------------------------------------------------
# AMD nested paging: APM vol. 2 15.25.5 (nested walks are user accesses with the host's EFER.NXE
# and CR4.SMEP), 15.25.6 (EXITINFO1 bits 0-4 as a #PF error code, bit 32 final GPA, bit 33 guest
# page table), 5.3.3 (MBZ bits), 8.4.2 (error code bits: P=1 on a reserved-bit fault)

@pytest.mark.parametrize("level,change,access,host_efer,expected", [
    (2, lambda e: e & ~RW, "write", EFER, 0x100000007),         # read-only nPDE: P|RW|US, final
    (3, lambda e: e | XD, "fetch", EFER, 0x100000015),          # NX in an nPDPE, host NXE=1: P|US|ID
    (1, lambda e: e | XD, "read", 0, 0x10000000D),              # NX bit without host NXE is MBZ: P|US|RSV
    (2, lambda e: e & ~US, "write", EFER, 0x100000007),         # U/S=0 in an nPDE: user access denied
    (1, lambda e: e | (1 << 52), "read", EFER, 0x100000004 | 0),  # bit 52 is available to software: no fault
])
def test_npt_rules(level, change, access, host_efer, expected):
    lab = Lab("svm")
    a = lab.slat_entry(GPA, level)
    if level > 1:
        # Upper nested entries also map the guest tables: move the data page to its own 1 GiB/512 GiB slot.
        gpa = 1 << 39 if level == 3 else 1 << 30
        lab.gmap(GVA, gpa, P | RW | A | D)
        lab.slat_map(gpa, GPA, P | RW | US)
        a = lab.slat_entry(gpa, level)
    else:
        gpa = GPA
    _set(lab, a, change(lab.mem.read_u64(a)))
    r = lab.go(access, host_efer=host_efer)
    if expected == 0x100000004:
        assert r.kind == "ok"
        return
    assert (r.kind, r.exitinfo1, r.exitinfo2, r.during_guest_walk) == ("npf", expected, gpa, False)


def test_npt_guest_table_not_present():
    # APM 15.25.6: bit 33 for the access to a guest page table; the nested access is a user write
    # (KVM paging_tmpl.h: nested_access = PFERR_WRITE_MASK | PFERR_USER_MASK when A/D are in use):
    # not present -> RW|US = 0x6, EXITINFO2 = GPA of the guest entry's table page.
    lab = Lab("svm")
    pd = lab.mem.read_u64(lab.mem.read_u64(lab.cr3 + 8 * ((GVA >> 39) & 0x1FF)) & 0xFFFFFFFFFF000
                          + 8 * ((GVA >> 30) & 0x1FF)) & 0xFFFFFFFFFF000
    _set(lab, lab.slat_entry(pd), 0)
    r = lab.go("read")
    entry_gpa = pd + 8 * ((GVA >> 21) & 0x1FF)
    assert (r.kind, r.exitinfo1, r.exitinfo2) == ("npf", 0x200000006, entry_gpa)


def test_npt_large_page_reserved_bits():
    # APM 5.3.3 figure 5-24 (2-MByte PDE, long mode): bits 20:13 are reserved -> P|US|RSV, final.
    lab = Lab("svm")
    gpa = 1 << 30
    lab.gmap(GVA, gpa, P | RW | A | D)
    pdpt = lab.slat_entry(0, 3)
    pd = lab._alloc()
    _set(lab, pdpt + 8, pd | P | RW | US)
    _set(lab, pd, 0x200000 | PS | P | RW | US)
    assert lab.go("read").hpa == 0x200000
    _set(lab, pd, 0x200000 | (1 << 13) | PS | P | RW | US)
    r = lab.go("read")
    assert (r.kind, r.exitinfo1, r.exitinfo2) == ("npf", 0x10000000D, gpa)
    # QEMU 7.2 drops P for reserved-bit faults (REFERENCE.md).
    assert lab.go("read", quirks="qemu-tcg-7.2").exitinfo1 == 0x10000000C


def test_slat_translate_alone_matches_the_kvm_unit_tests_values():
    # The second level alone (for exits that record only the GPA): kvm-unit-tests npt_rw: 0x100000007.
    lab = Lab("svm")
    _and(lab, lab.slat_entry(GPA), ~RW)
    r = slat_translate(mem=lab.mem, arch="svm", slat_root=lab.root, gpa=GPA, access="write")
    assert (r.kind, r.exitinfo1, r.exitinfo2) == ("npf", 0x100000007, GPA)
    r = slat_translate(mem=lab.mem, arch="svm", slat_root=lab.root, gpa=GPA, access="write", final=False)
    assert r.exitinfo1 == 0x200000007


# ---------------------------------------------------------------------------------------------
# Guest paging: SDM vol. 3A 4.5 (MBZ bits), 4.6 (access rights), 4.7 (#PF error code)

@pytest.mark.parametrize("leaf,access,cpl,efer,cr0,expected", [
    (P | RW | A | XD, "fetch", 0, EFER, CR0, 0x11),           # XD with NXE: P | I/D
    (P | RW | A | XD, "read", 0, EFER & ~(1 << 11), CR0, 0x9),   # XD without NXE is reserved: P | RSVD
    (P | A, "write", 0, EFER, CR0 & ~(1 << 16), None),         # CR0.WP=0: supervisor writes to read-only pages
    (P | RW | A, "write", 3, EFER, CR0, 0x7),                  # user write to a supervisor page: P|W|U
    (P | RW | US | A, "fetch", 3, EFER & ~(1 << 11), CR0, None),   # user fetch, no NXE/SMEP: allowed
])
def test_guest_leaf_rules(leaf, access, cpl, efer, cr0, expected):
    lab = Lab("vmx")
    lab.gmap(GVA, GPA, leaf)
    r = translate(mem=lab.mem, arch="vmx", gva=GVA, access=access, cpl=cpl, cr0=cr0, cr3=lab.cr3, cr4=CR4,
                  efer=efer, slat_root=lab.root)
    if expected is None:
        assert (r.kind, r.hpa) == ("ok", GPA)
    else:
        assert (r.kind, r.error_code) == ("guest_pf", expected)


def test_guest_upper_level_not_present_and_large_page_reserved():
    lab = Lab("svm")
    # SDM 4.7: a not-present PDPTE; error code W|U for a user write, P=0.
    _set(lab, lab.cr3 + 8 * ((GVA >> 39) & 0x1FF), 0)
    r = lab.go("write", cpl=3)
    assert (r.kind, r.error_code, r.level) == ("guest_pf", 0x6, 4)
    # SDM 4.5 table 4-17: a 2-MByte PDE has bits 20:13 reserved -> P|RSVD.
    lab2 = Lab("svm")
    pdpt = lab2.mem.read_u64(lab2.cr3 + 8 * ((GVA >> 39) & 0x1FF)) & 0xFFFFFFFFFF000
    pd = lab2.mem.read_u64(pdpt + 8 * ((GVA >> 30) & 0x1FF)) & 0xFFFFFFFFFF000
    _set(lab2, pd + 8 * ((GVA >> 21) & 0x1FF), 0x200000 | PS | P | RW | A | D)
    assert lab2.go("read").hpa == 0x200000 | (GVA & 0x1FFFFF)
    _set(lab2, pd + 8 * ((GVA >> 21) & 0x1FF), 0x200000 | (1 << 14) | PS | P | RW | A | D)
    r = lab2.go("read")
    assert (r.kind, r.error_code) == ("guest_pf", 0x9)


# ---------------------------------------------------------------------------------------------
# Decoders: SDM appendix B (field encodings), appendix C (exit reasons), table 28-3/28-5
# (CR access, I/O qualifications); APM appendix B / Linux svm.h (VMCB layout, exit codes)

@pytest.mark.parametrize("encoding,name,width,type_", [
    (0x2400, "GUEST_PHYSICAL_ADDRESS", 64, "VM-exit information"),
    (0x4402, "VM_EXIT_REASON", 32, "VM-exit information"),
    (0x4404, "VM_EXIT_INTR_INFO", 32, "VM-exit information"),
    (0x6400, "EXIT_QUALIFICATION", "natural", "VM-exit information"),
    (0x640A, "GUEST_LINEAR_ADDRESS", "natural", "VM-exit information"),
    (0x6802, "GUEST_CR3", "natural", "guest-state"),
    (0x0000, "VIRTUAL_PROCESSOR_ID", 16, "control"),
])
def test_vmcs_field_encodings(encoding, name, width, type_):
    info = vmcs.field_info(encoding)
    assert (info["name"], info["width"], info["type"]) == (name, width, type_)


@pytest.mark.parametrize("reason,name", [
    (0, "EXCEPTION_NMI"), (10, "CPUID"), (18, "VMCALL"), (28, "CR_ACCESS"), (30, "IO_INSTRUCTION"),
    (48, "EPT_VIOLATION"), (49, "EPT_MISCONFIG"),
])
def test_vmx_basic_exit_reasons(reason, name):
    assert vmcs.decode_exit_reason(reason)["name"] == name


def test_vmx_qualification_decoders():
    # Table 28-3: mov %cr0, %rax (MOV from CR, type 1) -> CR 0, GPR 0 (RAX); CLTS is type 2.
    d = vmcs.decode_cr_access(0x10)
    assert (d["cr"], d["access"], d["gpr"]) == (0, "MOV from CR", "RAX")
    # Table 28-5: outw %ax, $0x70: size 2 (encoded 1), out (bit 3 = 0), immediate operand (bit 6 = 1), port 0x70.
    d = vmcs.decode_io(0x1 | (1 << 6) | (0x70 << 16))
    assert (d["size"], d["direction"], d["port"], d["operand"]) == (2, "out", 0x70, "immediate")
    # Table 25-19: interruption info 0x80000202 = valid, NMI (type 2), vector 2.
    d = vmcs.decode_interruption_info(0x80000202)
    assert d["type"] == "NMI" and d["vector"] == 2 and d["valid"]
    # Table 28-7 decode of a qualification built from its named bits.
    q = E.decode_qualification(E.Q_WRITE | E.Q_READABLE | E.Q_GLA_VALID | E.Q_GLA_TRANSLATED)
    assert q["data write"] and q["readable"] and not q["writable"] and q["access to the translated linear address"]


@pytest.mark.parametrize("code,name", [
    (0x13, "WRITE_CR3"), (0x400, "NPF"), (0x81, "VMMCALL"), (0x72, "CPUID"), (0x78, "HLT"), (0x7B, "IOIO"),
    (0x7C, "MSR"), (0x80, "VMRUN"), (0x4E, "EXCP_14"), (0x60, "INTR"), (0xFFFFFFFFFFFFFFFF, "INVALID"),
])
def test_svm_exit_codes(code, name):
    # Linux svm.h SVM_EXIT_* / APM appendix C: #PF intercept is SVM_EXIT_EXCP_BASE (0x40) + 14.
    assert vmcb.exit_name(code) == name


def test_vmcb_offsets_follow_svm_h():
    # Linux svm.h struct vmcb_control_area / vmcb_save_area (offsets in the 4 KiB VMCB).
    raw = bytearray(4096)
    fields = {0x058: (4, 7), 0x080: (8, 0xFEE00000), 0x400 + 0x0D0: (8, 0xD01), 0x400 + 0x150: (8, 0x1234000),
              0x400 + 0x1F8: (8, 0xABCD), 0x400 + 0x1D8: (8, 0xFFFFC90000123000)}
    for off, (n, v) in fields.items():
        raw[off:off + n] = v.to_bytes(n, "little")
    d = vmcb.decode(bytes(raw))
    assert (d["control"]["asid"], d["control"]["exit_info_2"]) == (7, 0xFEE00000)
    assert (d["save"]["efer"], d["save"]["cr3"], d["save"]["rax"], d["save"]["rsp"]) == \
        (0xD01, 0x1234000, 0xABCD, 0xFFFFC90000123000)


# ---------------------------------------------------------------------------------------------
# Properties: any value in the final EPT PTE / nPTE is classified as the manuals say. The oracle
# below is the rule list of SDM 29.3.2-29.3.3 (EPT PTE, table 29-6) and APM 15.25.5-15.25.6 with
# 5.3.3 figure 5-22 (4-KByte PTE), written independently of the model's code.

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from splitdbg.vmx_model.common import Step  # noqa: E402

_interesting_bits = st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 46, 47, 48, 50, 51, 52, 58, 62, 63]),
                             max_size=8)


def _ept_oracle(entry, access):
    """(kind, bits 5:3 of the qualification) for a final EPT PTE, default Caps (MAXPHYADDR 46,
    execute-only supported, no MBEC): SDM 29.3.2 (present = bits 2:0), 29.3.3.1, 29.3.3.2."""
    if not entry & 7:
        return "ept_violation", 0
    if entry & 2 and not entry & 1:
        return "ept_misconfig", None
    if (entry >> 3) & 7 in (2, 3, 7):
        return "ept_misconfig", None
    if entry & (((1 << 52) - 1) & ~((1 << 46) - 1)):
        return "ept_misconfig", None
    need = {"read": 1, "write": 2, "fetch": 4}[access]
    return ("ok", None) if entry & need else ("ept_violation", (entry & 7) << 3)


@settings(max_examples=300, deadline=None)
@given(bits=_interesting_bits, access=st.sampled_from(["read", "write", "fetch"]))
def test_property_ept_final_pte_classification(bits, access):
    entry = GPA
    for b in bits:
        entry ^= 1 << b
    lab = Lab("vmx")
    lab.gmap(GVA, GPA, P | RW | A | D)
    lab.mem.write_u64(lab.slat_entry(GPA), entry)
    r = lab.go(access)
    kind, rwx = _ept_oracle(entry, access)
    assert r.kind == kind, (hex(entry), r.reason)
    if kind == "ept_violation":
        assert r.qualification & 0x38 == rwx and r.qualification & 0x180 == 0x180
    if kind == "ept_misconfig":
        assert r.reason and r.qualification is None
    if kind == "ok":
        assert r.hpa == (entry & ((1 << 46) - 1) & ~0xFFF) | (GPA & 0xFFF)
    assert all(isinstance(s, Step) and s.walk in ("guest", "ept") and 1 <= s.level <= 5 for s in r.steps)


def _npt_oracle(entry, access, host_nxe=True):
    """EXITINFO1 (None: no fault) for a final nPTE, MAXPHYADDR 48, host EFER.NXE=1: APM 15.25.6
    (bit 32; US always; RW for writes; ID for fetches with NXE), 5.3.3 (bits 51:48 MBZ) and 8.4.2."""
    code = 4 | (2 if access == "write" else 0) | (16 if access == "fetch" and host_nxe else 0)
    if not entry & 1:
        return (1 << 32) | code
    if entry & (((1 << 52) - 1) & ~((1 << 48) - 1)):
        return (1 << 32) | code | 8 | 1
    if not entry & 4 or (access == "write" and not entry & 2) or (access == "fetch" and entry >> 63):
        return (1 << 32) | code | 1
    return None


@settings(max_examples=300, deadline=None)
@given(bits=_interesting_bits, access=st.sampled_from(["read", "write", "fetch"]))
def test_property_npt_final_pte_classification(bits, access):
    entry = GPA | P | RW | US
    for b in bits:
        entry ^= 1 << b
    lab = Lab("svm")
    lab.mem.write_u64(lab.slat_entry(GPA), entry)
    r = lab.go(access)
    expected = _npt_oracle(entry, access)
    if expected is None:
        assert (r.kind, r.hpa) == ("ok", (entry & ((1 << 48) - 1) & ~0xFFF) | (GPA & 0xFFF)), hex(entry)
    else:
        assert (r.kind, r.exitinfo1, r.exitinfo2) == ("npf", expected, GPA), (hex(entry), r.reason)
    assert all(isinstance(s, Step) and s.walk in ("guest", "npt") for s in r.steps)
