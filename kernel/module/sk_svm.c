// SPDX-License-Identifier: GPL-2.0
/*
 * AMD SVM backend: the running kernel becomes an SVM guest in place, on every CPU, under nested
 * paging; this file holds the VMCB set-up and the root-mode (R) exit handler.
 *
 * The R handler runs with GIF=0 on a per-CPU host stack, with the host CR3 set to the kernel's
 * own init_top_pgt (the CR3 at launch may belong to a process that exits). VMRUN does not switch
 * GS, so the handler may run on a user GS base: it must not touch per-CPU data, printk, locks the
 * guest takes, or anything traced. It records events in per-CPU rings and never sleeps.
 * QEMU 7.2 TCG has no next-RIP saving and no decode assists: MOV to CR3/CR4 is decoded here.
 */
#include <linux/kernel.h>
#include <linux/smp.h>
#include <linux/sched.h>
#include <linux/string.h>
#include <linux/mm.h>
#include <asm/io.h>
#include <asm/svm.h>
#include <asm/trapnr.h>
#include <asm/msr.h>
#include <asm/desc.h>
#include <asm/processor.h>
#include <asm/special_insns.h>
#include <asm/debugreg.h>
#include "sk.h"

#define MSR_SVM_KEY 0xc0010118   /* SVM-Lock key (APM 15.31); not in msr-index.h */

extern char sk_launch_failed[];

static int svm_supported(const char **why)
{
	u32 eax, ebx, ecx, edx;
	u64 vmcr, efer;

	cpuid(0x80000001, &eax, &ebx, &ecx, &edx);
	if (!(ecx & (1 << 2))) {
		*why = "this CPU has no AMD SVM (CPUID 8000_0001h ECX bit 2)";
		return 0;
	}
	cpuid(0x8000000a, &eax, &ebx, &ecx, &edx);
	if (!(edx & 1)) {
		*why = "SVM without nested paging (CPUID 8000_000Ah EDX bit 0)";
		return 0;
	}
	sk.slat_caps = edx;
	rdmsrl(MSR_VM_CR, vmcr);
	if (vmcr & (1 << 4)) {
		*why = "SVM is disabled by firmware (VM_CR.SVMDIS)";
		return 0;
	}
	rdmsrl(MSR_EFER, efer);
	if (efer & EFER_SVME) {
		*why = "EFER.SVME is already set: another hypervisor runs on this CPU";
		return 0;
	}
	return 1;
}

/* ---- guest-side helpers ------------------------------------------------------------------ */

static void seg_from_gdt(struct vmcb_seg *s, u16 sel, const struct desc_ptr *gdt)
{
	u64 d, hi;

	s->selector = sel;
	if (!(sel & ~3)) {
		s->attrib = 0;
		s->limit = 0;
		s->base = 0;
		return;
	}
	d = *(u64 *)(gdt->address + (sel & ~7));
	s->attrib = ((d >> 40) & 0xff) | (((d >> 52) & 0xf) << 8);
	s->limit = (d & 0xffff) | ((d >> 32) & 0xf0000);
	if (d & (1ULL << 55))
		s->limit = (s->limit << 12) | 0xfff;
	s->base = ((d >> 16) & 0xffffff) | (((d >> 56) & 0xff) << 24);
	if (!(d & (1ULL << 44))) {    /* system descriptor (TSS, LDT): 16 bytes in long mode */
		hi = *(u64 *)(gdt->address + (sel & ~7) + 8);
		s->base |= (hi & 0xffffffff) << 32;
	}
}

