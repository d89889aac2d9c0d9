"""The VMX/EPT and SVM/NPT model against published values and the manuals' rules.

Expected values come from kvm-unit-tests (run on real AMD hardware; ../shared/REFERENCE.md) and
from the SDM/APM sections cited in each test, worked out by hand here."""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitdbg.mem.synthetic import SyntheticMemory
from splitdbg.vmx_model import Caps, ModelError, slat_ranges, translate
from splitdbg.vmx_model import ept as E
from splitdbg.vmx_model import npt as N
from splitdbg.vmx_model import vmcb, vmcs

P, RW, US, A, D, PS = 1, 2, 4, 1 << 5, 1 << 6, 1 << 7
XD = 1 << 63
CR0 = (1 << 31) | (1 << 16) | 1          # PG, WP, PE
CR4 = 1 << 5                             # PAE
EFER = (1 << 8) | (1 << 10) | (1 << 11)  # LME, LMA, NXE
GVA = 0x400000
GPA = 0x500000                           # where GVA maps, 4 KiB page


class Lab:
    """Guest tables at GPAs 0x100000.., second-level tables at 0x800000.., identity SLAT of 4 KiB
    pages over the first 8 MiB (all nested entries U=1, as in kvm-unit-tests)."""

    def __init__(self, arch, levels=4, eptp_ad=False, slat_perm=None):
        self.arch, self.mem = arch, SyntheticMemory(64 << 20)
        self.next = 0x800000
        self.slat_root = self._alloc()
        full = (E.R | E.W | E.X | (6 << 3)) if arch == "vmx" else (P | RW | US)
        self.slat_perm = slat_perm if slat_perm is not None else full
        self.slat_levels = levels
        for gpa in range(0, 8 << 20, 0x1000):
            self.slat_map(gpa, gpa, self.slat_perm)
        self.g_next, self.cr3 = 0x100000, 0
        self.cr3 = self._galloc()
        self.gmap(GVA, GPA, P | RW | A | D)

    def _alloc(self):
        pa, self.next = self.next, self.next + 0x1000
        return pa

    def _galloc(self):
        pa, self.g_next = self.g_next, self.g_next + 0x1000
        return pa

    def slat_map(self, gpa, hpa, leaf):
        upper = (E.R | E.W | E.X) if self.arch == "vmx" else (P | RW | US)
        table = self.slat_root
        for level in range(self.slat_levels, 1, -1):
            a = table + 8 * ((gpa >> (12 + 9 * (level - 1))) & 0x1FF)
            e = self.mem.read_u64(a)
            if not e:
                e = self._alloc() | upper
                self.mem.write_u64(a, e)
            table = e & 0xFFFFFFFFFF000
        self.mem.write_u64(table + 8 * ((gpa >> 12) & 0x1FF), hpa | leaf)

    def slat_entry(self, gpa, level=1):
        table = self.slat_root
        for lv in range(self.slat_levels, level, -1):
            table = self.mem.read_u64(table + 8 * ((gpa >> (12 + 9 * (lv - 1))) & 0x1FF)) & 0xFFFFFFFFFF000
        return table + 8 * ((gpa >> (12 + 9 * (level - 1))) & 0x1FF)

    def gmap(self, va, pa, leaf, upper=P | RW | US | A):
        table = self.cr3
        for level in (4, 3, 2):
            a = table + 8 * ((va >> (12 + 9 * (level - 1))) & 0x1FF)
            e = self.mem.read_u64(a)
            if not e:
                e = self._galloc() | upper
                self.mem.write_u64(a, e)
            table = e & 0xFFFFFFFFFF000
        self.mem.write_u64(table + 8 * ((va >> 12) & 0x1FF), pa | leaf)
        return table + 8 * ((va >> 12) & 0x1FF)

    @property
    def root(self):
        if self.arch == "vmx":
            return self.slat_root | 6 | ((self.slat_levels - 1) << 3)
        return self.slat_root

    def go(self, access="read", cpl=0, cr4=CR4, **kw):
        return translate(mem=self.mem, arch=self.arch, gva=kw.pop("gva", GVA), access=access, cpl=cpl, cr0=CR0,
                         cr3=self.cr3, cr4=cr4, efer=EFER, slat_root=kw.pop("root", self.root), **kw)


# ---------------------------------------------------------------------------------------------
# AMD NPT: kvm-unit-tests x86/svm_tests.c expected EXITINFO1 values (real hardware)

