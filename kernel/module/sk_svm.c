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

extern char sk_launch_failed[];

#define CR4_SMEP (1ULL << 20)
#define CR4_SMAP (1ULL << 21)
#define PHYS_PAGE 0x000ffffffffff000ULL

int sk_svm_supported(const char **why)
{
	u32 eax, ebx, ecx, edx;
	u64 vmcr, efer;

	cpuid(0x80000001, &eax, &ebx, &ecx, &edx);
	if (!(ecx & (1 << 2))) {
		*why = "this CPU has no AMD SVM (CPUID 8000_0001h ECX bit 2); the VMX backend is not built yet";
		return 0;
	}
	cpuid(0x8000000a, &eax, &ebx, &ecx, &edx);
	if (!(edx & 1)) {
		*why = "SVM without nested paging (CPUID 8000_000Ah EDX bit 0)";
		return 0;
	}
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

u64 sk_hypercall(u64 nr, u64 a1, u64 a2, u64 a3)
{
	u64 ret;

	asm volatile("vmmcall" : "=a"(ret) : "a"(nr), "b"(a1), "c"(a2), "d"(a3) : "memory");
	return ret;
}

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
	__set_bit(INTERCEPT_MSR_PROT, ic);     /* EFER and VM_HSAVE_PA writes (see msrpm) */
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
	/* The host keeps the kernel's own top-level table: the one loaded now may be a process's. */
	native_write_cr3(sk.host_cr3);
}

/* ---- root-mode handler ------------------------------------------------------------------- */

/* The upper canonical half, for 4- and 5-level paging alike (0xff11... is the LA57 direct map). */
static inline bool is_kernel_addr(u64 a)
{
	return (s64)a < 0;
}

static u32 guest_tgid(struct sk_cpu *c)
{
	struct task_struct *t;

	/*
	 * Not through the GS base we run on: user mode may have set it (WRGSBASE) to any kernel
	 * address. The guest's per-cpu area of this CPU is fixed, recorded at load (c->percpu).
	 */
	t = READ_ONCE(*(struct task_struct **)(c->percpu + (unsigned long)&current_task));
	if (!is_kernel_addr((u64)t))
		return 0;
	return READ_ONCE(t->tgid);
}

static void record(struct sk_cpu *c, u32 kind, u32 region, u32 action, u64 extra)
{
	struct vmcb *v = c->vmcb;
	struct sk_ring *ring = c->ring;
	u64 seq = ring->head + 1;
	struct sk_event *e = &ring->ev[(seq - 1) & (SK_RING_ENTRIES - 1)];

	if (seq > SK_RING_ENTRIES)
		ring->overflow++;           /* the entry written now overwrites one never read from here */
	e->seq = 0;                     /* a reader seeing seq 0 or a stale seq skips a torn entry */
	barrier();
	e->tsc = rdtsc();
	e->cpu = c->cpu;
	e->container = c->container;
	e->pid = guest_tgid(c);
	e->kind = kind;
	e->exit_code = v->control.exit_code;
	e->exitinfo1 = v->control.exit_info_1;
	e->exitinfo2 = v->control.exit_info_2;
	e->rip = v->save.rip;
	e->cr3 = v->save.cr3;
	e->slat_root = v->control.nested_cr3;
	e->cpl = v->save.cpl;
	e->region = region;
	e->action = action;
	e->extra = extra;
	barrier();
	e->seq = seq;
	barrier();
	ring->head = seq;
}

static struct sk_counters *counters(struct sk_cpu *c)
{
	return &sk.containers[c->container].counters;
}

static u32 sk_container_of_protected(u64 pa)
{
	u32 id, i;

	for (id = 1; id < SK_MAX_CONTAINERS; id++)
		for (i = 0; i < sk.containers[id].nprotected; i++)
			if (sk.containers[id].protected_pa[i] == (pa & PHYS_PAGE))
				return id;
	return 0;
}

