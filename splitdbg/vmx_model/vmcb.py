"""The VMCB (AMD APM vol. 2 appendix B), decoded from raw bytes with the manual's names, as
Linux's arch/x86/include/asm/svm.h spells them; SVM exit codes (appendix C)."""
from __future__ import annotations

import struct

# (name, offset, format) of the control area (table B-1), packed little-endian.
CONTROL = [
    ("intercept_cr", 0x000, "I"), ("intercept_dr", 0x004, "I"), ("intercept_exceptions", 0x008, "I"),
    ("intercept_word3", 0x00C, "I"), ("intercept_word4", 0x010, "I"), ("intercept_word5", 0x014, "I"),
    ("pause_filter_thresh", 0x03C, "H"), ("pause_filter_count", 0x03E, "H"), ("iopm_base_pa", 0x040, "Q"),
    ("msrpm_base_pa", 0x048, "Q"), ("tsc_offset", 0x050, "Q"), ("asid", 0x058, "I"), ("tlb_ctl", 0x05C, "B"),
    ("int_ctl", 0x060, "I"), ("int_vector", 0x064, "I"), ("int_state", 0x068, "I"), ("exit_code", 0x070, "Q"),
    ("exit_info_1", 0x078, "Q"), ("exit_info_2", 0x080, "Q"), ("exit_int_info", 0x088, "I"),
    ("exit_int_info_err", 0x08C, "I"), ("nested_ctl", 0x090, "Q"), ("avic_vapic_bar", 0x098, "Q"),
    ("ghcb_gpa", 0x0A0, "Q"), ("event_inj", 0x0A8, "I"), ("event_inj_err", 0x0AC, "I"), ("nested_cr3", 0x0B0, "Q"),
    ("virt_ext", 0x0B8, "Q"), ("clean", 0x0C0, "I"), ("next_rip", 0x0C8, "Q"), ("insn_len", 0x0D0, "B"),
    ("avic_backing_page", 0x0E0, "Q"), ("avic_logical_id", 0x0F0, "Q"), ("avic_physical_id", 0x0F8, "Q"),
    ("vmsa_pa", 0x108, "Q"),
]
SAVE_BASE = 0x400
SEGMENTS = ["es", "cs", "ss", "ds", "fs", "gs", "gdtr", "ldtr", "idtr", "tr"]  # 16 bytes each from 0x400
SAVE = [
    ("cpl", 0x0CB, "B"), ("efer", 0x0D0, "Q"), ("cr4", 0x148, "Q"), ("cr3", 0x150, "Q"), ("cr0", 0x158, "Q"),
    ("dr7", 0x160, "Q"), ("dr6", 0x168, "Q"), ("rflags", 0x170, "Q"), ("rip", 0x178, "Q"), ("rsp", 0x1D8, "Q"),
    ("s_cet", 0x1E0, "Q"), ("ssp", 0x1E8, "Q"), ("isst_addr", 0x1F0, "Q"), ("rax", 0x1F8, "Q"), ("star", 0x200, "Q"),
    ("lstar", 0x208, "Q"), ("cstar", 0x210, "Q"), ("sfmask", 0x218, "Q"), ("kernel_gs_base", 0x220, "Q"),
    ("sysenter_cs", 0x228, "Q"), ("sysenter_esp", 0x230, "Q"), ("sysenter_eip", 0x238, "Q"), ("cr2", 0x240, "Q"),
    ("g_pat", 0x268, "Q"), ("dbgctl", 0x270, "Q"), ("br_from", 0x278, "Q"), ("br_to", 0x280, "Q"),
    ("last_excp_from", 0x288, "Q"), ("last_excp_to", 0x290, "Q"),
]
VMCB_SIZE = 0x1000

INTERCEPT_WORD3 = ["INTR", "NMI", "SMI", "INIT", "VINTR", "SELECTIVE_CR0", "STORE_IDTR", "STORE_GDTR", "STORE_LDTR",
                   "STORE_TR", "LOAD_IDTR", "LOAD_GDTR", "LOAD_LDTR", "LOAD_TR", "RDTSC", "RDPMC", "PUSHF", "POPF",
                   "CPUID", "RSM", "IRET", "INTn", "INVD", "PAUSE", "HLT", "INVLPG", "INVLPGA", "IOIO_PROT",
                   "MSR_PROT", "TASK_SWITCH", "FERR_FREEZE", "SHUTDOWN"]
INTERCEPT_WORD4 = ["VMRUN", "VMMCALL", "VMLOAD", "VMSAVE", "STGI", "CLGI", "SKINIT", "RDTSCP", "ICEBP", "WBINVD",
                   "MONITOR", "MWAIT", "MWAIT_COND", "XSETBV", "RDPRU", "EFER_WRITE_TRAP"] + \
                  [f"CR{i}_WRITE_TRAP" for i in range(16)]

