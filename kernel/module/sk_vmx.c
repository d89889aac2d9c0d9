// SPDX-License-Identifier: GPL-2.0
/*
 * Intel VMX backend: the running kernel becomes a VMX guest (non-root mode) in place, on every
 * CPU, under EPT; this file holds the VMCS set-up and the root-mode (R) exit handler. The
 * vendor-neutral rest of the handler is sk_exit.c.
 *
 * Differences from SVM that shape this file (Intel SDM vol. 3C):
 *  - a VM exit loads the host state from the VMCS: CR3 (the kernel's init_top_pgt), GS base
 *    (this CPU's per-cpu area), TR, GDTR/IDTR bases, EFER, PAT; limits of GDTR/IDTR/TR are set
 *    to fixed values (27.5.2), which matters only when leaving VMX (leave() restores them);
 *  - CPUID, XSETBV, INVD, GETSEC and the VMX instructions exit unconditionally (25.1.2);
 *  - MOV to CR3 exits with the register in the exit qualification (no decoding needed); MOV to
 *    CR4 exits only when it changes a bit owned by the host (guest/host mask: VMXE, SMEP, SMAP);
 *  - EPT violations report the guest-physical and, usually, the guest-linear address.
 */
#include <linux/kernel.h>
#include <linux/smp.h>
#include <linux/sched.h>
#include <linux/string.h>
#include <linux/mm.h>
#include <asm/io.h>
#include <asm/vmx.h>
#include <asm/trapnr.h>
#include <asm/msr.h>
#include <asm/desc.h>
#include <asm/processor.h>
#include <asm/special_insns.h>
#include <asm/debugreg.h>
#include <asm/tlbflush.h>
#include <asm/segment.h>
#include <asm/asm.h>
#include "sk.h"

extern char sk_vmx_exit[];

#define CR4_SMEP (1ULL << 20)
#define CR4_SMAP (1ULL << 21)
/* CR4 bits the host owns: the guest can neither leave VMX (VMXE) nor drop SMEP/SMAP unseen. */
#define CR4_HOST_OWNED (X86_CR4_VMXE | CR4_SMEP | CR4_SMAP)

/* VMX capability and control values, computed once at load (vmx_supported). */
static struct {
	u32 revision;
	u32 pin, proc, proc2, exit, entry;
	u64 ept_cap;
} vmx;

/* ---- VMX instructions (SDM 31.2: CF or ZF set means the instruction failed) ------------------ */

static inline int vmxon(u64 pa)
{
	u8 fail;

	asm volatile("vmxon %[pa]; setna %[fail]" : [fail] "=qm"(fail) : [pa] "m"(pa) : "cc", "memory");
	return fail;
}

static inline void vmxoff(void)
{
	asm volatile("vmxoff" ::: "cc", "memory");
}

static inline int vmclear(u64 pa)
{
	u8 fail;

	asm volatile("vmclear %[pa]; setna %[fail]" : [fail] "=qm"(fail) : [pa] "m"(pa) : "cc", "memory");
	return fail;
}

static inline int vmptrld(u64 pa)
{
	u8 fail;

	asm volatile("vmptrld %[pa]; setna %[fail]" : [fail] "=qm"(fail) : [pa] "m"(pa) : "cc", "memory");
	return fail;
}

static inline u64 vmread(unsigned long field)
{
	u64 value;

	asm volatile("vmread %[field], %[value]" : [value] "=r"(value) : [field] "r"(field) : "cc");
	return value;
}

static int vmwrite_failed;

static inline void vmwrite(unsigned long field, u64 value)
{
	u8 fail;

	asm volatile("vmwrite %[value], %[field]; setna %[fail]"
		     : [fail] "=qm"(fail) : [field] "r"(field), [value] "rm"(value) : "cc");
	vmwrite_failed |= fail;
}

/* INVEPT all-context: drop the guest-physical and combined mappings of every EPTP. */
static inline void invept_all(void)
{
	struct { u64 eptp, gpa; } desc = { 0, 0 };

	asm volatile("invept %[desc], %[type]" :: [desc] "m"(desc), [type] "r"((u64)VMX_EPT_EXTENT_GLOBAL) : "cc", "memory");
}

/* ---- capabilities ------------------------------------------------------------------------- */

/* A control value with `want` set, adjusted to what the CPU allows (SDM A.3: allowed-0 and -1). */
static int adjust(u32 msr, u32 true_msr, u32 want, u32 *out, const char **why, const char *what)
{
	u64 basic, caps;

	rdmsrl(MSR_IA32_VMX_BASIC, basic);
	rdmsrl((basic & VMX_BASIC_TRUE_CTLS) && true_msr ? true_msr : msr, caps);
	*out = (want | (u32)caps) & (u32)(caps >> 32);
	if ((*out & want) != want) {
		*why = what;
		return 0;
	}
	return 1;
}