@pytest.mark.parametrize("change,access,expected", [
    (lambda e: 0, "read", 0x100000004),            # npt_np: final nPTE not present
    (lambda e: e & ~RW, "write", 0x100000007),     # npt_rw: write to read-only
    (lambda e: e | XD, "fetch", 0x100000015),      # npt_nx: fetch from NX (host EFER.NXE=1)
    (lambda e: e & ~US, "read", 0x100000005),      # npt_us: nPTE with U=0
])
def test_npt_final_access_kvm_unit_tests(change, access, expected):
    lab = Lab("svm")
    a = lab.slat_entry(GPA)
    lab.mem.write_u64(a, change(lab.mem.read_u64(a)))
    r = lab.go(access)
    assert (r.kind, r.exitinfo1, r.exitinfo2) == ("npf", expected, GPA)
    assert not r.during_guest_walk


def test_npt_guest_page_table_read_only_kvm_unit_tests():
    # npt_rw_pfwalk: the guest's top-level table read-only in the NPT; EXITINFO2 = guest CR3.
    lab = Lab("svm")
    a = lab.slat_entry(lab.cr3)
    lab.mem.write_u64(a, lab.mem.read_u64(a) & ~RW)
    r = lab.go("read")
    assert (r.kind, r.exitinfo1, r.exitinfo2) == ("npf", 0x200000007, lab.cr3)
    assert r.during_guest_walk and r.steps[-1].walk == "npt"


def test_npt_reserved_bit_architecture_vs_qemu():
    # APM 15.25.6 / 8.4.2: a reserved-bit fault reports P=1 and RSV=1. QEMU 7.2 drops P.
    lab = Lab("svm")
    a = lab.slat_entry(GPA)
    lab.mem.write_u64(a, lab.mem.read_u64(a) | (1 << 50))  # above MAXPHYADDR 48
    arch = lab.go("read")
    assert arch.exitinfo1 == 0x10000000D and not arch.quirks_applied
    qemu = lab.go("read", quirks="qemu-tcg-7.2")
    assert qemu.exitinfo1 == 0x10000000C and qemu.quirks_applied


def test_npt_pml4e_bit8_is_reserved_on_amd_but_not_in_qemu():
    # APM figure 5-18: bits 8:7 of a PML4E are MBZ.
    lab = Lab("svm")
    a = lab.slat_entry(GPA, level=4)
    lab.mem.write_u64(a, lab.mem.read_u64(a) | (1 << 8))
    r = lab.go("read")
    assert r.kind == "npf" and r.exitinfo1 & N.PF_RSV and r.level == 4
    assert lab.go("read", quirks="qemu-tcg-7.2").kind == "ok"


@pytest.mark.parametrize("host_efer,host_cr4,profile,expected", [
    (0, 0, None, 0x100000004),                  # no NX, no SMEP: no I/D bit
    (0, 0, "bochs-2.7", 0x100000014),           # Bochs sets it anyway
    (0, 1 << 20, None, 0x100000014),            # SMEP alone makes fetches report I/D
    (0, 1 << 20, "qemu-tcg-7.2", 0x100000004),  # QEMU ignores host SMEP here
    (1 << 11, 0, None, 0x100000014),
])
def test_npt_id_bit_depends_on_host_nxe_and_smep(host_efer, host_cr4, profile, expected):
    lab = Lab("svm")
    lab.mem.write_u64(lab.slat_entry(GPA), 0)
    r = lab.go("fetch", host_efer=host_efer, host_cr4=host_cr4, quirks=profile)
    assert r.exitinfo1 == expected


def test_npt_success_records_every_step():
    lab = Lab("svm")
    r = lab.go("write")
    assert (r.kind, r.gpa, r.hpa) == ("ok", GPA, GPA)
    # 4 guest levels, each behind a 4-level nested walk, then the final nested walk.
    assert [s.walk for s in r.steps] == (["npt"] * 4 + ["guest"]) * 4 + ["npt"] * 4
    assert "translates" in r.explain()


# ---------------------------------------------------------------------------------------------
# Intel EPT: SDM vol. 3C 29.3.3 and table 28-7 (exit qualification for EPT violations)

GUEST_W_ADVANCED = E.Q_GLA_VALID | E.Q_GLA_TRANSLATED | E.Q_GLA_WRITABLE   # supervisor page, W=1, not XD


