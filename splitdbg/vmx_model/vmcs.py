"""VMCS field encodings (SDM vol. 3C appendix B), basic exit reasons (appendix C) and decoders of
exit qualifications (table 28-1 onwards). Names follow Linux's arch/x86/include/asm/vmx.h."""
from __future__ import annotations

from . import ept

WIDTHS = {0: 16, 1: 64, 2: 32, 3: "natural"}
TYPES = {0: "control", 1: "VM-exit information", 2: "guest-state", 3: "host-state"}

FIELDS = {
    0x0000: "VIRTUAL_PROCESSOR_ID", 0x0002: "POSTED_INTR_NV", 0x0004: "EPTP_INDEX",
    0x0800: "GUEST_ES_SELECTOR", 0x0802: "GUEST_CS_SELECTOR", 0x0804: "GUEST_SS_SELECTOR", 0x0806: "GUEST_DS_SELECTOR",
    0x0808: "GUEST_FS_SELECTOR", 0x080A: "GUEST_GS_SELECTOR", 0x080C: "GUEST_LDTR_SELECTOR", 0x080E: "GUEST_TR_SELECTOR",
    0x0810: "GUEST_INTR_STATUS", 0x0812: "GUEST_PML_INDEX",
    0x0C00: "HOST_ES_SELECTOR", 0x0C02: "HOST_CS_SELECTOR", 0x0C04: "HOST_SS_SELECTOR", 0x0C06: "HOST_DS_SELECTOR",
    0x0C08: "HOST_FS_SELECTOR", 0x0C0A: "HOST_GS_SELECTOR", 0x0C0C: "HOST_TR_SELECTOR",
    0x2000: "IO_BITMAP_A", 0x2002: "IO_BITMAP_B", 0x2004: "MSR_BITMAP", 0x2006: "VM_EXIT_MSR_STORE_ADDR",
    0x2008: "VM_EXIT_MSR_LOAD_ADDR", 0x200A: "VM_ENTRY_MSR_LOAD_ADDR", 0x200E: "PML_ADDRESS", 0x2010: "TSC_OFFSET",
    0x2012: "VIRTUAL_APIC_PAGE_ADDR", 0x2014: "APIC_ACCESS_ADDR", 0x2016: "POSTED_INTR_DESC_ADDR",
    0x2018: "VM_FUNCTION_CONTROL", 0x201A: "EPT_POINTER", 0x201C: "EOI_EXIT_BITMAP0", 0x201E: "EOI_EXIT_BITMAP1",
    0x2020: "EOI_EXIT_BITMAP2", 0x2022: "EOI_EXIT_BITMAP3", 0x2024: "EPTP_LIST_ADDRESS", 0x2026: "VMREAD_BITMAP",
    0x2028: "VMWRITE_BITMAP", 0x202A: "VE_INFORMATION_ADDRESS", 0x202C: "XSS_EXIT_BITMAP", 0x2032: "TSC_MULTIPLIER",
    0x2400: "GUEST_PHYSICAL_ADDRESS",
    0x2800: "VMCS_LINK_POINTER", 0x2802: "GUEST_IA32_DEBUGCTL", 0x2804: "GUEST_IA32_PAT", 0x2806: "GUEST_IA32_EFER",
    0x2808: "GUEST_IA32_PERF_GLOBAL_CTRL", 0x280A: "GUEST_PDPTR0", 0x280C: "GUEST_PDPTR1", 0x280E: "GUEST_PDPTR2",
    0x2810: "GUEST_PDPTR3", 0x2812: "GUEST_BNDCFGS",
    0x2C00: "HOST_IA32_PAT", 0x2C02: "HOST_IA32_EFER", 0x2C04: "HOST_IA32_PERF_GLOBAL_CTRL",
    0x4000: "PIN_BASED_VM_EXEC_CONTROL", 0x4002: "CPU_BASED_VM_EXEC_CONTROL", 0x4004: "EXCEPTION_BITMAP",
    0x4006: "PAGE_FAULT_ERROR_CODE_MASK", 0x4008: "PAGE_FAULT_ERROR_CODE_MATCH", 0x400A: "CR3_TARGET_COUNT",
    0x400C: "VM_EXIT_CONTROLS", 0x400E: "VM_EXIT_MSR_STORE_COUNT", 0x4010: "VM_EXIT_MSR_LOAD_COUNT",
    0x4012: "VM_ENTRY_CONTROLS", 0x4014: "VM_ENTRY_MSR_LOAD_COUNT", 0x4016: "VM_ENTRY_INTR_INFO_FIELD",
    0x4018: "VM_ENTRY_EXCEPTION_ERROR_CODE", 0x401A: "VM_ENTRY_INSTRUCTION_LEN", 0x401C: "TPR_THRESHOLD",
    0x401E: "SECONDARY_VM_EXEC_CONTROL", 0x4020: "PLE_GAP", 0x4022: "PLE_WINDOW",
    0x4400: "VM_INSTRUCTION_ERROR", 0x4402: "VM_EXIT_REASON", 0x4404: "VM_EXIT_INTR_INFO",
    0x4406: "VM_EXIT_INTR_ERROR_CODE", 0x4408: "IDT_VECTORING_INFO_FIELD", 0x440A: "IDT_VECTORING_ERROR_CODE",
    0x440C: "VM_EXIT_INSTRUCTION_LEN", 0x440E: "VMX_INSTRUCTION_INFO",
    0x4800: "GUEST_ES_LIMIT", 0x4802: "GUEST_CS_LIMIT", 0x4804: "GUEST_SS_LIMIT", 0x4806: "GUEST_DS_LIMIT",
    0x4808: "GUEST_FS_LIMIT", 0x480A: "GUEST_GS_LIMIT", 0x480C: "GUEST_LDTR_LIMIT", 0x480E: "GUEST_TR_LIMIT",
    0x4810: "GUEST_GDTR_LIMIT", 0x4812: "GUEST_IDTR_LIMIT", 0x4814: "GUEST_ES_AR_BYTES", 0x4816: "GUEST_CS_AR_BYTES",
    0x4818: "GUEST_SS_AR_BYTES", 0x481A: "GUEST_DS_AR_BYTES", 0x481C: "GUEST_FS_AR_BYTES", 0x481E: "GUEST_GS_AR_BYTES",
    0x4820: "GUEST_LDTR_AR_BYTES", 0x4822: "GUEST_TR_AR_BYTES", 0x4824: "GUEST_INTERRUPTIBILITY_INFO",
    0x4826: "GUEST_ACTIVITY_STATE", 0x4828: "GUEST_SMBASE", 0x482A: "GUEST_SYSENTER_CS",
    0x482E: "VMX_PREEMPTION_TIMER_VALUE", 0x4C00: "HOST_IA32_SYSENTER_CS",
    0x6000: "CR0_GUEST_HOST_MASK", 0x6002: "CR4_GUEST_HOST_MASK", 0x6004: "CR0_READ_SHADOW", 0x6006: "CR4_READ_SHADOW",
    0x6008: "CR3_TARGET_VALUE0", 0x600A: "CR3_TARGET_VALUE1", 0x600C: "CR3_TARGET_VALUE2", 0x600E: "CR3_TARGET_VALUE3",
    0x6400: "EXIT_QUALIFICATION", 0x6402: "IO_RCX", 0x6404: "IO_RSI", 0x6406: "IO_RDI", 0x6408: "IO_RIP",
    0x640A: "GUEST_LINEAR_ADDRESS",
    0x6800: "GUEST_CR0", 0x6802: "GUEST_CR3", 0x6804: "GUEST_CR4", 0x6806: "GUEST_ES_BASE", 0x6808: "GUEST_CS_BASE",
    0x680A: "GUEST_SS_BASE", 0x680C: "GUEST_DS_BASE", 0x680E: "GUEST_FS_BASE", 0x6810: "GUEST_GS_BASE",
    0x6812: "GUEST_LDTR_BASE", 0x6814: "GUEST_TR_BASE", 0x6816: "GUEST_GDTR_BASE", 0x6818: "GUEST_IDTR_BASE",
    0x681A: "GUEST_DR7", 0x681C: "GUEST_RSP", 0x681E: "GUEST_RIP", 0x6820: "GUEST_RFLAGS",
    0x6822: "GUEST_PENDING_DBG_EXCEPTIONS", 0x6824: "GUEST_SYSENTER_ESP", 0x6826: "GUEST_SYSENTER_EIP",
    0x6C00: "HOST_CR0", 0x6C02: "HOST_CR3", 0x6C04: "HOST_CR4", 0x6C06: "HOST_FS_BASE", 0x6C08: "HOST_GS_BASE",
    0x6C0A: "HOST_TR_BASE", 0x6C0C: "HOST_GDTR_BASE", 0x6C0E: "HOST_IDTR_BASE", 0x6C10: "HOST_IA32_SYSENTER_ESP",
    0x6C12: "HOST_IA32_SYSENTER_EIP", 0x6C14: "HOST_RSP", 0x6C16: "HOST_RIP",
}
BY_NAME = {v: k for k, v in FIELDS.items()}


