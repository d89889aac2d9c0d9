// SPDX-License-Identifier: GPL-2.0
/*
 * The vendor-neutral part of the root-mode (R) handler: event rings, container switches, the
 * policies applied to second-level violations, hypercalls. The backends (sk_svm.c, sk_vmx.c)
 * decode their exit into c->ex and call in here; what needs the VMCB or VMCS goes through
 * sk_be->set_slat_root and sk_be->inject.
 *
 * Runs in root mode with interrupts off, on the per-CPU host stack. Under SVM the GS base is
 * the guest's (possibly user-set), so nothing here touches per-CPU data, printk, or locks the
 * guest takes, and nothing sleeps.
 */
#include <linux/kernel.h>
#include <linux/sched.h>
#include <linux/string.h>
#include <linux/mm.h>
#include <asm/io.h>
#include <asm/trapnr.h>
#include <asm/msr.h>
#include "sk.h"

#define CR4_SMEP (1ULL << 20)
#define CR4_SMAP (1ULL << 21)
#define PHYS_PAGE 0x000ffffffffff000ULL

/* The upper canonical half, for 4- and 5-level paging alike (0xff11... is the LA57 direct map). */
static inline bool is_kernel_addr(u64 a)
{
	return (s64)a < 0;
}

static u32 guest_tgid(struct sk_cpu *c)
{
	struct task_struct *t;

	/*
	 * Not through the GS base: under SVM it is the guest's, which user mode may have set
	 * (WRGSBASE) to any kernel address. The guest's per-cpu area of this CPU is fixed, recorded
	 * at load (c->percpu).
	 */
	t = READ_ONCE(*(struct task_struct **)(c->percpu + (unsigned long)&current_task));
	/* A pointer a kernel writer may have set: read only where the handler's tables map the
	 * field read (one page walk per recorded event), never a fault in root mode. */
	if (!is_kernel_addr((u64)t) || !sk_host_mapped((unsigned long)&t->tgid, sizeof(t->tgid)))
		return 0;
	return READ_ONCE(t->tgid);
}

static void ring_write(struct sk_ring *ring, struct sk_cpu *c, u32 kind, u32 region, u32 action, u64 extra)
{
	u64 seq = ring->head + 1;
	struct sk_event *e = &ring->ev[(seq - 1) & (ring->entries - 1)];

	if (seq > ring->entries)
		ring->overflow++;           /* the entry written now overwrites the oldest one */
	e->seq = 0;                     /* a reader seeing seq 0 or a stale seq skips a torn entry */
	barrier();
	e->tsc = rdtsc();
	e->cpu = c->cpu;
	e->container = c->container;
	e->pid = guest_tgid(c);
	e->kind = kind;
	e->exit_code = c->ex.code;
	e->exitinfo1 = c->ex.info1;
	e->exitinfo2 = c->ex.info2;
	e->rip = c->ex.rip;
	e->cr3 = c->ex.cr3;
	e->slat_root = c->ex.slat_root;
	e->cpl = c->ex.cpl;
	e->region = region;
	e->action = action;
	e->extra = extra;
	e->guest_linear = c->ex.gla;
	e->exitintinfo = c->ex.intinfo;
	if (ring->ring_kind == SK_RING_SECURITY)
		((struct sk_walk *)&ring->ev[ring->entries])[(seq - 1) & (ring->entries - 1)] =
			kind == SK_EV_VIOLATION ? c->ex.walk : (struct sk_walk){};
	barrier();
	e->seq = seq;
	barrier();
	ring->head = seq;
}

/* Security events go to their own ring, which no flood of ordinary exits can overwrite. */
void sk_record(struct sk_cpu *c, u32 kind, u32 region, u32 action, u64 extra)
{
	ring_write(SK_EV_IS_SECURITY(kind) ? c->sec_ring : c->ring, c, kind, region, action, extra);
}

/*
 * Something only an attacker does (the handler has refused it already). Recorded in the security
 * ring; a flood from one container is sampled (the first 64, then every power of two) so that it
 * cannot push that ring's earlier events out. The container's `attacks` counter counts them all.
 */
void sk_attack(struct sk_cpu *c, u32 class, u64 what)
{
	u64 n = __atomic_add_fetch(&sk_counters_of(c)->attacks, 1, __ATOMIC_RELAXED);

	if (n <= 64 || !(n & (n - 1)))
		sk_record(c, SK_EV_ATTACK, class, SK_ACT_DENY, what);
}

/*
 * The handler cannot go on safely on this CPU (a VM entry failed although the guest state was
 * validated, or an exit it does not know): fail closed. The CPU records why and stops with GIF=0
 * (no interrupt, no NMI); it never silently goes back to running the kernel unvirtualised.
 */