static void switch_container(struct sk_cpu *c, u32 id)
{
	struct vmcb *v = c->vmcb;

	if (id == c->container)
		return;
	c->container = id;
	v->control.nested_cr3 = sk.containers[id].ncr3;
	v->control.tlb_ctl = TLB_CONTROL_FLUSH_ALL_ASID;   /* no flush-by-ASID under QEMU TCG */
	counters(c)->cr3_switches_in++;
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

/* Decode "MOV CRn, reg" ([REX] 0F 22 /r, mod=11) at the guest's RIP (kernel text). */
static int decode_mov_to_cr(u64 rip, int want, int *reg, int *len)
{
	const u8 *p = (const u8 *)rip;
	int i = 0, rex = 0;
	u8 modrm;

	if (!is_kernel_addr(rip))
		return -1;
	if ((p[0] & 0xf0) == 0x40) {
		rex = p[0];
		i = 1;
	}
	if (p[i] != 0x0f || p[i + 1] != 0x22)
		return -1;
	modrm = p[i + 2];
	if ((modrm >> 6) != 3 || ((((modrm >> 3) & 7) | ((rex & 4) ? 8 : 0)) != want))
		return -1;
	*reg = (modrm & 7) | ((rex & 1) ? 8 : 0);
	*len = i + 3;
	return 0;
}

static void inject_gp(struct vmcb *v)
{
	v->control.event_inj = 13 | SVM_EVTINJ_TYPE_EXEPT | SVM_EVTINJ_VALID | SVM_EVTINJ_VALID_ERR;
	v->control.event_inj_err = 0;
}

static void do_cr3(struct sk_cpu *c, struct sk_gprs *g)
{
	struct vmcb *v = c->vmcb;
	int reg, len;
	u64 val;
	u32 before = c->container;

	counters(c)->exits_cr3++;
	if (decode_mov_to_cr(v->save.rip, 3, &reg, &len)) {
		record(c, SK_EV_EXIT, 0, SK_ACT_DENY, 0);
		inject_gp(v);
		return;
	}
	/* Bit 63 (PCID no-flush) is not part of CR3: VMRUN would refuse it. We flush anyway. */
	val = *gpr(v, g, reg) & ~(1ULL << 63);
	v->save.cr3 = val;
	v->save.rip += len;
	v->control.tlb_ctl = TLB_CONTROL_FLUSH_ALL_ASID;
	switch_container(c, sk_container_of_pgd(val & PHYS_PAGE));
	if (c->container != before) {
		record(c, SK_EV_CR3_SWITCH, 0, SK_ACT_SWITCH, val);
		sk_container_reap();
	}
}

static void do_cr4(struct sk_cpu *c, struct sk_gprs *g)
{
	struct vmcb *v = c->vmcb;
	int reg, len;
	u64 val, lost;

	if (decode_mov_to_cr(v->save.rip, 4, &reg, &len)) {
		record(c, SK_EV_EXIT, 0, SK_ACT_DENY, 0);
		inject_gp(v);
		return;
	}
	val = *gpr(v, g, reg);
	lost = v->save.cr4 & (CR4_SMEP | CR4_SMAP) & ~val;
	if (lost && c->container != 0) {
		val |= lost;                 /* the write happens, without clearing SMEP/SMAP */
		counters(c)->cr4_blocked++;
		record(c, SK_EV_CR4_BLOCKED, 0, SK_ACT_EMULATE, *gpr(v, g, reg));
	}
	v->save.cr4 = val;
	v->save.rip += len;
	v->control.tlb_ctl = TLB_CONTROL_FLUSH_ALL_ASID;  /* PGE toggles flush global entries */
}

static void do_msr(struct sk_cpu *c, struct sk_gprs *g)
{
	struct vmcb *v = c->vmcb;
	u32 msr = (u32)g->rcx;
	int write = v->control.exit_info_1 & 1;

	if (msr == MSR_EFER && write)
		v->save.efer = ((g->rdx << 32) | (u32)v->save.rax) | EFER_SVME;   /* SVME stays on */
	else if (msr == MSR_VM_HSAVE_PA && !write) {
		v->save.rax = 0;
		g->rdx = 0;
	}
	/* Writes to VM_HSAVE_PA are dropped: the host save area is ours. */
	v->save.rip += 2;
	record(c, SK_EV_EXIT, 0, SK_ACT_EMULATE, msr);
}

static void do_npf(struct sk_cpu *c)
{
	struct vmcb *v = c->vmcb;
	struct sk_container *ct = &sk.containers[c->container];
	u64 gpa = v->control.exit_info_2, page = gpa & PAGE_MASK;
	u32 region = sk_region_of(gpa, c->container);
	u32 pol = c->container ? SK_POLICY_OF(ct->policy, region) : SK_POL_DENY;
	u32 action = SK_ACT_DENY;
	u64 extra = 0;
	void *copy;

	ct->counters.exits_npf++;
	if (c->probe_entry) {
		/* The fault the probe armed: record it, undo the change, let the access run again. */
		extra = sk_pa(c->probe_entry);
		*c->probe_entry = c->probe_saved;
		c->probe_entry = NULL;
		v->control.tlb_ctl = TLB_CONTROL_FLUSH_ALL_ASID;
		record(c, SK_EV_VIOLATION, region, SK_ACT_PROBE, extra);
		return;
	}
	ct->counters.violations[region]++;
	if (region == SK_REGION_NONE || region == SK_REGION_SK_STATE || region == SK_REGION_PROTECTED)
		pol = SK_POL_DENY;   /* never negotiable */
	if (pol == SK_POL_ISOLATE && ct->nisolated < SK_MAX_ISOLATED && (copy = sk_page_alloc())) {
		memcpy(copy, phys_to_virt(page), PAGE_SIZE);
		if (!sk_map_4k(ct->ncr3, page, sk_pa(copy), 0x7)) {
			ct->iso_gpa[ct->nisolated] = page;
			ct->iso_copy[ct->nisolated++] = sk_pa(copy);
			ct->counters.isolated++;
			action = SK_ACT_ISOLATE;
			extra = sk_pa(copy);
		} else {
			sk_page_free(copy);
		}
	} else if (pol == SK_POL_LOG && !sk_map_4k(ct->ncr3, page, page, 0x7)) {
		/* Allowed from now on for this page in this container (see docs/module.md). */
		ct->counters.allowed++;
		action = SK_ACT_ALLOW;
	}
	if (action == SK_ACT_DENY) {
		inject_gp(v);
		ct->counters.denied++;
	}
	v->control.tlb_ctl = TLB_CONTROL_FLUSH_ALL_ASID;
	record(c, SK_EV_VIOLATION, region, action, extra);
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
		record(c, SK_EV_LIFECYCLE, 0, SK_ACT_NONE, 0);
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
	g->rax_unused = v->save.rax;
	return 1;
}

static int do_hypercall(struct sk_cpu *c, struct sk_gprs *g)
{
	struct vmcb *v = c->vmcb;
	u64 nr = v->save.rax, a1 = g->rbx, a2 = g->rcx, a3 = g->rdx;
	u64 res = (u64)-1;
	int nonroot = c->container != 0;

	counters(c)->exits_vmmcall++;
	__atomic_fetch_add(&sk_desc.hypercalls, 1, __ATOMIC_RELAXED);
	if (v->save.cpl != 0) {
		/* Hypercalls are for the guest kernel only: from user mode, #UD (SIGILL) as on a CPU
		 * without a hypervisor; RIP stays on the VMMCALL (a fault). */
		v->control.event_inj = X86_TRAP_UD | SVM_EVTINJ_TYPE_EXEPT | SVM_EVTINJ_VALID;
		record(c, SK_EV_HYPERCALL, 0, SK_ACT_DENY, nr);
		return 0;
	}
	switch (nr) {
	case SK_HC_PING:
		res = SK_MAGIC;
		break;
	case SK_HC_DEVIRT:
		if (!nonroot)
			return leave(c, g, 0);
		break;
	case SK_HC_NEW_CONTAINER:
		if (!nonroot)
			res = (u64)(s64)sk_container_new((u32)a1, (u32)a2,
							 is_kernel_addr(a3) ? (const char *)a3 : NULL);
		break;
	case SK_HC_ADD_PGD:
		/* From non-root mode only into the caller's own container (fork, exec). */
		if (!nonroot || a1 == c->container) {
			res = (u64)(s64)sk_container_add_pgd((u32)a1, a2);
			if (!res && (v->save.cr3 & PHYS_PAGE) == (a2 & PHYS_PAGE))
				switch_container(c, (u32)a1);
		}
		break;
	case SK_HC_DEL_PGD:
		if (!nonroot || sk_container_of_pgd(a1) == c->container) {
			sk_container_del_pgd(a1);
			res = 0;
		}
		break;
	case SK_HC_FREE_CONTAINER:
		if (!nonroot && c->container != a1)
			res = (u64)(s64)sk_container_free((u32)a1);
		break;
	case SK_HC_RELEASE:
		if (a1 > 0 && a1 < SK_MAX_CONTAINERS && (!nonroot || a1 == c->container) &&
		    sk.containers[a1].active == 1) {
			sk.containers[a1].active = 2;
			res = 0;
		}
		break;
	case SK_HC_PROTECT:
		/* Only a non-root container can own a protected page: it is hidden from all others. */
		if (nonroot)
			res = (u64)(s64)sk_protect(c->container, a1, a2 & SK_PROT_VISIBLE_TO_ROOT);
		break;
	case SK_HC_UNPROTECT: {
		u32 owner = sk_container_of_protected(a1);

		if (owner && (!nonroot || owner == c->container))
			res = (u64)(s64)(sk_unprotect(a1) < 0 ? -1 : 0);
		break;
	}
	case SK_HC_PROBE_GET:
	case SK_HC_PROBE_SET:
		if (sk_probe && nonroot && a2 >= 1 && a2 <= (u64)sk.nlevels) {
			u64 *e = sk_entry_ptr(sk.containers[c->container].ncr3, a1, (int)a2);

			if (e && nr == SK_HC_PROBE_GET) {
				res = *e;
			} else if (e) {
				c->probe_saved = *e;
				c->probe_entry = e;
				*e = a3;
				res = 0;
			}
			v->control.tlb_ctl = TLB_CONTROL_FLUSH_ALL_ASID;
		}
		break;
	case SK_HC_PROBE_CLEAR:
		res = 0;
		if (c->probe_entry) {
			*c->probe_entry = c->probe_saved;
			c->probe_entry = NULL;
			v->control.tlb_ctl = TLB_CONTROL_FLUSH_ALL_ASID;
			res = 1;
		}
		break;
	case SK_HC_QUERY:
		if (a1 < SK_MAX_CONTAINERS && (!nonroot || a1 == c->container) && is_kernel_addr(a2)) {
			memcpy((void *)a2, &sk.containers[a1].counters, sizeof(struct sk_counters));
			res = 0;
		}
		break;
	}
	v->save.rax = res;
	v->save.rip += 3;
	record(c, SK_EV_HYPERCALL, 0, SK_ACT_NONE, nr);
	return 0;
}

/* Called by sk_vmrun.S after every #VMEXIT; returns non-zero to leave SVM on this CPU. */
int sk_svm_handle_exit(struct sk_cpu *c, struct sk_gprs *g)
{
	struct vmcb *v = c->vmcb;
	u64 code = v->control.exit_code;
	int ret = 0;

	if (!c->launched) {
		if (code == (u64)SVM_EXIT_ERR) {
			c->launch_error = -1;
			return leave(c, g, 1);
		}
		c->launched = 1;
		record(c, SK_EV_LIFECYCLE, 0, SK_ACT_NONE, 1);
	}
	v->control.tlb_ctl = TLB_CONTROL_DO_NOTHING;
	counters(c)->exits++;
	__atomic_fetch_add(&sk_desc.total_exits, 1, __ATOMIC_RELAXED);
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
		do_npf(c);
		if (c->container)
			record(c, SK_EV_ENTER_NR, 0, SK_ACT_NONE, 0);
		break;
	default:
		counters(c)->exits_other++;
		record(c, SK_EV_EXIT, 0, SK_ACT_NONE, 0);
		if (code == (u64)SVM_EXIT_ERR || code == SVM_EXIT_SHUTDOWN)
			ret = leave(c, g, 0);   /* cannot go on under SVM: hand the CPU back */
		break;
	}
	/*
	 * A container's tables changed (on this CPU, in the exit just handled, or on another CPU):
	 * flush before running again. Checked last so that a change made by this exit counts too.
	 * The guest side forces an exit on every CPU (sk_shootdown) where a stale entry would
	 * grant access (protected pages).
	 */
	if (!ret && c->flush_gen != READ_ONCE(sk.gen)) {
		c->flush_gen = READ_ONCE(sk.gen);
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

int sk_svm_virtualize_all(void)
{
	atomic_set(&sk_failed, 0);
	on_each_cpu(virt_one, NULL, 1);
	return atomic_read(&sk_failed) ? -EIO : 0;
}

static void devirt_one(void *unused)
{
	int cpu = smp_processor_id();

	if (sk_desc.cpu_mask & (1u << cpu)) {
		sk_hypercall(SK_HC_DEVIRT, 0, 0, 0);
		__atomic_fetch_and(&sk_desc.cpu_mask, ~(1u << cpu), __ATOMIC_RELAXED);
	}
}

void sk_svm_devirtualize_all(void)
{
	on_each_cpu(devirt_one, NULL, 1);
}