def field_info(encoding: int) -> dict:
    """Decode a VMCS field encoding (SDM appendix B): access type, index, type, width."""
    return {"name": FIELDS.get(encoding & ~1, f"field {encoding:#06x}") + ("_HIGH" if encoding & 1 else ""),
            "high": bool(encoding & 1), "index": (encoding >> 1) & 0x1FF, "type": TYPES[(encoding >> 10) & 3],
            "width": 32 if encoding & 1 else WIDTHS[(encoding >> 13) & 3]}


EXIT_REASONS = {
    0: "EXCEPTION_NMI", 1: "EXTERNAL_INTERRUPT", 2: "TRIPLE_FAULT", 3: "INIT_SIGNAL", 4: "SIPI_SIGNAL", 5: "IO_SMI",
    6: "OTHER_SMI", 7: "INTERRUPT_WINDOW", 8: "NMI_WINDOW", 9: "TASK_SWITCH", 10: "CPUID", 11: "GETSEC", 12: "HLT",
    13: "INVD", 14: "INVLPG", 15: "RDPMC", 16: "RDTSC", 17: "RSM", 18: "VMCALL", 19: "VMCLEAR", 20: "VMLAUNCH",
    21: "VMPTRLD", 22: "VMPTRST", 23: "VMREAD", 24: "VMRESUME", 25: "VMWRITE", 26: "VMOFF", 27: "VMON",
    28: "CR_ACCESS", 29: "DR_ACCESS", 30: "IO_INSTRUCTION", 31: "MSR_READ", 32: "MSR_WRITE", 33: "INVALID_STATE",
    34: "MSR_LOAD_FAIL", 36: "MWAIT_INSTRUCTION", 37: "MONITOR_TRAP_FLAG", 39: "MONITOR_INSTRUCTION",
    40: "PAUSE_INSTRUCTION", 41: "MCE_DURING_VMENTRY", 43: "TPR_BELOW_THRESHOLD", 44: "APIC_ACCESS",
    45: "EOI_INDUCED", 46: "GDTR_IDTR", 47: "LDTR_TR", 48: "EPT_VIOLATION", 49: "EPT_MISCONFIG", 50: "INVEPT",
    51: "RDTSCP", 52: "PREEMPTION_TIMER", 53: "INVVPID", 54: "WBINVD", 55: "XSETBV", 56: "APIC_WRITE",
    57: "RDRAND", 58: "INVPCID", 59: "VMFUNC", 60: "ENCLS", 61: "RDSEED", 62: "PML_FULL", 63: "XSAVES",
    64: "XRSTORS", 67: "UMWAIT", 68: "TPAUSE", 74: "BUS_LOCK", 75: "NOTIFY",
}
GPRS = ["RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI", "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15"]