static int vmx_supported(const char **why)
{
	u32 want2;
	u64 basic, feat;

	if (!boot_cpu_has(X86_FEATURE_VMX)) {
		*why = "this CPU has no VMX (CPUID 1 ECX bit 5), or the kernel locked it off in IA32_FEATURE_CONTROL";
		return 0;
	}
	rdmsrl(MSR_IA32_FEAT_CTL, feat);
	if (!(feat & FEAT_CTL_LOCKED) || !(feat & FEAT_CTL_VMX_ENABLED_OUTSIDE_SMX)) {
		*why = "VMX is disabled by firmware (IA32_FEATURE_CONTROL lock/enable-outside-SMX)";
		return 0;
	}
	if (native_read_cr4() & X86_CR4_VMXE) {
		*why = "CR4.VMXE is already set: another hypervisor runs on this CPU";
		return 0;
	}
	rdmsrl(MSR_IA32_VMX_BASIC, basic);
	vmx.revision = (u32)basic & 0x7fffffff;
	if (((basic >> 32) & 0x1fff) > PAGE_SIZE || ((basic >> 50) & 0xf) != 6) {
		*why = "VMCS larger than a page, or not write-back (IA32_VMX_BASIC)";
		return 0;
	}
	if (!adjust(MSR_IA32_VMX_PINBASED_CTLS, MSR_IA32_VMX_TRUE_PINBASED_CTLS, 0, &vmx.pin, why, "pin-based controls") ||
	    !adjust(MSR_IA32_VMX_PROCBASED_CTLS, MSR_IA32_VMX_TRUE_PROCBASED_CTLS,
		    CPU_BASED_CR3_LOAD_EXITING | CPU_BASED_USE_MSR_BITMAPS | CPU_BASED_ACTIVATE_SECONDARY_CONTROLS,
		    &vmx.proc, why, "no CR3-load exiting, MSR bitmaps or secondary controls") ||
	    !adjust(MSR_IA32_VMX_EXIT_CTLS, MSR_IA32_VMX_TRUE_EXIT_CTLS,
		    VM_EXIT_HOST_ADDR_SPACE_SIZE | VM_EXIT_SAVE_IA32_PAT | VM_EXIT_LOAD_IA32_PAT |
		    VM_EXIT_SAVE_IA32_EFER | VM_EXIT_LOAD_IA32_EFER, &vmx.exit, why, "VM-exit controls (64-bit host, PAT, EFER)") ||
	    !adjust(MSR_IA32_VMX_ENTRY_CTLS, MSR_IA32_VMX_TRUE_ENTRY_CTLS,
		    VM_ENTRY_IA32E_MODE | VM_ENTRY_LOAD_IA32_PAT | VM_ENTRY_LOAD_IA32_EFER,
		    &vmx.entry, why, "VM-entry controls (IA-32e guest, PAT, EFER)"))
		return 0;
	/*
	 * Without the matching secondary control these instructions raise #UD in non-root mode,
	 * while CPUID still tells the kernel they exist: enable each one the CPU has.
	 */
	want2 = SECONDARY_EXEC_ENABLE_EPT;
	if (boot_cpu_has(X86_FEATURE_RDTSCP))
		want2 |= SECONDARY_EXEC_ENABLE_RDTSCP;
	if (boot_cpu_has(X86_FEATURE_INVPCID))
		want2 |= SECONDARY_EXEC_ENABLE_INVPCID;
	if (boot_cpu_has(X86_FEATURE_XSAVES))
		want2 |= SECONDARY_EXEC_XSAVES;
	if (!adjust(MSR_IA32_VMX_PROCBASED_CTLS2, 0, want2, &vmx.proc2, why,
		    "secondary controls: EPT, or RDTSCP/INVPCID/XSAVES that the kernel uses"))
		return 0;
	rdmsrl(MSR_IA32_VMX_EPT_VPID_CAP, vmx.ept_cap);
	sk.slat_caps = vmx.ept_cap;
	if (!(vmx.ept_cap & VMX_EPT_PAGE_WALK_4_BIT) || !(vmx.ept_cap & VMX_EPTP_WB_BIT) ||
	    !(vmx.ept_cap & VMX_EPT_1GB_PAGE_BIT) || !(vmx.ept_cap & VMX_EPT_INVEPT_BIT) ||
	    !(vmx.ept_cap & VMX_EPT_EXTENT_GLOBAL_BIT)) {
		*why = "EPT without 4-level walks, WB tables, 1 GiB pages or all-context INVEPT (IA32_VMX_EPT_VPID_CAP)";
		return 0;
	}
	if ((native_read_cr4() & X86_CR4_LA57) && !(vmx.ept_cap & VMX_EPT_PAGE_WALK_5_BIT)) {
		*why = "the kernel uses 5-level paging and EPT has no 5-level walks";
		return 0;
	}
	return 1;
}

/*
 * MSRs whose writes reach host state that a VM exit does not reload (SDM 25.6.9, 27.5; the exit
 * reloads EFER, PAT, the SYSENTER MSRs, FS/GS bases and DEBUGCTL): the local APIC's base, the
 * feature control and SMM monitor MSRs, microcode updates, and the MTRRs (memory types the host
 * shares). A write exits and is refused (#GP, an attack event); reads do not exit.
 */