@pytest.mark.parametrize("leaf,access,expected", [
    (0, "read", E.Q_READ | GUEST_W_ADVANCED),                                      # not present: bits 5:3 = 0
    (E.R | E.X | (6 << 3), "write", E.Q_WRITE | E.Q_READABLE | E.Q_EXECUTABLE | GUEST_W_ADVANCED),
    (E.R | E.W | (6 << 3), "fetch", E.Q_FETCH | E.Q_READABLE | E.Q_WRITABLE | GUEST_W_ADVANCED),
    (E.X | (6 << 3), "read", E.Q_READ | E.Q_EXECUTABLE | GUEST_W_ADVANCED),         # execute-only page
])
def test_ept_violation_qualification(leaf, access, expected):
    lab = Lab("vmx")
    lab.mem.write_u64(lab.slat_entry(GPA), (GPA | leaf) if leaf else 0)
    r = lab.go(access)
    assert (r.kind, r.qualification, r.gpa, r.guest_linear) == ("ept_violation", expected, GPA, GVA)


def test_ept_advanced_exit_info_reports_the_guest_linear_permissions():
    lab = Lab("vmx")
    lab.gmap(GVA, GPA, P | US | A | XD)           # user, read-only, execute-disable
    lab.mem.write_u64(lab.slat_entry(GPA), 0)
    r = lab.go("read", cpl=3)
    assert r.qualification == E.Q_READ | E.Q_GLA_VALID | E.Q_GLA_TRANSLATED | E.Q_GLA_USER | E.Q_GLA_XD
    no_adv = lab.go("read", cpl=3, caps=Caps(ept_advanced_exit_info=False))
    assert no_adv.qualification == E.Q_READ | E.Q_GLA_VALID | E.Q_GLA_TRANSLATED


def test_ept_guest_paging_structure_access_with_and_without_ad():
    # Guest PML4 page read+execute only in EPT. Without EPT A/D the walker only reads it: fine.
    lab = Lab("vmx")
    lab.mem.write_u64(lab.slat_entry(lab.cr3), lab.cr3 | E.R | E.X | (6 << 3))
    assert lab.go("read").kind == "ok"
    # With EPT A/D (EPTP bit 6) guest paging-structure accesses are writes: both bits 0 and 1, bit 8 clear.
    r = lab.go("read", root=lab.root | E.EPTP_AD)
    assert r.kind == "ept_violation" and r.during_guest_walk and r.gpa == lab.cr3
    assert r.qualification == E.Q_READ | E.Q_WRITE | E.Q_READABLE | E.Q_EXECUTABLE | E.Q_GLA_VALID
    # Bochs 2.7 does not fault on those A/D updates.
    assert lab.go("read", root=lab.root | E.EPTP_AD, quirks="bochs-2.7").kind == "ok"


@pytest.mark.parametrize("entry,caps,why", [
    (E.W | (6 << 3), Caps(), "write permission without read"),
    (E.X | (6 << 3), Caps(ept_execute_only=False), "execute-only"),
    (E.R | (2 << 3), Caps(), "memory type 2"),
    (E.R | (7 << 3), Caps(), "memory type 7"),
    (E.R | (6 << 3) | (1 << 47), Caps(), "reserved address bits"),
])
def test_ept_misconfigurations(entry, caps, why):
    lab = Lab("vmx")
    lab.mem.write_u64(lab.slat_entry(GPA), GPA | entry)
    r = lab.go("read", caps=caps)
    assert r.kind == "ept_misconfig" and why in r.reason and r.qualification is None and r.gpa == GPA


def test_ept_misconfig_beats_permissions_and_not_present_beats_misconfig():
    lab = Lab("vmx")
    # A non-present entry's other bits are ignored (SDM 29.3.2): W-without-R in bits above is no misconfig.
    lab.mem.write_u64(lab.slat_entry(GPA), GPA | (2 << 3))
    assert lab.go("read").kind == "ept_violation"
    # PDE referencing a table with reserved bits 6:3 set is a misconfiguration.
    pde = lab.slat_entry(GPA, level=2)
    lab.mem.write_u64(pde, lab.mem.read_u64(pde) | (1 << 4))
    assert lab.go("read").kind == "ept_misconfig"


def test_ept_five_level_and_invalid_eptp():
    lab = Lab("vmx", levels=5)
    assert lab.go("read").hpa == GPA
    with pytest.raises(ModelError, match="memory type"):
        lab.go("read", root=lab.slat_root | (1 << 3) * 3 | 5)
    with pytest.raises(ModelError, match="page-walk length"):
        lab.go("read", root=lab.slat_root | 6 | (4 << 3), caps=Caps(ept_5level=False))