/* Called by sk_launch on the host stack: the VMCB's guest state is the CPU's own state now. */
void sk_svm_prepare_vmcb(struct sk_cpu *c)
{
	struct vmcb *v = c->vmcb;
	struct desc_ptr gdt, idt;
	unsigned long *ic = (unsigned long *)v->control.intercepts;
	u16 sel;

	memset(v, 0, PAGE_SIZE);
	__set_bit(INTERCEPT_VMRUN, ic);        /* required by VMRUN's consistency checks */
	__set_bit(INTERCEPT_VMMCALL, ic);      /* hypercalls */
	__set_bit(INTERCEPT_CR3_WRITE, ic);    /* container switch on address-space switch */
	__set_bit(INTERCEPT_CR4_WRITE, ic);    /* SMEP/SMAP cannot be cleared from non-root mode */
	__set_bit(INTERCEPT_MSR_PROT, ic);     /* EFER, VM_CR, SVM_KEY writes; VM_HSAVE_PA (see msrpm) */
	/* Every SVM instruction that reaches host state (APM 15.5-15.27): the guest gets #UD, as on a
	 * CPU whose EFER.SVME is clear. VMSAVE/VMLOAD would read or write any host-physical page
	 * (the pool included), STGI/CLGI would change the host's GIF, SKINIT would reinitialise. */
	__set_bit(INTERCEPT_VMLOAD, ic);
	__set_bit(INTERCEPT_VMSAVE, ic);
	__set_bit(INTERCEPT_STGI, ic);
	__set_bit(INTERCEPT_CLGI, ic);
	__set_bit(INTERCEPT_SKINIT, ic);
	__set_bit(INTERCEPT_INVLPGA, ic);
	v->control.iopm_base_pa = sk_pa(sk.iopm);
	v->control.msrpm_base_pa = sk_pa(sk.msrpm);
	v->control.asid = 1;
	v->control.tlb_ctl = TLB_CONTROL_FLUSH_ALL_ASID;
	v->control.nested_ctl = SVM_NESTED_CTL_NP_ENABLE;
	v->control.nested_cr3 = sk.root_ncr3;
	/* V_INTR_MASKING stays off: physical interrupts reach the guest's IDT under its own IF. */

	native_store_gdt(&gdt);
	store_idt(&idt);
	savesegment(es, sel); seg_from_gdt(&v->save.es, sel, &gdt);
	savesegment(cs, sel); seg_from_gdt(&v->save.cs, sel, &gdt);
	savesegment(ss, sel); seg_from_gdt(&v->save.ss, sel, &gdt);
	savesegment(ds, sel); seg_from_gdt(&v->save.ds, sel, &gdt);
	savesegment(fs, sel); seg_from_gdt(&v->save.fs, sel, &gdt);
	savesegment(gs, sel); seg_from_gdt(&v->save.gs, sel, &gdt);
	asm volatile("str %0" : "=r"(sel)); seg_from_gdt(&v->save.tr, sel, &gdt);
	asm volatile("sldt %0" : "=r"(sel)); seg_from_gdt(&v->save.ldtr, sel, &gdt);
	rdmsrl(MSR_FS_BASE, v->save.fs.base);
	rdmsrl(MSR_GS_BASE, v->save.gs.base);
	rdmsrl(MSR_KERNEL_GS_BASE, v->save.kernel_gs_base);
	v->save.gdtr.base = gdt.address;
	v->save.gdtr.limit = gdt.size;
	v->save.idtr.base = idt.address;
	v->save.idtr.limit = idt.size;
	rdmsrl(MSR_EFER, v->save.efer);
	v->save.cr0 = native_read_cr0();
	v->save.cr2 = native_read_cr2();
	v->save.cr3 = __native_read_cr3();
	v->save.cr4 = native_read_cr4();
	v->save.dr6 = native_get_debugreg(6);
	v->save.dr7 = native_get_debugreg(7);
	v->save.rflags = native_save_fl();
	v->save.rip = c->guest_rip;
	v->save.rsp = c->guest_rsp;
	v->save.cpl = 0;
	rdmsrl(MSR_IA32_CR_PAT, v->save.g_pat);
	rdmsrl(MSR_STAR, v->save.star);
	rdmsrl(MSR_LSTAR, v->save.lstar);
	rdmsrl(MSR_CSTAR, v->save.cstar);
	rdmsrl(MSR_SYSCALL_MASK, v->save.sfmask);
	/* The host runs on its own tables (a copy in the pool): the one loaded now may be a process's. */
	native_write_cr3(sk.host_cr3);
}

/* ---- root-mode handler ------------------------------------------------------------------- */

static inline bool is_kernel_addr(u64 a)
{
	return (s64)a < 0;
}