static const u32 vmx_host_msrs[] = {
	MSR_IA32_APICBASE, MSR_IA32_FEAT_CTL, 0x79 /* IA32_BIOS_UPDT_TRIG */, 0x9b /* IA32_SMM_MONITOR_CTL */,
	MSR_MTRRdefType, MSR_MTRRfix64K_00000, MSR_MTRRfix16K_80000, MSR_MTRRfix16K_A0000,
	MSR_MTRRfix4K_C0000, MSR_MTRRfix4K_C8000, MSR_MTRRfix4K_D0000, MSR_MTRRfix4K_D8000,
	MSR_MTRRfix4K_E0000, MSR_MTRRfix4K_E8000, MSR_MTRRfix4K_F0000, MSR_MTRRfix4K_F8000,
};

static bool vmx_host_msr(u32 msr)
{
	int i;

	if (msr >= 0x200 && msr < 0x200 + 2 * 16)     /* variable-range MTRR base/mask pairs */
		return true;
	for (i = 0; i < ARRAY_SIZE(vmx_host_msrs); i++)
		if (vmx_host_msrs[i] == msr)
			return true;
	return false;
}

static int vmx_setup(void)
{
	u8 *write_low = (u8 *)sk.msrpm + 2048;    /* the write bitmap for MSRs 0-1FFFh */
	u32 msr;

	for (msr = 0; msr < 0x2000; msr++)
		if (vmx_host_msr(msr))
			write_low[msr / 8] |= 1 << (msr % 8);
	return 0;
}

/* ---- VMCS set-up (on the host stack, from sk_vmx_launch) ---------------------------------- */

struct seg {
	u16 sel;
	u32 ar, limit;
	u64 base;
};

/* A segment as the CPU holds it now, in the VMCS's access-rights format (SDM 25.4.1). */
static struct seg seg_from_gdt(u16 sel, const struct desc_ptr *gdt)
{
	struct seg s = { .sel = sel, .ar = 1 << 16 /* unusable */ };
	u64 d, hi;