def test_ept_mode_based_execute_control():
    # SDM 29.3.3.2: with MBEC, fetches from user-mode linear addresses need XU (bit 10), others X.
    lab = Lab("vmx")
    lab.gmap(GVA, GPA, P | US | A)
    lab.mem.write_u64(lab.slat_entry(GPA), GPA | E.R | E.X | (6 << 3))
    mbec = Caps(mbec=True)
    r = lab.go("fetch", cpl=3, caps=mbec)
    assert r.kind == "ept_violation" and r.qualification & E.Q_EXECUTABLE and not r.qualification & E.Q_USER_EXECUTABLE
    lab.mem.write_u64(lab.slat_entry(GPA), GPA | E.R | E.XU | (6 << 3))
    # XU is ANDed over the walk like R/W/X: the upper entries lack it so far.
    assert lab.go("fetch", cpl=3, caps=mbec).kind == "ept_violation"
    for level in (4, 3, 2):
        a = lab.slat_entry(GPA, level)
        lab.mem.write_u64(a, lab.mem.read_u64(a) | E.XU)
    assert lab.go("fetch", cpl=3, caps=mbec).kind == "ok"


# ---------------------------------------------------------------------------------------------
# Guest paging (SDM 4.6, 4.7): #PF error codes

def test_guest_page_fault_error_codes():
    lab = Lab("svm")
    lab.gmap(GVA, GPA, 0)                                 # not present
    assert lab.go("write", cpl=3).error_code == 0x6                      # W | U, P=0
    lab.gmap(GVA, GPA | (1 << 50), P | RW | A)             # reserved address bit
    r = lab.go("read")
    assert (r.kind, r.error_code) == ("guest_pf", 0x9)
    assert lab.go("read", quirks="qemu-tcg-7.2").error_code == 0x8
    lab.gmap(GVA, GPA, P | RW | US | A)                    # user page
    assert lab.go("fetch", cr4=CR4 | (1 << 20)).error_code == 0x11        # SMEP: P | I/D
    assert lab.go("read", cr4=CR4 | (1 << 21)).error_code == 0x1          # SMAP, AC=0
    assert lab.go("read", cr4=CR4 | (1 << 21), rflags=1 << 18).kind == "ok"
    lab.gmap(GVA, GPA, P | A)                              # read-only supervisor page
    assert lab.go("write").error_code == 0x3                               # CR0.WP=1
    assert lab.go("read", cpl=3).error_code == 0x5                         # user -> supervisor


def test_non_canonical_and_unsupported_modes_are_model_errors():
    lab = Lab("svm")
    with pytest.raises(ModelError, match="canonical"):
        lab.go("read", gva=0x0000800000000000)
    with pytest.raises(ModelError, match="only IA-32e"):
        translate(mem=lab.mem, arch="svm", gva=0, access="read", cpl=0, cr0=CR0, cr3=lab.cr3, cr4=0, efer=0,
                  slat_root=lab.root)
    with pytest.raises(ModelError, match="quirk profile"):
        lab.go("read", quirks="nope")


# ---------------------------------------------------------------------------------------------
# Ranges

@pytest.mark.parametrize("arch", ["vmx", "svm"])
def test_slat_ranges_merge_and_split(arch):
    lab = Lab(arch)
    ro = (E.R | (6 << 3)) if arch == "vmx" else (P | US)
    lab.slat_map(0x3000, 0x3000, ro)
    lab.slat_map(0x5000, 0x900000, lab.slat_perm)          # remapped: breaks physical contiguity
    rs = list(slat_ranges(lab.mem, arch, lab.root))
    assert [(r.start, r.end, r.hpa) for r in rs] == [
        (0, 0x3000, 0), (0x3000, 0x4000, 0x3000), (0x4000, 0x5000, 0x4000), (0x5000, 0x6000, 0x900000),
        (0x6000, 8 << 20, 0x6000)]
    full, readonly = ("rwx", "r--") if arch == "vmx" else ("rwxu", "r-xu")
    assert [r.perms for r in rs] == [full, readonly, full, full, full]


def test_slat_ranges_cyclic_is_a_model_error():
    lab = Lab("svm")
    a = lab.slat_entry(0, level=3)
    lab.mem.write_u64(a, lab.slat_root | P | RW | US)
    with pytest.raises(ModelError, match="cyclic"):
        list(slat_ranges(lab.mem, "svm", lab.root))


# ---------------------------------------------------------------------------------------------
# Decoders