void sk_fatal(struct sk_cpu *c)
{
	sk_record(c, SK_EV_FATAL, 0, SK_ACT_DENY, c->ex.code);
	for (;;)
		asm volatile("cli; hlt" ::: "memory");
}

struct sk_counters *sk_counters_of(struct sk_cpu *c)
{
	return &sk.containers[c->container].counters;
}

void sk_note_guest_regs(struct sk_cpu *c, u64 cr0, u64 cr3, u64 cr4, u64 efer)
{
	struct sk_guest_regs *r = &sk_desc.guest[c->cpu];

	r->cr0 = cr0;
	r->cr3 = cr3;
	r->cr4 = cr4;
	r->efer = efer;
}

void sk_exit_begin(struct sk_cpu *c)
{
	c->flush = 0;
	sk_counters_of(c)->exits++;
	__atomic_fetch_add(&sk_desc.total_exits, 1, __ATOMIC_RELAXED);
}

/*
 * A container's tables changed (on this CPU, in the exit just handled, or on another CPU): flush
 * before running again. Checked last so that a change made by this exit counts too. The guest
 * side forces an exit on every CPU (sk_shootdown) where a stale entry would grant access.
 */
void sk_exit_end(struct sk_cpu *c)
{
	struct sk_cpu_now *now = &sk_desc.cpu_now[c->cpu];

	if (c->flush_gen != READ_ONCE(sk.gen)) {
		c->flush_gen = READ_ONCE(sk.gen);
		c->flush = 1;
	}
	/* A pair the debugger can check (a contained CR3 in the root container is an escape). */
	now->cr3 = c->ex.cr3;
	now->ncr3 = sk.containers[c->container].ncr3;
	now->container = c->container;
}

static u32 container_of_protected(u64 pa)
{
	u32 id, i;

	for (id = 1; id < SK_MAX_CONTAINERS; id++)
		for (i = 0; i < sk.containers[id].nprotected; i++)
			if (sk.containers[id].protected_pa[i] == (pa & PHYS_PAGE))
				return id;
	return 0;
}

void sk_switch_container(struct sk_cpu *c, u32 id)
{
	if (id == c->container)
		return;
	c->container = id;
	sk_be->set_slat_root(c, sk.containers[id].ncr3);
	c->flush = 1;
	sk_counters_of(c)->cr3_switches_in++;
}

/* An intercepted MOV to CR3 (already emulated by the backend): follow the address space. */
void sk_cr3_written(struct sk_cpu *c, u64 cr3)
{
	u32 before = c->container;

	sk_counters_of(c)->exits_cr3++;
	c->flush = 1;
	sk_switch_container(c, sk_container_of_pgd(cr3 & PHYS_PAGE));
	if (c->container != before) {
		sk_record(c, SK_EV_CR3_SWITCH, 0, SK_ACT_SWITCH, cr3);
		sk_container_reap();
	}
}

/* A MOV to CR4 or WRMSR to EFER with a reserved bit: #GP, as a CPU without the handler would raise,
 * before the value can reach the VMCB/VMCS (where VMRUN / VM entry would refuse it, and loop). */
bool sk_cr4_reserved(u64 val)
{
	return val & ~sk.cr4_allowed;
}

bool sk_efer_reserved(u64 val)
{
	/* Long mode stays on: clearing LME with paging on is a #GP on a CPU too. */
	return (val & ~sk.efer_allowed) || !(val & EFER_LME);
}

/* A MOV to CR4: the value the guest gets. SMEP/SMAP cannot be cleared from a non-root container. */
u64 sk_cr4_filter(struct sk_cpu *c, u64 old, u64 val)
{
	u64 lost = old & (CR4_SMEP | CR4_SMAP) & ~val;

	if (lost && c->container != 0) {
		sk_counters_of(c)->cr4_blocked++;
		sk_record(c, SK_EV_CR4_BLOCKED, 0, SK_ACT_EMULATE, val);
		val |= lost;                 /* the write happens, without clearing SMEP/SMAP */
	}
	c->flush = 1;                    /* PGE toggles flush global entries */
	return val;
}