EXIT_CODES = {**{i: f"READ_CR{i}" for i in range(16)}, **{0x10 + i: f"WRITE_CR{i}" for i in range(16)},
              **{0x20 + i: f"READ_DR{i}" for i in range(16)}, **{0x30 + i: f"WRITE_DR{i}" for i in range(16)},
              **{0x40 + i: f"EXCP_{i}" for i in range(32)},
              0x60: "INTR", 0x61: "NMI", 0x62: "SMI", 0x63: "INIT", 0x64: "VINTR", 0x65: "CR0_SEL_WRITE",
              0x66: "IDTR_READ", 0x67: "GDTR_READ", 0x68: "LDTR_READ", 0x69: "TR_READ", 0x6A: "IDTR_WRITE",
              0x6B: "GDTR_WRITE", 0x6C: "LDTR_WRITE", 0x6D: "TR_WRITE", 0x6E: "RDTSC", 0x6F: "RDPMC", 0x70: "PUSHF",
              0x71: "POPF", 0x72: "CPUID", 0x73: "RSM", 0x74: "IRET", 0x75: "SWINT", 0x76: "INVD", 0x77: "PAUSE",
              0x78: "HLT", 0x79: "INVLPG", 0x7A: "INVLPGA", 0x7B: "IOIO", 0x7C: "MSR", 0x7D: "TASK_SWITCH",
              0x7E: "FERR_FREEZE", 0x7F: "SHUTDOWN", 0x80: "VMRUN", 0x81: "VMMCALL", 0x82: "VMLOAD", 0x83: "VMSAVE",
              0x84: "STGI", 0x85: "CLGI", 0x86: "SKINIT", 0x87: "RDTSCP", 0x88: "ICEBP", 0x89: "WBINVD",
              0x8A: "MONITOR", 0x8B: "MWAIT", 0x8C: "MWAIT_COND", 0x8D: "XSETBV", 0x8E: "RDPRU",
              0x8F: "EFER_WRITE_TRAP", **{0x90 + i: f"CR{i}_WRITE_TRAP" for i in range(16)}, 0xA0: "INVPCID",
              0x400: "NPF", 0x401: "AVIC_INCOMPLETE_IPI", 0x402: "AVIC_UNACCELERATED_ACCESS", 0x403: "VMGEXIT",
              0xFFFFFFFFFFFFFFFF: "INVALID", 0xFFFFFFFFFFFFFFFE: "BUSY"}


def exit_name(code: int) -> str:
    return EXIT_CODES.get(code & 0xFFFFFFFFFFFFFFFF, EXIT_CODES.get(code & 0xFFFFFFFF, f"exit {code:#x}"))


def _read(raw: bytes, table, base=0) -> dict:
    return {name: struct.unpack_from("<" + fmt, raw, base + off)[0] for name, off, fmt in table}


def decode(raw: bytes) -> dict:
    """A 4 KiB VMCB as {"control": {...}, "save": {...}} with the manual's names, plus decoded
    intercepts, interrupt control and the exit code's name."""
    if len(raw) < VMCB_SIZE:
        raise ValueError(f"a VMCB is {VMCB_SIZE} bytes, got {len(raw)}")
    control = _read(raw, CONTROL)
    save = _read(raw, SAVE, SAVE_BASE)
    for i, seg in enumerate(SEGMENTS):
        sel, attrib, limit, base = struct.unpack_from("<HHIQ", raw, SAVE_BASE + 16 * i)
        save[seg] = {"selector": sel, "attrib": attrib, "limit": limit, "base": base}
    ic = control["intercept_cr"]
    control["decoded"] = {
        "exit": exit_name(control["exit_code"]),
        "cr_read_intercepts": [i for i in range(16) if ic >> i & 1],
        "cr_write_intercepts": [i for i in range(16) if ic >> (16 + i) & 1],
        "exception_intercepts": [i for i in range(32) if control["intercept_exceptions"] >> i & 1],
        "intercepts": [n for i, n in enumerate(INTERCEPT_WORD3) if control["intercept_word3"] >> i & 1]
        + [n for i, n in enumerate(INTERCEPT_WORD4) if control["intercept_word4"] >> i & 1],
        "np_enable": bool(control["nested_ctl"] & 1),
        "v_intr_masking": bool(control["int_ctl"] & (1 << 24)), "v_gif_enable": bool(control["int_ctl"] & (1 << 25)),
        "v_irq": bool(control["int_ctl"] & (1 << 8)), "v_tpr": control["int_ctl"] & 0xFF,
    }
    return {"control": control, "save": save}