def decode_exit_reason(value: int) -> dict:
    """The exit-reason field (SDM 25.9.1): basic reason in bits 15:0, flags above."""
    basic = value & 0xFFFF
    return {"basic": basic, "name": EXIT_REASONS.get(basic, f"reason {basic}"),
            "enclave_mode": bool(value & (1 << 27)), "pending_mtf": bool(value & (1 << 28)),
            "exit_from_root": bool(value & (1 << 29)), "entry_failure": bool(value & (1 << 31))}


def decode_cr_access(q: int) -> dict:
    """Exit qualification for control-register accesses (SDM table 28-3)."""
    kind = ("MOV to CR", "MOV from CR", "CLTS", "LMSW")[(q >> 4) & 3]
    return {"cr": q & 0xF, "access": kind, "lmsw_operand": "memory" if q & (1 << 6) else "register",
            "gpr": GPRS[(q >> 8) & 0xF], "lmsw_source": (q >> 16) & 0xFFFF}


def decode_io(q: int) -> dict:
    """Exit qualification for I/O instructions (SDM table 28-5)."""
    return {"size": {0: 1, 1: 2, 3: 4}.get(q & 7, f"invalid({q & 7})"), "direction": "in" if q & 8 else "out",
            "string": bool(q & 16), "rep": bool(q & 32), "operand": "immediate" if q & 64 else "DX",
            "port": (q >> 16) & 0xFFFF}


INTR_TYPES = {0: "external interrupt", 2: "NMI", 3: "hardware exception", 4: "software interrupt",
              5: "privileged software exception", 6: "software exception", 7: "other event"}
VECTORS = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF", 10: "#TS",
           11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC", 18: "#MC", 19: "#XM", 20: "#VE", 21: "#CP"}


def decode_interruption_info(info: int) -> dict:
    """VM-exit interruption information (SDM table 25-19)."""
    vector = info & 0xFF
    return {"valid": bool(info >> 31), "vector": vector, "name": VECTORS.get(vector, str(vector)),
            "type": INTR_TYPES.get((info >> 8) & 7, "reserved"), "error_code_valid": bool(info & (1 << 11)),
            "nmi_unblocking": bool(info & (1 << 12))}


def decode_exception_exit(qualification: int, interruption_info: int, error_code: int | None = None) -> dict:
    """An EXCEPTION_NMI exit: for #PF the qualification is the faulting linear address, for #DB
    the DR6-like bits (SDM 28.2.1)."""
    d = decode_interruption_info(interruption_info)
    if d["vector"] == 14:
        d["linear_address"] = qualification
    elif d["vector"] == 1:
        d["debug"] = {"B0-B3": qualification & 0xF, "BD": bool(qualification & (1 << 13)), "BS": bool(qualification & (1 << 14))}
    if d["error_code_valid"] and error_code is not None:
        d["error_code"] = error_code
    return d


decode_ept_violation = ept.decode_qualification