/* A second-level violation (NPF / EPT violation) at gpa: apply the container's policy. */
void sk_violation(struct sk_cpu *c, u64 gpa)
{
	struct sk_container *ct = &sk.containers[c->container];
	u64 page = gpa & PAGE_MASK;
	u32 region = sk_region_of(gpa, c->container);
	u32 pol = c->container ? SK_POLICY_OF(ct->policy, region) : SK_POL_DENY;
	u32 action = SK_ACT_DENY;
	u64 extra = 0;
	void *copy;

	ct->counters.exits_npf++;
	c->flush = 1;
	/* The walk as the hardware saw it, before the probe is undone or the policy changes it. */
	sk_slat_walk(c->ex.slat_root, gpa, &c->ex.walk);
	if (READ_ONCE(sk.probe_entry) && sk.probe_cpu != c->cpu) {
		/* Another CPU's probe changed an entry this CPU (lazily in the prober's container, e.g.
		 * a kernel thread on its vmalloc'd stack) just met. Not a violation: wait until the
		 * probe is undone (a few instructions on the prober's CPU), then run the access again.
		 * The container's policy would deny it: #GP in a kernel thread. */
		while (READ_ONCE(sk.probe_entry))
			cpu_relax();
		return;
	}
	if (sk.probe_entry) {
		/* The fault the probe armed: record it, undo the change, let the access run again. */
		extra = sk_pa(sk.probe_entry);
		*sk.probe_entry = sk.probe_saved;
		WRITE_ONCE(sk.probe_entry, NULL);
		sk_record(c, SK_EV_VIOLATION, region, SK_ACT_PROBE, extra);
		goto out;
	}
	ct->counters.violations[region]++;
	if (region == SK_REGION_NONE || region == SK_REGION_SK_STATE || region == SK_REGION_PROTECTED)
		pol = SK_POL_DENY;   /* never negotiable */
	if (pol == SK_POL_ISOLATE && ct->nisolated < SK_MAX_ISOLATED && (copy = sk_page_alloc())) {
		memcpy(copy, phys_to_virt(page), PAGE_SIZE);
		if (!sk_map_4k(ct->ncr3, page, sk_pa(copy), SK_PERM_RWX)) {
			ct->iso_gpa[ct->nisolated] = page;
			ct->iso_copy[ct->nisolated++] = sk_pa(copy);
			ct->counters.isolated++;
			action = SK_ACT_ISOLATE;
			extra = sk_pa(copy);
		} else {
			sk_page_free(copy);
		}
	} else if (pol == SK_POL_LOG && !sk_map_4k(ct->ncr3, page, page, SK_PERM_RWX)) {
		/* Allowed from now on for this page in this container (see docs/module.md). */
		ct->counters.allowed++;
		action = SK_ACT_ALLOW;
	}
	if (action == SK_ACT_DENY) {
		sk_be->inject(c, X86_TRAP_GP);
		ct->counters.denied++;
	}
	sk_record(c, SK_EV_VIOLATION, region, action, extra);
out:
	if (c->container)
		sk_record(c, SK_EV_ENTER_NR, 0, SK_ACT_NONE, 0);
}