def test_vmcs_encodings_and_qualifications():
    assert vmcs.field_info(0x201A) == {"name": "EPT_POINTER", "high": False, "index": 13, "type": "control", "width": 64}
    assert vmcs.field_info(0x6400)["width"] == "natural" and vmcs.field_info(0x4402)["type"] == "VM-exit information"
    assert vmcs.field_info(0x2401)["name"] == "GUEST_PHYSICAL_ADDRESS_HIGH"
    assert vmcs.decode_exit_reason(48)["name"] == "EPT_VIOLATION"
    assert vmcs.decode_exit_reason(0x80000021)["entry_failure"] and vmcs.decode_exit_reason(33)["name"] == "INVALID_STATE"
    # mov %rbx, %cr3 -> CR 3, access type 0, GPR 3 (SDM table 28-3)
    assert vmcs.decode_cr_access(0x303) == {"cr": 3, "access": "MOV to CR", "lmsw_operand": "register", "gpr": "RBX",
                                            "lmsw_source": 0}
    assert vmcs.decode_io(0x3F80008) == {"size": 1, "direction": "in", "string": False, "rep": False, "operand": "DX",
                                         "port": 0x3F8}
    pf = vmcs.decode_exception_exit(0xDEAD000, 0x80000B0E, 2)
    assert (pf["name"], pf["type"], pf["linear_address"], pf["error_code"]) == ("#PF", "hardware exception", 0xDEAD000, 2)


def test_vmcb_decode():
    raw = bytearray(4096)
    raw[0x00C:0x010] = (1 << 18).to_bytes(4, "little")         # CPUID intercept
    raw[0x010:0x014] = 0b11.to_bytes(4, "little")              # VMRUN, VMMCALL
    raw[0x000:0x004] = (1 << (16 + 3)).to_bytes(4, "little")   # CR3 write
    raw[0x070:0x078] = (0x400).to_bytes(8, "little")
    raw[0x078:0x080] = (0x100000007).to_bytes(8, "little")
    raw[0x090:0x098] = (1).to_bytes(8, "little")
    raw[0x0B0:0x0B8] = (0x1234000).to_bytes(8, "little")
    raw[0x400 + 0x178:0x400 + 0x180] = (0xFFFFFFFF81000000).to_bytes(8, "little")
    raw[0x400 + 0x10:0x400 + 0x12] = (0x10).to_bytes(2, "little")   # CS selector
    d = vmcb.decode(bytes(raw))
    c = d["control"]
    assert c["decoded"]["exit"] == "NPF" and c["exit_info_1"] == 0x100000007 and c["nested_cr3"] == 0x1234000
    assert c["decoded"]["cr_write_intercepts"] == [3] and c["decoded"]["intercepts"] == ["CPUID", "VMRUN", "VMMCALL"]
    assert c["decoded"]["np_enable"] and d["save"]["rip"] == 0xFFFFFFFF81000000 and d["save"]["cs"]["selector"] == 0x10
    assert vmcb.exit_name(0xFFFFFFFFFFFFFFFF) == "INVALID" and vmcb.exit_name(0x13) == "WRITE_CR3"


# ---------------------------------------------------------------------------------------------
# Properties: random well-formed and malformed tables

@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), arch=st.sampled_from(["vmx", "svm"]), access=st.sampled_from(["read", "write", "fetch"]),
       cpl=st.sampled_from([0, 3]))
def test_property_never_crashes_and_names_outcomes(seed, arch, access, cpl):
    rnd = random.Random(seed)
    lab = Lab(arch)
    # Scribble: random bits into random table entries of both levels, including pointers to tables.
    tables = list(range(0x800000, lab.next, 0x1000)) + list(range(0x100000, lab.g_next, 0x1000))
    for _ in range(rnd.randint(0, 12)):
        t = rnd.choice(tables)
        target = rnd.choice(tables + [rnd.getrandbits(40) & ~0xFFF])
        lab.mem.write_u64(t + 8 * rnd.randrange(512), rnd.choice([rnd.getrandbits(64), target | rnd.getrandbits(12),
                                                                  target | 0x7, target | (1 << 63) | 0x87]))
    try:
        r = lab.go(access, cpl=cpl, gva=rnd.choice([GVA, rnd.getrandbits(47)]))
    except ModelError:
        return
    except Exception as exc:  # reading a table outside RAM is the memory layer's own error
        from splitdbg.errors import MemoryReadError
        assert isinstance(exc, MemoryReadError)
        return
    assert r.kind in ("ok", "guest_pf", "ept_violation", "ept_misconfig", "npf")
    assert len(r.steps) <= 5 * 6 + 5
    if r.kind == "npf":
        assert r.exitinfo1 >> 32 in (1, 2) and r.exitinfo2 == r.gpa and r.exitinfo1 & N.PF_US
    if r.kind == "ept_violation":
        assert r.qualification & 7 and r.qualification & E.Q_GLA_VALID
    if r.kind == "ept_misconfig":
        assert r.reason
    assert r.explain()