static u64 *gpr(struct vmcb *v, struct sk_gprs *g, int r)
{
	switch (r) {
	case 0: return &v->save.rax;
	case 1: return &g->rcx;
	case 2: return &g->rdx;
	case 3: return &g->rbx;
	case 4: return &v->save.rsp;
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

/*
 * A guest-physical page the handler may read for the guest: RAM, mapped in the direct map of its
 * tables, and neither the pool nor the descriptor and state pages nor another container's
 * protected page (a decode must not become an oracle on them). Guest-physical is host-physical
 * but for isolated copies, which hold the same bytes as the frame until written.
 */
static bool guest_readable(struct sk_cpu *c, u64 pa)
{
	u32 region = sk_region_of(pa, c->container);

	return pfn_valid(PHYS_PFN(pa)) && region != SK_REGION_SK_STATE && region != SK_REGION_PROTECTED &&
	       sk_host_mapped((unsigned long)phys_to_virt(pa), 1);
}

/*
 * One byte of guest memory at a guest-linear address, through the guest's own page tables (CR3
 * at the exit) and the direct map: what the CPU fetched, wherever it was (kernel text, a module
 * loaded after this one), without the handler's tables having to map it. Returns -1 when not
 * mapped or not readable.
 */
static int guest_byte(struct sk_cpu *c, u64 cr3, u64 cr4, u64 la)
{
	int level = (cr4 & X86_CR4_LA57) ? 5 : 4;
	u64 table = cr3 & PTE_PFN_MASK, e = 0, pa;

	for (; level >= 1; level--) {
		u64 pte = table + 8 * ((la >> (12 + 9 * (level - 1))) & 511);

		if (!guest_readable(c, pte))
			return -1;
		e = READ_ONCE(*(u64 *)phys_to_virt(pte));
		if (!(e & _PAGE_PRESENT))
			return -1;
		if (level == 1 || (level <= 3 && (e & _PAGE_PSE)))
			break;
		table = e & PTE_PFN_MASK;
	}
	pa = (e & PTE_PFN_MASK & ~((1ULL << (12 + 9 * (level - 1))) - 1)) | (la & ((1ULL << (12 + 9 * (level - 1))) - 1));
	return guest_readable(c, pa) ? *(u8 *)phys_to_virt(pa) : -1;
}

/* Decode "MOV CRn, reg" ([REX] 0F 22 /r, mod=11) at the guest's RIP, a kernel address. Bytes are
 * read one at a time, only as far as the instruction goes (3, or 4 with REX). */
static int decode_mov_to_cr(struct sk_cpu *c, struct vmcb *v, int want, int *reg, int *len)
{
	u64 rip = v->save.rip;
	int i = 0, rex = 0, b;
	u8 modrm;

#define BYTE(k) ((b = guest_byte(c, v->save.cr3, v->save.cr4, rip + (k))) < 0 ? -1 : b)
	if (!is_kernel_addr(rip) || BYTE(0) < 0)
		return -1;
	if ((b & 0xf0) == 0x40) {
		rex = b;
		i = 1;
	}
	if (BYTE(i) != 0x0f || BYTE(i + 1) != 0x22 || BYTE(i + 2) < 0)
		return -1;
	modrm = b;
#undef BYTE
	if ((modrm >> 6) != 3 || ((((modrm >> 3) & 7) | ((rex & 4) ? 8 : 0)) != want))
		return -1;
	*reg = (modrm & 7) | ((rex & 1) ? 8 : 0);
	*len = i + 3;
	return 0;
}

static void svm_inject(struct sk_cpu *c, int vector)
{
	struct vmcb *v = c->vmcb;

	v->control.event_inj = vector | SVM_EVTINJ_TYPE_EXEPT | SVM_EVTINJ_VALID;
	if (vector == X86_TRAP_GP) {
		v->control.event_inj |= SVM_EVTINJ_VALID_ERR;
		v->control.event_inj_err = 0;
	}
}

/*
 * An exit taken while the CPU delivered an event (EXITINTINFO valid: an NPF on the IDT, the stack
 * or the GDT during delivery) must deliver it again (APM 15.7.2), or it is lost. A lost external
 * interrupt was already acknowledged at the local APIC: its ISR bit stays set, no EOI comes, and
 * every vector of equal or lower priority, the timer's included, is blocked for good (a guest
 * that hung in CI while probing). INTn, INT3 and INTO are not reinjected: RIP is still on the
 * instruction, which raises them again when it runs.
 */
static void svm_redeliver(struct sk_cpu *c)
{
	struct vmcb *v = c->vmcb;
	u32 info = (u32)c->ex.intinfo;
	u32 vector = info & SVM_EXITINTINFO_VEC_MASK, type = info & SVM_EXITINTINFO_TYPE_MASK;

	if (!(info & SVM_EXITINTINFO_VALID) || type == SVM_EXITINTINFO_TYPE_SOFT)
		return;
	if (type == SVM_EXITINTINFO_TYPE_EXEPT) {
		/* QEMU (7.2) reports every event but INTn as an exception, and refuses to inject an
		 * exception with vector 2 or above 30: give interrupts and NMIs their own type back. */
		if (vector == X86_TRAP_NMI)
			type = SVM_EXITINTINFO_TYPE_NMI;
		else if (vector >= 32)
			type = SVM_EXITINTINFO_TYPE_INTR;
		else if (vector == X86_TRAP_BP || vector == X86_TRAP_OF)
			return;
	}
	if (v->control.event_inj & SVM_EVTINJ_VALID) {
		/* The handler raises a fault (a denied access) on this very delivery: a contributory
		 * fault or #PF during the delivery of one is a double fault (APM 8.2.9); on an
		 * interrupt's delivery the fault wins, as on a processor. */
		if (type == SVM_EXITINTINFO_TYPE_EXEPT &&
		    (vector == X86_TRAP_DE || (vector >= X86_TRAP_TS && vector <= X86_TRAP_PF))) {
			v->control.event_inj = X86_TRAP_DF | SVM_EVTINJ_TYPE_EXEPT | SVM_EVTINJ_VALID |
					       SVM_EVTINJ_VALID_ERR;
			v->control.event_inj_err = 0;
		}
		return;
	}
	v->control.event_inj = vector | type | SVM_EVTINJ_VALID | (info & SVM_EXITINTINFO_VALID_ERR);
	v->control.event_inj_err = c->ex.intinfo >> 32;
}

static void svm_set_slat_root(struct sk_cpu *c, u64 top_pa)
{
	((struct vmcb *)c->vmcb)->control.nested_cr3 = top_pa;
}

static void do_cr3(struct sk_cpu *c, struct sk_gprs *g)
{
	struct vmcb *v = c->vmcb;
	int reg, len;
	u64 val;

	if (decode_mov_to_cr(c, v, 3, &reg, &len)) {
		sk_counters_of(c)->exits_cr3++;
		sk_attack(c, SK_ATTACK_CR, 3);
		svm_inject(c, X86_TRAP_GP);
		return;
	}
	/* Bit 63 (PCID no-flush) is not part of CR3: VMRUN would refuse it. We flush anyway. */
	val = *gpr(v, g, reg) & ~(1ULL << 63);
	v->save.cr3 = val;
	v->save.rip += len;
	c->ex.cr3 = val;
	c->ex.rip = v->save.rip;
	sk_cr3_written(c, val);
}

static void do_cr4(struct sk_cpu *c, struct sk_gprs *g)
{
	struct vmcb *v = c->vmcb;
	int reg, len;

	if (decode_mov_to_cr(c, v, 4, &reg, &len) || sk_cr4_reserved(*gpr(v, g, reg))) {
		sk_attack(c, SK_ATTACK_CR, 4);
		svm_inject(c, X86_TRAP_GP);
		return;
	}
	v->save.cr4 = sk_cr4_filter(c, v->save.cr4, *gpr(v, g, reg));
	v->save.rip += len;
}

static void do_msr(struct sk_cpu *c, struct sk_gprs *g)
{
	struct vmcb *v = c->vmcb;
	u32 msr = (u32)g->rcx;
	int write = v->control.exit_info_1 & 1;
	u64 val = (g->rdx << 32) | (u32)v->save.rax;

	if (write && (msr == MSR_VM_CR || msr == MSR_SVM_KEY ||
		      (msr == MSR_EFER && sk_efer_reserved(val | EFER_SVME)))) {
		/* VM_CR and SVM_KEY control SVM itself; an EFER with reserved bits would make the next
		 * VMRUN fail. #GP, as a CPU raises for a reserved bit, and nothing reaches the VMCB. */
		sk_attack(c, SK_ATTACK_MSR, msr);
		svm_inject(c, X86_TRAP_GP);
		return;
	}
	if (msr == MSR_EFER && write)
		v->save.efer = val | EFER_SVME;   /* SVME stays on */
	else if (msr == MSR_VM_HSAVE_PA && !write) {
		v->save.rax = 0;
		g->rdx = 0;
	}
	/* Writes to VM_HSAVE_PA are dropped: the host save area is ours. */
	v->save.rip += 2;
	sk_record(c, SK_EV_EXIT, 0, SK_ACT_EMULATE, msr);
}

/* Leave SVM on this CPU and resume the guest natively (sk_vmrun.S .Lleave). */
static int leave(struct sk_cpu *c, struct sk_gprs *g, int failed)
{
	struct vmcb *v = c->vmcb;
	u64 *sp, rip, rsp;

	if (failed) {
		rip = (u64)sk_launch_failed;
		rsp = c->guest_rsp;
	} else {
		rip = v->save.rip + 3;     /* past VMMCALL */
		rsp = v->save.rsp;
		sk_record(c, SK_EV_LIFECYCLE, 0, SK_ACT_NONE, 0);
	}
	native_write_cr3(v->save.cr3);
	asm volatile("mov %0, %%cr4" :: "r"(v->save.cr4) : "memory");
	native_set_debugreg(7, v->save.dr7);
	asm volatile("stgi" ::: "memory");
	wrmsrl(MSR_EFER, v->save.efer & ~EFER_SVME);
	sp = (u64 *)(rsp - 16);
	sp[0] = failed ? native_save_fl() : v->save.rflags;
	sp[1] = rip;
	c->guest_rsp = (u64)sp;
	g->rax = v->save.rax;
	return 1;
}

static int do_hypercall(struct sk_cpu *c, struct sk_gprs *g)
{
	struct vmcb *v = c->vmcb;
	u64 res;

	switch (sk_hypercall_exit(c, v->save.rax, g->rbx, g->rcx, g->rdx, &res)) {
	case SK_HC_LEAVE:
		return leave(c, g, 0);
	case SK_HC_DONE:
		v->save.rax = res;
		v->save.rip += 3;
		break;
	}
	return 0;
}

/* Called by sk_vmrun.S after every #VMEXIT; returns non-zero to leave SVM on this CPU. */
int sk_svm_handle_exit(struct sk_cpu *c, struct sk_gprs *g)
{
	struct vmcb *v = c->vmcb;
	u64 code = v->control.exit_code;
	int ret = 0;

	c->ex.code = code;
	c->ex.info1 = v->control.exit_info_1;
	c->ex.info2 = v->control.exit_info_2;
	c->ex.gla = 0;
	c->ex.rip = v->save.rip;
	c->ex.cr3 = v->save.cr3;
	c->ex.slat_root = v->control.nested_cr3;
	c->ex.cpl = v->save.cpl;
	c->ex.intinfo = v->control.exit_int_info | ((u64)v->control.exit_int_info_err << 32);
	v->control.event_inj = 0;      /* nothing to inject unless this exit's handling says so */
	if (!c->launched) {
		/* QEMU stores VMEXIT_INVALID as the 32-bit value 0xffffffff (not 64-bit -1). */
		if ((u32)code == (u32)SVM_EXIT_ERR) {
			c->launch_error = -1;
			return leave(c, g, 1);
		}
		c->launched = 1;
		sk_record(c, SK_EV_LIFECYCLE, 0, SK_ACT_NONE, 1);
	}
	v->control.tlb_ctl = TLB_CONTROL_DO_NOTHING;
	sk_note_guest_regs(c, v->save.cr0, v->save.cr3, v->save.cr4, v->save.efer);
	sk_exit_begin(c);
	switch (code) {
	case SVM_EXIT_VMMCALL:
		ret = do_hypercall(c, g);
		break;
	case SVM_EXIT_WRITE_CR3:
		do_cr3(c, g);
		break;
	case SVM_EXIT_WRITE_CR4:
		do_cr4(c, g);
		break;
	case SVM_EXIT_MSR:
		do_msr(c, g);
		break;
	case SVM_EXIT_NPF:
		sk_violation(c, v->control.exit_info_2);
		break;
	case SVM_EXIT_VMRUN:
	case SVM_EXIT_VMLOAD:
	case SVM_EXIT_VMSAVE:
	case SVM_EXIT_STGI:
	case SVM_EXIT_CLGI:
	case SVM_EXIT_SKINIT:
	case SVM_EXIT_INVLPGA:
		sk_counters_of(c)->exits_other++;
		sk_attack(c, SK_ATTACK_EXIT, code);
		svm_inject(c, X86_TRAP_UD);
		break;
	default:
		sk_counters_of(c)->exits_other++;
		/* A failed VMRUN (guest state the intercepts should have kept valid) or a shutdown:
		 * fail closed. Handing the CPU back would run the kernel unvirtualised, uncontained. */
		if ((u32)code == (u32)SVM_EXIT_ERR || code == SVM_EXIT_SHUTDOWN) {
			sk_fatal(c);
			break;
		}
		sk_record(c, SK_EV_EXIT, 0, SK_ACT_NONE, 0);
		break;
	}
	if (!ret) {
		svm_redeliver(c);
		sk_exit_end(c);
		/* No flush-by-ASID under QEMU TCG: flush everything. */
		if (c->flush)
			v->control.tlb_ctl = TLB_CONTROL_FLUSH_ALL_ASID;
	}
	return ret;
}

/* ---- bring-up and tear-down (guest side) -------------------------------------------------- */

static atomic_t sk_failed;

static void virt_one(void *unused)
{
	int cpu = smp_processor_id();
	struct sk_cpu *c = sk.cpus[cpu];
	u64 efer;

	if (!c)
		return;
	__atomic_fetch_or(&sk.cr4_allowed, native_read_cr4() & ~X86_CR4_VMXE, __ATOMIC_RELAXED);
	rdmsrl(MSR_EFER, efer);
	wrmsrl(MSR_EFER, efer | EFER_SVME);
	wrmsrl(MSR_VM_HSAVE_PA, sk_pa(c->hsave));
	if (sk_launch(c)) {
		wrmsrl(MSR_EFER, efer);
		atomic_inc(&sk_failed);
		return;
	}
	__atomic_fetch_or(&sk_desc.cpu_mask, 1u << cpu, __ATOMIC_RELAXED);
}

static int svm_virtualize_all(void)
{
	atomic_set(&sk_failed, 0);
	on_each_cpu(virt_one, NULL, 1);
	return atomic_read(&sk_failed) ? -EIO : 0;
}

static void devirt_one(void *unused)
{
	int cpu = smp_processor_id();

	/* The handler clears this CPU's bit in the descriptor (read-only in containers). */
	if (sk_desc.cpu_mask & (1u << cpu))
		sk_hypercall(SK_HC_DEVIRT, 0, 0, 0);
}

static void svm_devirtualize_all(void)
{
	on_each_cpu(devirt_one, NULL, 1);
}

/* Intercept an MSR in the MSR permission map (APM 15.11: 2 bits per MSR, read then write; three
 * 2 KiB ranges, for MSRs 0-1FFFh, C000_0000h-C000_1FFFh, C001_0000h-C001_1FFFh). */
static void msrpm_intercept(u32 msr, int read, int write)
{
	u32 base = msr >= 0xc0010000 ? 0x1000 : msr >= 0xc0000000 ? 0x800 : 0;
	u32 bit = (msr & 0x1fff) * 2;

	((u8 *)sk.msrpm)[base + bit / 8] |= ((read ? 1 : 0) | (write ? 2 : 0)) << (bit % 8);
}

/* Writes to EFER (SVME stays set, no reserved bit), VM_CR and SVM_KEY; any access to VM_HSAVE_PA:
 * the guest can neither leave SVM nor move the host save area. */
static int svm_setup(void)
{
	BUILD_BUG_ON(offsetof(struct sk_cpu, host_rsp) != 0 || offsetof(struct sk_cpu, guest_rsp) != 8 ||
		     offsetof(struct sk_cpu, guest_rip) != 16 || offsetof(struct sk_cpu, vmcb_pa) != 24);
	msrpm_intercept(MSR_EFER, 0, 1);
	msrpm_intercept(MSR_VM_CR, 0, 1);
	msrpm_intercept(MSR_SVM_KEY, 0, 1);
	msrpm_intercept(MSR_VM_HSAVE_PA, 1, 1);
	return 0;
}

const struct sk_backend sk_svm_backend = {
	.name = "SVM, nested paging",
	.vendor = SK_VENDOR_SVM,
	.supported = svm_supported,
	.setup = svm_setup,
	.virtualize_all = svm_virtualize_all,
	.devirtualize_all = svm_devirtualize_all,
	.set_slat_root = svm_set_slat_root,
	.inject = svm_inject,
};