int sk_hypercall_exit(struct sk_cpu *c, u64 nr, u64 a1, u64 a2, u64 a3, u64 *res)
{
	int nonroot = c->container != 0, refused = 0;

	*res = (u64)-1;
	sk_counters_of(c)->exits_vmmcall++;
	__atomic_fetch_add(&sk_desc.hypercalls, 1, __ATOMIC_RELAXED);
	if (c->ex.cpl != 0) {
		/* Hypercalls are for the guest kernel only: from user mode, #UD (SIGILL) as on a CPU
		 * without a hypervisor; RIP stays on the instruction (a fault). */
		sk_be->inject(c, X86_TRAP_UD);
		sk_attack(c, SK_ATTACK_HYPERCALL, nr);
		return SK_HC_FAULT;
	}
	switch (nr) {
	case SK_HC_PING:
		/* Also: the container again from CR3. An ENTER pings every CPU: one that lazily kept
		 * the caller's address space loaded (no CR3 write to come) would run its new threads
		 * in the old container. */
		sk_switch_container(c, sk_container_of_pgd(c->ex.cr3 & PHYS_PAGE));
		*res = SK_MAGIC;
		break;
	case SK_HC_WHOAMI:
		*res = c->container;
		break;
	case SK_HC_BEGIN_UNLOAD: {
		u32 id, live = 0;

		for (id = 1; id < SK_MAX_CONTAINERS; id++)
			live += sk.containers[id].active == 1;
		if (!nonroot && !live) {
			WRITE_ONCE(sk.unloading, 1);
			*res = 0;
		} else {
			refused = 1;
		}
		break;
	}
	case SK_HC_CONTAINER_OF: {
		u32 id = sk_container_of_pgd(a1 & PHYS_PAGE);

		*res = id | ((u64)sk.containers[id].active << 32);
		break;
	}
	case SK_HC_REPORT:
		/* From kernel mode only (user mode got #UD above); a tier-3 flood is sampled. */
		sk_attack(c, SK_ATTACK_REPORT, a1 & 0xff);
		*res = 0;
		break;
	case SK_HC_DEVIRT:
		/* From root; from any container only once the unload has begun (no live container left:
		 * a CPU may still run a released one lazily). */
		if (!nonroot || READ_ONCE(sk.unloading)) {
			__atomic_fetch_and(&sk_desc.cpu_mask, ~(1u << c->cpu), __ATOMIC_RELAXED);
			return SK_HC_LEAVE;
		}
		refused = 1;
		break;
	case SK_HC_MODTEXT_ADD:
		*res = (u64)(s64)sk_modtext_add(a1, (u32)a2);
		break;
	case SK_HC_MODTEXT_DEL:
		/* Root only: from a container it would make module text writable in every container.
		 * A module unloaded from inside a container keeps its pages read-only in containers
		 * (fail closed; the root container maps them as ever). */
		if (!nonroot)
			*res = (u64)(s64)sk_modtext_del(a1);
		else
			refused = 1;
		break;
	case SK_HC_NEW_CONTAINER:
		if (!nonroot && !READ_ONCE(sk.unloading))
			*res = (u64)(s64)sk_container_new((u32)a1, (u32)a2,
							  is_kernel_addr(a3) && sk_host_mapped(a3, TASK_COMM_LEN) ?
							  (const char *)a3 : NULL);
		else
			refused = 1;
		break;
	case SK_HC_ADD_PGD:
		/* From non-root mode only into the caller's own container (fork, exec). */
		if (!nonroot || a1 == c->container) {
			*res = (u64)(s64)sk_container_add_pgd((u32)a1, a2);
			if (!*res && (c->ex.cr3 & PHYS_PAGE) == (a2 & PHYS_PAGE))
				sk_switch_container(c, (u32)a1);
		} else {
			refused = 1;
		}
		break;
	case SK_HC_DEL_PGD:
		/* From any container: pgd_free runs wherever the last reference to an mm is dropped,
		 * often on a CPU that lazily kept it and now runs another container's process. Refusing
		 * it there (as before) left the entry behind, and the freed page, reused as a new pgd,
		 * ran in the dead container (under Bochs SMP: "container full" kills after ~80
		 * scenarios). It grants nothing that loading CR3 does not: the CR3 picks the container. */
		sk_container_del_pgd(a1);
		*res = 0;
		break;
	case SK_HC_FREE_CONTAINER:
		if (!nonroot && c->container != a1)
			*res = (u64)(s64)sk_container_free((u32)a1);
		else
			refused = 1;
		break;
	case SK_HC_RELEASE:
		if (a1 > 0 && a1 < SK_MAX_CONTAINERS && (!nonroot || a1 == c->container) &&
		    sk.containers[a1].active == 1) {
			sk.containers[a1].active = 2;
			*res = 0;
		}
		break;
	case SK_HC_PROTECT:
		/* Only a non-root container can own a protected page: it is hidden from all others. */
		if (nonroot)
			*res = (u64)(s64)sk_protect(c->container, a1, a2 & SK_PROT_VISIBLE_TO_ROOT);
		else
			refused = 1;
		break;
	case SK_HC_UNPROTECT: {
		u32 owner = container_of_protected(a1);

		if (owner && (!nonroot || owner == c->container))
			*res = (u64)(s64)(sk_unprotect(a1) < 0 ? -1 : 0);
		else
			refused = 1;
		break;
	}
	case SK_HC_PROBE_GET:
	case SK_HC_PROBE_SET:
		if (sk.probe && nonroot && a2 >= 1 && a2 <= (u64)sk.nlevels) {
			u64 *e = sk_entry_ptr(sk.containers[c->container].ncr3, a1, (int)a2);

			if (e && nr == SK_HC_PROBE_GET) {
				*res = *e;
			} else if (e && !READ_ONCE(sk.probe_entry)) {
				sk.probe_saved = *e;
				sk.probe_cpu = c->cpu;
				WRITE_ONCE(sk.probe_entry, e);
				*e = a3;
				*res = 0;
			}
			c->flush = 1;
		} else {
			refused = 1;
		}
		break;
	case SK_HC_PROBE_CLEAR:
		*res = 0;
		if (sk.probe_entry && sk.probe_cpu == c->cpu) {
			*sk.probe_entry = sk.probe_saved;
			WRITE_ONCE(sk.probe_entry, NULL);
			c->flush = 1;
			*res = 1;
		}
		break;
	case SK_HC_QUERY:
		/* One counter a call, in RAX: the handler writes nothing on the caller's behalf (a
		 * pointer argument would let it write where the caller itself may not). */
		if (a1 < SK_MAX_CONTAINERS && (!nonroot || a1 == c->container) &&
		    a2 < sizeof(struct sk_counters) / sizeof(u64))
			*res = ((u64 *)&sk.containers[a1].counters)[a2];
		else
			refused = 1;
		break;
	default:
		refused = 1;
		break;
	}
	if (refused) {
		sk_attack(c, SK_ATTACK_HYPERCALL, nr);
		return SK_HC_DONE;
	}
	sk_record(c, SK_EV_HYPERCALL, 0, SK_ACT_NONE, nr);
	return SK_HC_DONE;
}