	if (!(sel & ~3))
		return s;
	d = *(u64 *)(gdt->address + (sel & ~7));
	s.ar = ((d >> 40) & 0xff) | (((d >> 52) & 0xf) << 12);
	s.limit = (d & 0xffff) | ((d >> 32) & 0xf0000);
	if (d & (1ULL << 55))
		s.limit = (s.limit << 12) | 0xfff;
	s.base = ((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24);
	if (!(d & (1ULL << 44))) {    /* system descriptor (TSS, LDT): 16 bytes in long mode */
		hi = *(u64 *)(gdt->address + (sel & ~7) + 8);
		s.base |= (hi & 0xffffffff) << 32;
	}
	return s;
}

#define GUEST_SEG(name, s) do { \
	vmwrite(GUEST_##name##_SELECTOR, (s).sel); \
	vmwrite(GUEST_##name##_BASE, (s).base); \
	vmwrite(GUEST_##name##_LIMIT, (s).limit); \
	vmwrite(GUEST_##name##_AR_BYTES, (s).ar); \
} while (0)

/* Called by sk_vmx_launch on the host stack: the guest state is the CPU's own state now. */
int sk_vmx_prepare_vmcs(struct sk_cpu *c)
{
	struct desc_ptr gdt, idt;
	struct seg s;
	u16 sel;
	u64 v;

	if (vmclear(c->vmcb_pa) || vmptrld(c->vmcb_pa))
		return -EIO;
	vmwrite_failed = 0;

	/* controls */
	vmwrite(PIN_BASED_VM_EXEC_CONTROL, vmx.pin);
	vmwrite(CPU_BASED_VM_EXEC_CONTROL, vmx.proc);
	vmwrite(SECONDARY_VM_EXEC_CONTROL, vmx.proc2);
	vmwrite(VM_EXIT_CONTROLS, vmx.exit);
	vmwrite(VM_ENTRY_CONTROLS, vmx.entry);
	vmwrite(EXCEPTION_BITMAP, 0);
	vmwrite(PAGE_FAULT_ERROR_CODE_MASK, 0);
	vmwrite(PAGE_FAULT_ERROR_CODE_MATCH, 0);
	vmwrite(CR3_TARGET_COUNT, 0);             /* every MOV to CR3 exits */
	vmwrite(VM_EXIT_MSR_STORE_COUNT, 0);
	vmwrite(VM_EXIT_MSR_LOAD_COUNT, 0);
	vmwrite(VM_ENTRY_MSR_LOAD_COUNT, 0);
	vmwrite(VM_ENTRY_INTR_INFO_FIELD, 0);
	vmwrite(MSR_BITMAP, sk_pa(sk.msrpm));
	vmwrite(EPT_POINTER, sk_eptp(sk.root_ncr3));
	vmwrite(CR0_GUEST_HOST_MASK, 0);
	vmwrite(CR4_GUEST_HOST_MASK, CR4_HOST_OWNED);
	vmwrite(CR4_READ_SHADOW, native_read_cr4());
	vmwrite(VMCS_LINK_POINTER, ~0ULL);

	/* host state: what every VM exit loads */
	native_store_gdt(&gdt);
	store_idt(&idt);
	vmwrite(HOST_CR0, native_read_cr0());
	vmwrite(HOST_CR3, sk.host_cr3);
	vmwrite(HOST_CR4, native_read_cr4());
	vmwrite(HOST_CS_SELECTOR, __KERNEL_CS);
	vmwrite(HOST_SS_SELECTOR, __KERNEL_DS);
	vmwrite(HOST_DS_SELECTOR, 0);
	vmwrite(HOST_ES_SELECTOR, 0);
	vmwrite(HOST_FS_SELECTOR, 0);
	vmwrite(HOST_GS_SELECTOR, 0);
	asm volatile("str %0" : "=r"(sel));
	vmwrite(HOST_TR_SELECTOR, sel);
	vmwrite(HOST_TR_BASE, seg_from_gdt(sel, &gdt).base);
	rdmsrl(MSR_FS_BASE, v);
	vmwrite(HOST_FS_BASE, v);
	rdmsrl(MSR_GS_BASE, v);            /* this CPU's per-cpu area */
	vmwrite(HOST_GS_BASE, v);
	vmwrite(HOST_GDTR_BASE, gdt.address);
	vmwrite(HOST_IDTR_BASE, idt.address);
	rdmsrl(MSR_IA32_SYSENTER_CS, v);
	vmwrite(HOST_IA32_SYSENTER_CS, v);
	rdmsrl(MSR_IA32_SYSENTER_ESP, v);
	vmwrite(HOST_IA32_SYSENTER_ESP, v);
	rdmsrl(MSR_IA32_SYSENTER_EIP, v);
	vmwrite(HOST_IA32_SYSENTER_EIP, v);
	rdmsrl(MSR_IA32_CR_PAT, v);
	vmwrite(HOST_IA32_PAT, v);
	rdmsrl(MSR_EFER, v);
	vmwrite(HOST_IA32_EFER, v);
	vmwrite(HOST_RSP, c->host_rsp);
	vmwrite(HOST_RIP, (u64)sk_vmx_exit);

	/* guest state: the CPU as it is, resuming at the end of sk_vmx_launch */
	vmwrite(GUEST_CR0, native_read_cr0());
	vmwrite(GUEST_CR3, __native_read_cr3());
	vmwrite(GUEST_CR4, native_read_cr4());
	vmwrite(GUEST_DR7, native_get_debugreg(7));
	vmwrite(GUEST_RSP, c->guest_rsp);
	vmwrite(GUEST_RIP, c->guest_rip);
	vmwrite(GUEST_RFLAGS, native_save_fl());
	savesegment(es, sel); s = seg_from_gdt(sel, &gdt); GUEST_SEG(ES, s);
	savesegment(cs, sel); s = seg_from_gdt(sel, &gdt); GUEST_SEG(CS, s);
	savesegment(ss, sel); s = seg_from_gdt(sel, &gdt); GUEST_SEG(SS, s);
	savesegment(ds, sel); s = seg_from_gdt(sel, &gdt); GUEST_SEG(DS, s);
	savesegment(fs, sel); s = seg_from_gdt(sel, &gdt); rdmsrl(MSR_FS_BASE, s.base); GUEST_SEG(FS, s);
	savesegment(gs, sel); s = seg_from_gdt(sel, &gdt); rdmsrl(MSR_GS_BASE, s.base); GUEST_SEG(GS, s);
	asm volatile("str %0" : "=r"(sel)); s = seg_from_gdt(sel, &gdt); GUEST_SEG(TR, s);
	asm volatile("sldt %0" : "=r"(sel)); s = seg_from_gdt(sel, &gdt); GUEST_SEG(LDTR, s);
	vmwrite(GUEST_GDTR_BASE, gdt.address);
	vmwrite(GUEST_GDTR_LIMIT, gdt.size);
	vmwrite(GUEST_IDTR_BASE, idt.address);
	vmwrite(GUEST_IDTR_LIMIT, idt.size);
	rdmsrl(MSR_IA32_DEBUGCTLMSR, v);
	vmwrite(GUEST_IA32_DEBUGCTL, v);
	rdmsrl(MSR_IA32_SYSENTER_CS, v);
	vmwrite(GUEST_SYSENTER_CS, v);
	rdmsrl(MSR_IA32_SYSENTER_ESP, v);
	vmwrite(GUEST_SYSENTER_ESP, v);
	rdmsrl(MSR_IA32_SYSENTER_EIP, v);
	vmwrite(GUEST_SYSENTER_EIP, v);
	rdmsrl(MSR_IA32_CR_PAT, v);
	vmwrite(GUEST_IA32_PAT, v);
	rdmsrl(MSR_EFER, v);
	vmwrite(GUEST_IA32_EFER, v);
	vmwrite(GUEST_ACTIVITY_STATE, GUEST_ACTIVITY_ACTIVE);
	vmwrite(GUEST_INTERRUPTIBILITY_INFO, 0);
	vmwrite(GUEST_PENDING_DBG_EXCEPTIONS, 0);
	/* The host runs on its own tables (a copy in the pool): the one loaded now may be a process's. */
	native_write_cr3(sk.host_cr3);
	return vmwrite_failed ? -EIO : 0;
}

/* ---- root-mode handler ------------------------------------------------------------------- */

static void vmx_inject(struct sk_cpu *c, int vector)
{
	u32 info = vector | INTR_TYPE_HARD_EXCEPTION | INTR_INFO_VALID_MASK;

	if (vector == X86_TRAP_GP) {
		info |= INTR_INFO_DELIVER_CODE_MASK;
		vmwrite(VM_ENTRY_EXCEPTION_ERROR_CODE, 0);
	}
	vmwrite(VM_ENTRY_INTR_INFO_FIELD, info);
}

/*
 * An exit taken while the CPU delivered an event (IDT-vectoring information valid: an EPT
 * violation on the IDT, the stack or the GDT during delivery) must deliver it again (SDM 28.2.4,
 * 31.7.1.1), or it is lost; see svm_redeliver for what a lost interrupt does. Software interrupts
 * and exceptions (INTn, INT1, INT3, INTO) are not reinjected: RIP is still on the instruction,
 * which raises them again when it runs.
 */
static void vmx_redeliver(struct sk_cpu *c)
{
	u32 info = (u32)c->ex.intinfo;
	u32 vector = info & VECTORING_INFO_VECTOR_MASK, type = info & VECTORING_INFO_TYPE_MASK;

	if (!(info & VECTORING_INFO_VALID_MASK) || type == INTR_TYPE_SOFT_INTR ||
	    type == INTR_TYPE_PRIV_SW_EXCEPTION || type == INTR_TYPE_SOFT_EXCEPTION)
		return;
	if (vmread(VM_ENTRY_INTR_INFO_FIELD) & INTR_INFO_VALID_MASK) {
		/* The handler raises a fault (a denied access) on this very delivery: a contributory
		 * fault or #PF during the delivery of one is a double fault (SDM 6.15, Table 6-5); on
		 * an interrupt's delivery the fault wins, as on a processor. */
		if (type == INTR_TYPE_HARD_EXCEPTION &&
		    (vector == X86_TRAP_DE || (vector >= X86_TRAP_TS && vector <= X86_TRAP_PF))) {
			vmwrite(VM_ENTRY_INTR_INFO_FIELD, X86_TRAP_DF | INTR_TYPE_HARD_EXCEPTION |
				INTR_INFO_DELIVER_CODE_MASK | INTR_INFO_VALID_MASK);
			vmwrite(VM_ENTRY_EXCEPTION_ERROR_CODE, 0);
		}
		return;
	}
	if (type == INTR_TYPE_NMI_INTR)   /* VM entry refuses an NMI while blocking by NMI is set */
		vmwrite(GUEST_INTERRUPTIBILITY_INFO,
			vmread(GUEST_INTERRUPTIBILITY_INFO) & ~GUEST_INTR_STATE_NMI);
	vmwrite(VM_ENTRY_INTR_INFO_FIELD, info & (INTR_INFO_VALID_MASK | INTR_INFO_DELIVER_CODE_MASK |
						  INTR_INFO_INTR_TYPE_MASK | INTR_INFO_VECTOR_MASK));
	if (info & VECTORING_INFO_DELIVER_CODE_MASK)
		vmwrite(VM_ENTRY_EXCEPTION_ERROR_CODE, c->ex.intinfo >> 32);
}

static void vmx_set_slat_root(struct sk_cpu *c, u64 top_pa)
{
	vmwrite(EPT_POINTER, sk_eptp(top_pa));
}

/* General-purpose register n as numbered in exit qualifications (SDM Table 28-3). */
static u64 *gpr(struct sk_gprs *g, u64 *rsp, int n)
{
	switch (n) {
	case 0: return &g->rax;
	case 1: return &g->rcx;
	case 2: return &g->rdx;
	case 3: return &g->rbx;
	case 4: return rsp;
	case 5: return &g->rbp;
	case 6: return &g->rsi;
	case 7: return &g->rdi;
	case 8: return &g->r8;
	case 9: return &g->r9;
	case 10: return &g->r10;
	case 11: return &g->r11;
	case 12: return &g->r12;
	case 13: return &g->r13;
	case 14: return &g->r14;
	default: return &g->r15;
	}
}

static void step(struct sk_cpu *c)
{
	vmwrite(GUEST_RIP, vmread(GUEST_RIP) + vmread(VM_EXIT_INSTRUCTION_LEN));
}

/* MOV to/from a control register (exit reason 28; qualification: SDM Table 28-3). */
static void do_cr(struct sk_cpu *c, struct sk_gprs *g)
{
	u64 q = c->ex.info1, rsp = vmread(GUEST_RSP), val;
	int cr = q & 15, type = (q >> 4) & 3;

	if (type != 0 || (cr != 3 && cr != 4)) {
		/* Only MOV to CR3 and to the host-owned CR4 bits are intercepted. */
		sk_counters_of(c)->exits_other++;
		sk_attack(c, SK_ATTACK_CR, cr);
		vmx_inject(c, X86_TRAP_GP);
		return;
	}
	val = *gpr(g, &rsp, (q >> 8) & 15);
	if (cr == 3) {
		/* Bit 63 (PCID no-flush) is not part of CR3; VM entry would refuse it. We flush anyway. */
		val &= ~(1ULL << 63);
		vmwrite(GUEST_CR3, val);
		step(c);
		c->ex.cr3 = val;
		c->ex.rip = vmread(GUEST_RIP);
		sk_cr3_written(c, val);
		return;
	}
	if (sk_cr4_reserved(val & ~X86_CR4_VMXE)) {
		sk_attack(c, SK_ATTACK_CR, 4);
		vmx_inject(c, X86_TRAP_GP);   /* a reserved bit would fail the next VM entry */
		return;
	}
	val = sk_cr4_filter(c, vmread(GUEST_CR4), val);
	vmwrite(CR4_READ_SHADOW, val);
	vmwrite(GUEST_CR4, val | X86_CR4_VMXE);   /* VMXE stays on in VMX operation (CR4_FIXED0) */
	step(c);
}

static void do_cpuid(struct sk_gprs *g)
{
	u32 eax = g->rax, ebx, ecx = g->rcx, edx;

	native_cpuid(&eax, &ebx, &ecx, &edx);
	g->rax = eax;
	g->rbx = ebx;
	g->rcx = ecx;
	g->rdx = edx;
}

static int do_xsetbv(struct sk_cpu *c, struct sk_gprs *g)
{
	if (c->ex.cpl != 0)
		return -1;
	/* Faults are not expected from the kernel's own XCR0 values; the exception fixup covers it. */
	asm volatile("1: xsetbv\n2:\n" _ASM_EXTABLE(1b, 2b)
		     :: "a"((u32)g->rax), "d"((u32)g->rdx), "c"((u32)g->rcx) : "memory");
	return 0;
}

static int do_msr(struct sk_cpu *c, struct sk_gprs *g, int write)
{
	u32 msr = (u32)g->rcx;
	u64 v;
	int err;

	if (write && vmx_host_msr(msr)) {
		sk_attack(c, SK_ATTACK_MSR, msr);
		return -1;                        /* #GP: the write never reaches the CPU */
	}
	/* Other MSRs outside the bitmap's ranges exit too (SDM 25.6.9): pass them through. */
	if (write) {
		err = native_write_msr_safe(msr, (u32)g->rax, (u32)g->rdx);
	} else {
		v = native_read_msr_safe(msr, &err);
		g->rax = (u32)v;
		g->rdx = v >> 32;
	}
	sk_record(c, SK_EV_EXIT, 0, err ? SK_ACT_DENY : SK_ACT_EMULATE, msr);
	return err;
}

/* Leave VMX on this CPU and resume the guest natively (sk_vmrun.S .Lvmx_leave). */
static int leave(struct sk_cpu *c, struct sk_gprs *g, int len)
{
	struct desc_ptr gdt, idt;
	u64 rip = vmread(GUEST_RIP) + len, rsp = vmread(GUEST_RSP), rflags = vmread(GUEST_RFLAGS);
	u64 cr3 = vmread(GUEST_CR3), cr4 = vmread(GUEST_CR4);
	u64 fs_base = vmread(GUEST_FS_BASE), gs_base = vmread(GUEST_GS_BASE);
	u16 ds = vmread(GUEST_DS_SELECTOR), es = vmread(GUEST_ES_SELECTOR), ss = vmread(GUEST_SS_SELECTOR);
	u16 fs = vmread(GUEST_FS_SELECTOR), gs = vmread(GUEST_GS_SELECTOR);
	u64 dr7 = vmread(GUEST_DR7), debugctl = vmread(GUEST_IA32_DEBUGCTL);
	u64 pat = vmread(GUEST_IA32_PAT), efer = vmread(GUEST_IA32_EFER);
	u64 sysenter_cs = vmread(GUEST_SYSENTER_CS), sysenter_esp = vmread(GUEST_SYSENTER_ESP);
	u64 sysenter_eip = vmread(GUEST_SYSENTER_EIP);
	u64 *sp;

	gdt.address = vmread(GUEST_GDTR_BASE);
	gdt.size = vmread(GUEST_GDTR_LIMIT);
	idt.address = vmread(GUEST_IDTR_BASE);
	idt.size = vmread(GUEST_IDTR_LIMIT);
	sk_record(c, SK_EV_LIFECYCLE, 0, SK_ACT_NONE, 0);
	vmclear(c->vmcb_pa);
	vmxoff();
	/* CR4.VMXE stays set: the guest side clears it (cr4_clear_bits keeps the kernel's shadow). */
	asm volatile("mov %0, %%cr4" :: "r"(cr4) : "memory");
	native_write_cr3(cr3);
	native_load_gdt(&gdt);      /* a VM exit left the limits at 0xffff */
	native_load_idt(&idt);
	loadsegment(ds, ds);
	loadsegment(es, es);
	loadsegment(ss, ss);
	/* Loading FS/GS selectors resets their bases: write the bases after. No NMI is expected in
	 * this window (the host runs with the guest's IDT; an NMI here would see GS base 0). */
	loadsegment(fs, fs);
	if (gs)
		asm volatile("mov %0, %%gs" :: "r"(gs) : "memory");
	wrmsrl(MSR_FS_BASE, fs_base);
	wrmsrl(MSR_GS_BASE, gs_base);
	wrmsrl(MSR_IA32_CR_PAT, pat);
	wrmsrl(MSR_EFER, efer);
	wrmsrl(MSR_IA32_SYSENTER_CS, sysenter_cs);
	wrmsrl(MSR_IA32_SYSENTER_ESP, sysenter_esp);
	wrmsrl(MSR_IA32_SYSENTER_EIP, sysenter_eip);
	wrmsrl(MSR_IA32_DEBUGCTLMSR, debugctl);
	native_set_debugreg(7, dr7);
	sp = (u64 *)(rsp - 16);
	sp[0] = rflags;
	sp[1] = rip;
	c->guest_rsp = (u64)sp;
	return 1;
}

static void read_exit(struct sk_cpu *c)
{
	c->ex.code = (u32)vmread(VM_EXIT_REASON);
	c->ex.info1 = vmread(EXIT_QUALIFICATION);
	c->ex.info2 = vmread(GUEST_PHYSICAL_ADDRESS);
	c->ex.gla = 0;
	if ((c->ex.code & 0xffff) == EXIT_REASON_EPT_VIOLATION && (c->ex.info1 & EPT_VIOLATION_GVA_IS_VALID))
		c->ex.gla = vmread(GUEST_LINEAR_ADDRESS);
	c->ex.rip = vmread(GUEST_RIP);
	c->ex.cr3 = vmread(GUEST_CR3);
	c->ex.slat_root = vmread(EPT_POINTER);
	c->ex.cpl = (vmread(GUEST_SS_AR_BYTES) >> 5) & 3;   /* CPL is SS.DPL (SDM 25.4.1) */
	c->ex.intinfo = vmread(IDT_VECTORING_INFO_FIELD);
	if (c->ex.intinfo & VECTORING_INFO_DELIVER_CODE_MASK)
		c->ex.intinfo |= vmread(IDT_VECTORING_ERROR_CODE) << 32;
}

/* Called by sk_vmrun.S after every VM exit; returns non-zero to leave VMX on this CPU. */
int sk_vmx_handle_exit(struct sk_cpu *c, struct sk_gprs *g)
{
	u32 reason;
	u64 res;
	int ret = 0;

	read_exit(c);
	reason = c->ex.code & 0xffff;
	if (!c->launched) {
		c->launched = 1;
		sk_record(c, SK_EV_LIFECYCLE, 0, SK_ACT_NONE, 1);
	}
	sk_note_guest_regs(c, vmread(GUEST_CR0), c->ex.cr3, vmread(GUEST_CR4), vmread(GUEST_IA32_EFER));
	sk_exit_begin(c);
	if (c->ex.code & VMX_EXIT_REASONS_FAILED_VMENTRY) {
		/* The guest state we left is invalid: fail closed (never run on unvirtualised). */
		sk_fatal(c);
		return 0;
	}
	switch (reason) {
	case EXIT_REASON_VMCALL:
		switch (sk_hypercall_exit(c, g->rax, g->rbx, g->rcx, g->rdx, &res)) {
		case SK_HC_LEAVE:
			return leave(c, g, vmread(VM_EXIT_INSTRUCTION_LEN));
		case SK_HC_DONE:
			g->rax = res;
			step(c);
			break;
		}
		break;
	case EXIT_REASON_CR_ACCESS:
		do_cr(c, g);
		break;
	case EXIT_REASON_EPT_VIOLATION:
		/* The violation interrupted an IRET that unblocked NMIs: block them again (SDM 28.2.3).
		 * The bit means nothing for a violation during event delivery. */
		if ((c->ex.info1 & INTR_INFO_UNBLOCK_NMI) && !(c->ex.intinfo & VECTORING_INFO_VALID_MASK))
			vmwrite(GUEST_INTERRUPTIBILITY_INFO,
				vmread(GUEST_INTERRUPTIBILITY_INFO) | GUEST_INTR_STATE_NMI);
		sk_violation(c, c->ex.info2);
		break;
	case EXIT_REASON_CPUID:
		/* Unconditional, and frequent (every process start): counted, not recorded. */
		sk_counters_of(c)->exits_other++;
		do_cpuid(g);
		step(c);
		break;
	case EXIT_REASON_XSETBV:
		sk_counters_of(c)->exits_other++;
		if (do_xsetbv(c, g))
			vmx_inject(c, X86_TRAP_GP);
		else
			step(c);
		break;
	case EXIT_REASON_MSR_READ:
	case EXIT_REASON_MSR_WRITE:
		sk_counters_of(c)->exits_other++;
		if (do_msr(c, g, reason == EXIT_REASON_MSR_WRITE))
			vmx_inject(c, X86_TRAP_GP);
		else
			step(c);
		break;
	case EXIT_REASON_INVD:
		sk_counters_of(c)->exits_other++;
		step(c);     /* nothing cached that the guest may drop: treat as WBINVD would (no-op) */
		break;
	case EXIT_REASON_EPT_MISCONFIG:
		if (READ_ONCE(sk.probe_entry)) {
			/* The probe made this entry (SK_HC_PROBE_SET): recorded and undone like a violation. */
			sk_violation(c, c->ex.info2);
			break;
		}
		fallthrough;
	case EXIT_REASON_TRIPLE_FAULT:
		sk_counters_of(c)->exits_other++;
		sk_fatal(c);   /* cannot go on under VMX: stop rather than run uncontained */
		break;
	case EXIT_REASON_VMCLEAR: case EXIT_REASON_VMLAUNCH: case EXIT_REASON_VMPTRLD:
	case EXIT_REASON_VMPTRST: case EXIT_REASON_VMREAD: case EXIT_REASON_VMRESUME:
	case EXIT_REASON_VMWRITE: case EXIT_REASON_VMOFF: case EXIT_REASON_VMON:
	case EXIT_REASON_INVEPT: case EXIT_REASON_INVVPID: case EXIT_REASON_VMFUNC:
	case 11:     /* GETSEC */
		/* No nested VMX: as on a CPU without it. */
		sk_counters_of(c)->exits_other++;
		sk_attack(c, SK_ATTACK_EXIT, reason);
		vmx_inject(c, X86_TRAP_UD);
		break;
	default:
		sk_counters_of(c)->exits_other++;
		sk_record(c, SK_EV_EXIT, 0, SK_ACT_NONE, 0);
		break;
	}
	vmx_redeliver(c);
	sk_exit_end(c);
	/* No VPID: VM entries flush linear mappings; EPT-derived ones are flushed here. */
	if (c->flush)
		invept_all();
	return ret;
}

/* VMRESUME fell through (sk_vmrun.S): the VMCS is unusable; fail closed (sk_fatal). */
int sk_vmx_resume_failed(struct sk_cpu *c, struct sk_gprs *g)
{
	c->ex.code = 0xffffffff;
	c->ex.info1 = vmread(VM_INSTRUCTION_ERROR);
	sk_fatal(c);
	return 0;
}

/* ---- bring-up and tear-down (guest side) -------------------------------------------------- */

static atomic_t sk_failed;

static void virt_one(void *unused)
{
	int cpu = smp_processor_id();
	struct sk_cpu *c = sk.cpus[cpu];

	if (!c)
		return;
	__atomic_fetch_or(&sk.cr4_allowed, native_read_cr4() & ~X86_CR4_VMXE, __ATOMIC_RELAXED);
	*(u32 *)c->hsave = vmx.revision;      /* the VMXON region */
	*(u32 *)c->vmcb = vmx.revision;       /* the VMCS region */
	cr4_set_bits(X86_CR4_VMXE);           /* through the kernel's CR4 shadow: it keeps VMXE */
	if (vmxon(sk_pa(c->hsave))) {
		cr4_clear_bits(X86_CR4_VMXE);
		atomic_inc(&sk_failed);
		return;
	}
	if (sk_vmx_launch(c)) {
		vmxoff();
		cr4_clear_bits(X86_CR4_VMXE);
		atomic_inc(&sk_failed);
		return;
	}
	__atomic_fetch_or(&sk_desc.cpu_mask, 1u << cpu, __ATOMIC_RELAXED);
}

static int vmx_virtualize_all(void)
{
	atomic_set(&sk_failed, 0);
	on_each_cpu(virt_one, NULL, 1);
	return atomic_read(&sk_failed) ? -EIO : 0;
}

static void devirt_one(void *unused)
{
	int cpu = smp_processor_id();

	/* The handler clears this CPU's bit in the descriptor (read-only in containers). */
	if (sk_desc.cpu_mask & (1u << cpu)) {
		sk_hypercall(SK_HC_DEVIRT, 0, 0, 0);
		cr4_clear_bits(X86_CR4_VMXE);
		invalidate_tss_limit();   /* the VM exits left TR's limit at 0x67 (SDM 27.5.2) */
	}
}

static void vmx_devirtualize_all(void)
{
	on_each_cpu(devirt_one, NULL, 1);
}

const struct sk_backend sk_vmx_backend = {
	.name = "VMX, EPT",
	.vendor = SK_VENDOR_VMX,
	.supported = vmx_supported,
	.setup = vmx_setup,
	.virtualize_all = vmx_virtualize_all,
	.devirtualize_all = vmx_devirtualize_all,
	.set_slat_root = vmx_set_slat_root,
	.inject = vmx_inject,
};
