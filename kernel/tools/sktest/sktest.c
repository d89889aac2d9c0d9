// SPDX-License-Identifier: GPL-2.0
/*
 * sktest: the split kernel's attack and probe driver, for scenarios only.
 * Write a command to /proc/sktest, read the result back:
 *   write-text | write-rodata   write one byte of kernel text (sysrq_handle_crash+1) or rodata
 *                               (linux_banner[0]) through a fresh writable alias of its frame
 *   peek-text | peek-rodata     the byte as this context sees it (through its container)
 *   cr4-smep                    clear CR4.SMEP with a raw MOV to CR4, report what stuck, restore
 *   read-phys PA                read 8 bytes of physical memory through the direct map
 *   map-text | unmap-text       keep (or drop) a writable guest alias of the kernel-text frame
 *   probe ACC TARGET LEVEL OP   the differential test's probe (see tests/integration/test_model_differential.py)
 *   deliver irq|nmi|pf          raise one event whose delivery meets an unreachable IDT page: the exit
 *                               interrupts the delivery, and the handler must deliver the event again
 *                               (see tests/integration/test_event_redelivery.py)
 * The attacks of docs/security.md (tests/integration/test_attacks.py), as a contained process with a
 * kernel write primitive (tier 2) or kernel code execution (tier 3) would make them:
 *   write-sym SYM [OFF]         write one byte at a kernel or module symbol (+OFF) through a fresh
 *                               writable alias of its frame: handler state, descriptor, module text
 *   hypercall NR A1 A2 A3       a hypercall from kernel mode with any arguments; reports RAX
 *   insn NAME                   a virtualisation instruction from kernel mode (vmsave vmload stgi
 *                               clgi skinit invlpga vmrun; vmxoff vmread vmptrst): reports a trap or not
 *   wrmsr MSR                   WRMSR of the MSR's own value from kernel mode (one the host owns,
 *                               under VMX: IA32_APIC_BASE, an MTRR): #GP or not
 *   cr4-reserved | efer-reserved  MOV to CR4 / WRMSR to EFER with a reserved bit: reports #GP or not
 *   forge-refcount MOD          set module MOD's reference count to "none" (its struct module is
 *                               ordinary module data): rmmod then runs although MOD is in use
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kprobes.h>
#include "sk_kallsyms.h"
#include <linux/proc_fs.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>
#include <linux/io.h>
#include <asm/special_insns.h>
#include <asm/pgtable.h>
#include <linux/irq_work.h>
#include <asm/apic.h>
#include <asm/desc.h>
#include <asm/nmi.h>
#include <asm/msr.h>
#include <asm/asm.h>

MODULE_LICENSE("GPL");


static char result[256];
static struct page *probe_block;     /* 2 MiB, 2 MiB-aligned: a whole nested PDE of our own */
static u8 *probe_va;                 /* its first page, mapped executable in the vmalloc area */
static u64 probe_pt_pa;              /* guest-physical address of probe_va's guest PTE */

/* VMCALL on Intel (splitkernel's VMX backend), VMMCALL on AMD (SVM). */
static u64 hypercall(u64 nr, u64 a1, u64 a2, u64 a3)
{
	u64 ret;

	if (boot_cpu_has(X86_FEATURE_VMX))
		asm volatile("vmcall" : "=a"(ret) : "a"(nr), "b"(a1), "c"(a2), "d"(a3) : "memory");
	else
		asm volatile("vmmcall" : "=a"(ret) : "a"(nr), "b"(a1), "c"(a2), "d"(a3) : "memory");
	return ret;
}

#define HC_PROBE_GET 0x530b
#define HC_PROBE_SET 0x530c
#define HC_PROBE_CLEAR 0x530d

static int probe_setup(void)
{
	unsigned int level;
	pte_t *pte;

	if (probe_block)
		return 0;
	probe_block = alloc_pages(GFP_KERNEL | __GFP_ZERO, 9);
	if (!probe_block)
		return -ENOMEM;
	probe_va = vmap(&probe_block, 1, VM_MAP, PAGE_KERNEL);
	if (!probe_va)
		return -ENOMEM;
	/* vmap() always maps non-executable: the fetch probe needs the page executable. */
	{
		int (*set_x)(unsigned long, int) = (void *)sk_lookup_name("set_memory_x");

		if (!set_x || set_x((unsigned long)probe_va, 1))
			return -EINVAL;
	}
	probe_va[0] = 0xc3;                  /* ret: the fetch probe calls it */
	pte = lookup_address((unsigned long)probe_va, &level);
	if (!pte || level != PG_LEVEL_4K)
		return -EINVAL;
	probe_pt_pa = __pa(pte);
	return 0;
}

/* probe ACCESS TARGET LEVEL OP: change one nested entry, make one access, report what happened. */
static int probe(const char *acc, const char *target, int level, const char *op)
{
	u64 gpa = strcmp(target, "gpt") ? page_to_phys(probe_block) + 8 : probe_pt_pa;
	u64 old, new, armed;
	bool vmx = boot_cpu_has(X86_FEATURE_VMX), clear_a = false;

	preempt_disable();
	old = hypercall(HC_PROBE_GET, gpa, level, 0);
	if (!strcmp(op, "np")) new = 0;
	else if (!strcmp(op, "ro")) new = old & ~2ULL;                 /* W is bit 1 in both formats */
	else if (!strcmp(op, "rsv")) new = old | (1ULL << 51);         /* above MAXPHYADDR */
	else if (vmx) {
		/* EPT entries (SDM 29.3.2): R, W, X in bits 2:0, memory type in bits 5:3 of a leaf */
		if (!strcmp(op, "nx")) new = old & ~4ULL;
		else if (!strcmp(op, "xo")) new = old & ~3ULL;             /* execute-only */
		else if (!strcmp(op, "wo")) new = old & ~1ULL;             /* write without read: misconfigured */
		else if (!strcmp(op, "mt")) new = (old & ~0x38ULL) | (2ULL << 3);   /* memory type 2: reserved */
		else if (!strcmp(op, "roa") && !strcmp(target, "gpt")) {
			/* read-only, and the guest PTE not yet accessed: the walk must write its A bit */
			new = old & ~2ULL;
			clear_a = true;
		}
		else { preempt_enable(); return -EINVAL; }
	}
	else if (!strcmp(op, "us0")) new = old & ~4ULL;
	else if (!strcmp(op, "nx")) new = old | (1ULL << 63);
	else if (!strcmp(op, "rsv8")) new = old | (1ULL << 8);
	else { preempt_enable(); return -EINVAL; }
	if (clear_a) {
		unsigned int lvl;
		pte_t *pte = lookup_address((unsigned long)probe_va, &lvl);

		set_pte(pte, pte_mkold(*pte));
	}
	hypercall(HC_PROBE_SET, gpa, level, new);   /* the VM exit and entry flush the TLB (no VPID) */
	if (!strcmp(acc, "read"))
		(void)READ_ONCE(*(u64 *)(probe_va + 8));
	else if (!strcmp(acc, "write"))
		WRITE_ONCE(*(u64 *)(probe_va + 8), 0x1234);
	else
		((void (*)(void))probe_va)();
	armed = hypercall(HC_PROBE_CLEAR, 0, 0, 0);
	preempt_enable();
	snprintf(result, sizeof(result), "probe acc=%s target=%s level=%d op=%s gpa=%#llx va=%#lx old=%#llx new=%#llx faulted=%s\n",
		 acc, target, level, op, gpa, (unsigned long)probe_va + (strcmp(acc, "fetch") ? 8 : 0), old, new,
		 armed ? "no" : "yes");
	return 0;
}
static unsigned long text_addr, rodata_addr;
static u8 *text_alias;               /* map-text: a writable alias kept until unmap-text */

/* deliver: did the event reach its handler? */
static atomic_t delivered;
static bool nmi_armed;
static bool nmi_registered;

static void deliver_irq_work(struct irq_work *w)
{
	atomic_inc(&delivered);
}
static struct irq_work deliver_work = IRQ_WORK_INIT_HARD(deliver_irq_work);

static int deliver_nmi(unsigned int type, struct pt_regs *regs)
{
	if (!READ_ONCE(nmi_armed))
		return NMI_DONE;
	WRITE_ONCE(nmi_armed, false);
	atomic_inc(&delivered);
	return NMI_HANDLED;
}

/*
 * deliver KIND: make this CPU's IDT page not present in our container (a probe on its nested or
 * EPT PTE), raise one event, and see whether its handler ran. Interrupts stay off until the
 * probe is armed, so the first access to the IDT is that event's delivery: the VM exit interrupts
 * it (EXITINTINFO / IDT-vectoring information valid), the handler undoes the probe and must
 * deliver the event again. A lost self-IPI would leave its vector in service at the local APIC
 * and block every lower vector, the timer's included.
 */
static int deliver(const char *kind)
{
	struct desc_ptr idt;
	unsigned long flags;
	u64 gpa, old, armed, dummy;
	long spins, fault = 0;

	if (strcmp(kind, "irq") && strcmp(kind, "nmi") && strcmp(kind, "pf"))
		return -EINVAL;
	store_idt(&idt);
	gpa = slow_virt_to_phys((void *)idt.address);
	atomic_set(&delivered, 0);
	local_irq_save(flags);
	old = hypercall(HC_PROBE_GET, gpa, 1, 0);
	hypercall(HC_PROBE_SET, gpa, 1, 0);
	if (!strcmp(kind, "irq")) {
		irq_work_queue(&deliver_work);     /* a self-IPI, pending until interrupts are on */
		local_irq_enable();
		for (spins = 0; spins < 100000000 && !atomic_read(&delivered); spins++)
			cpu_relax();
		local_irq_disable();
	} else if (!strcmp(kind, "nmi")) {
		WRITE_ONCE(nmi_armed, true);
		apic->send_IPI(smp_processor_id(), NMI_VECTOR);
		for (spins = 0; spins < 100000000 && !atomic_read(&delivered); spins++)
			cpu_relax();
		WRITE_ONCE(nmi_armed, false);
	} else {
		/* The guard page after probe_va: a #PF (error code 0) that the exception table fixes. */
		fault = get_kernel_nofault(dummy, (u64 *)(probe_va + PAGE_SIZE));
		if (fault)
			atomic_inc(&delivered);
	}
	armed = hypercall(HC_PROBE_CLEAR, 0, 0, 0);
	local_irq_restore(flags);
	snprintf(result, sizeof(result), "deliver kind=%s idt=%#lx gpa=%#llx old=%#llx delivered=%s faulted=%s\n",
		 kind, idt.address, gpa, old, atomic_read(&delivered) ? "yes" : "no", armed ? "no" : "yes");
	return 0;
}

/* The trap an instruction raised, caught by the exception table (fixup_exception sets no flag:
 * the fixup label is reached instead of the next instruction). */
static int try_insn(const char *name)
{
	u64 pa = 0x1000;   /* any page: VMSAVE/VMLOAD would reach it through host-physical memory */
	int faulted = 1;

#define TRY(asmtext, ...) asm volatile("1: " asmtext "\n movl $0, %0\n2:\n" _ASM_EXTABLE(1b, 2b) \
				      : "+r"(faulted) : __VA_ARGS__ : "memory")
	if (!strcmp(name, "vmsave")) TRY("vmsave %%rax", "a"(pa));
	else if (!strcmp(name, "vmload")) TRY("vmload %%rax", "a"(pa));
	else if (!strcmp(name, "vmrun")) TRY("vmrun %%rax", "a"(pa));
	else if (!strcmp(name, "stgi")) TRY("stgi", "i"(0));
	else if (!strcmp(name, "clgi")) TRY("clgi; stgi", "i"(0));
	else if (!strcmp(name, "skinit")) TRY("skinit %%eax", "a"(pa));
	else if (!strcmp(name, "invlpga")) TRY("invlpga %%rax, %%ecx", "a"(0), "c"(0));
	else if (!strcmp(name, "vmxoff")) TRY("vmxoff", "i"(0));
	else if (!strcmp(name, "vmread")) TRY("vmread %%rax, %%rax", "a"(0));
	else if (!strcmp(name, "vmptrst")) TRY("vmptrst (%%rax)", "a"(&pa));
	else return -EINVAL;
#undef TRY
	return faulted;
}

static int write_alias(unsigned long addr, u8 *before, u8 *after)
{
	struct page *pg = is_vmalloc_addr((void *)addr) || (addr >= MODULES_VADDR && addr < MODULES_END) ? vmalloc_to_page((void *)addr) :
			  pfn_to_page(__pa_symbol(addr) >> PAGE_SHIFT);
	u8 *alias = vmap(&pg, 1, VM_MAP, PAGE_KERNEL);   /* a writable guest mapping of the frame */

	if (!alias)
		return -ENOMEM;
	*before = READ_ONCE(alias[offset_in_page(addr)]);
	WRITE_ONCE(alias[offset_in_page(addr)], (u8)~*before);   /* the write the container must catch */
	*after = READ_ONCE(alias[offset_in_page(addr)]);
	vunmap(alias);
	return 0;
}

/* Module text that never runs: a write let through (policy log) may change it harmlessly. */
noinline void sktest_victim(void)
{
	asm volatile("" ::: "memory");
}
EXPORT_SYMBOL_GPL(sktest_victim);

static ssize_t sk_write(struct file *f, const char __user *ubuf, size_t len, loff_t *off)
{
	char cmd[64] = {};
	u8 before, after;
	unsigned long pa;

	if (copy_from_user(cmd, ubuf, min(len, sizeof(cmd) - 1)))
		return -EFAULT;
	strim(cmd);
	if (!strcmp(cmd, "write-text") || !strcmp(cmd, "write-rodata")) {
		unsigned long a = cmd[6] == 't' ? text_addr : rodata_addr;

		snprintf(result, sizeof(result), "%s started pa=%#llx\n", cmd, (u64)__pa_symbol(a));
		if (write_alias(a, &before, &after))
			return -ENOMEM;
		snprintf(result, sizeof(result), "%s pa=%#llx before=%#x after=%#x\n", cmd, (u64)__pa_symbol(a), before, after);
	} else if (!strcmp(cmd, "peek-text") || !strcmp(cmd, "peek-rodata")) {
		unsigned long a = cmd[5] == 't' ? text_addr : rodata_addr;

		snprintf(result, sizeof(result), "%s pa=%#llx value=%#x\n", cmd, (u64)__pa_symbol(a), READ_ONCE(*(u8 *)a));
	} else if (!strcmp(cmd, "cr4-smep")) {
		unsigned long cr4 = native_read_cr4(), now;

		asm volatile("mov %0, %%cr4" :: "r"(cr4 & ~X86_CR4_SMEP) : "memory");
		now = native_read_cr4();
		asm volatile("mov %0, %%cr4" :: "r"(cr4) : "memory");
		snprintf(result, sizeof(result), "cr4-smep before=%#lx after=%#lx smep=%s\n", cr4, now,
			 now & X86_CR4_SMEP ? "kept" : "cleared");
	} else if (!strcmp(cmd, "map-text")) {
		struct page *pg = pfn_to_page(__pa_symbol(text_addr) >> PAGE_SHIFT);

		if (!text_alias)
			text_alias = vmap(&pg, 1, VM_MAP, PAGE_KERNEL);
		snprintf(result, sizeof(result), "map-text pa=%#llx alias=%px\n", (u64)__pa_symbol(text_addr), text_alias);
	} else if (!strcmp(cmd, "unmap-text")) {
		if (text_alias)
			vunmap(text_alias);
		text_alias = NULL;
		snprintf(result, sizeof(result), "unmap-text\n");
	} else if (!strncmp(cmd, "probe ", 6)) {
		char acc[8], target[8], op[8];
		int level, r;

		if (sscanf(cmd + 6, "%7s %7s %d %7s", acc, target, &level, op) != 4)
			return -EINVAL;
		r = probe_setup() ?: probe(acc, target, level, op);
		if (r)
			return r;
	} else if (!strncmp(cmd, "deliver ", 8)) {
		char kind[8];
		int r;

		if (sscanf(cmd + 8, "%7s", kind) != 1)
			return -EINVAL;
		r = probe_setup() ?: deliver(kind);
		if (r)
			return r;
	} else if (!strncmp(cmd, "write-sym ", 10)) {
		char sym[48];
		unsigned long a, o = 0;

		if (sscanf(cmd + 10, "%47s %lx", sym, &o) < 1 || !(a = sk_lookup_name(sym)))
			return -EINVAL;
		a += o;
		snprintf(result, sizeof(result), "write-sym %s started\n", sym);
		if (write_alias(a, &before, &after))
			return -ENOMEM;
		snprintf(result, sizeof(result), "write-sym %s before=%#x after=%#x\n", sym, before, after);
	} else if (!strncmp(cmd, "forge-refcount ", 15)) {
		unsigned long head = sk_lookup_name("modules");
		struct module *m, *hit = NULL;

		rcu_read_lock();
		list_for_each_entry_rcu(m, &THIS_MODULE->list, list)
			if ((unsigned long)&m->list != head && !strcmp(m->name, cmd + 15))
				hit = m;
		if (hit)
			atomic_set(&hit->refcnt, 1);    /* MODULE_REF_BASE: no reference */
		rcu_read_unlock();
		if (!hit)
			return -ENOENT;
		snprintf(result, sizeof(result), "forge-refcount %s done\n", cmd + 15);
	} else if (!strncmp(cmd, "hypercall ", 10)) {
		u64 nr, a1 = 0, a2 = 0, a3 = 0;

		if (sscanf(cmd + 10, "%llx %llx %llx %llx", &nr, &a1, &a2, &a3) < 1)
			return -EINVAL;
		snprintf(result, sizeof(result), "hypercall %#llx rax=%#llx\n", nr, hypercall(nr, a1, a2, a3));
	} else if (!strncmp(cmd, "insn ", 5)) {
		int r = try_insn(cmd + 5);

		if (r < 0)
			return r;
		snprintf(result, sizeof(result), "insn %s faulted=%s\n", cmd + 5, r ? "yes" : "no");
	} else if (!strncmp(cmd, "wrmsr ", 6)) {
		u32 msr;
		u64 val;
		int err;

		/* Its own value back: harmless if it got through, and it must not. */
		if (sscanf(cmd + 6, "%x", &msr) != 1 || rdmsrl_safe(msr, &val))
			return -EINVAL;
		err = wrmsrl_safe(msr, val);
		snprintf(result, sizeof(result), "wrmsr %#x faulted=%s\n", msr, err ? "yes" : "no");
	} else if (!strcmp(cmd, "cr4-reserved")) {
		unsigned long cr4 = native_read_cr4();
		int faulted = 1;

		/* Bit 31 is reserved (SDM 2.5, APM 3.1.3): a CPU raises #GP, and so must the handler
		 * (a VMCB/VMCS holding it would make every entry fail). */
		asm volatile("1: mov %1, %%cr4\n movl $0, %0\n2:\n" _ASM_EXTABLE(1b, 2b)
			     : "+r"(faulted) : "r"(cr4 | (1UL << 31)) : "memory");
		snprintf(result, sizeof(result), "cr4-reserved faulted=%s cr4=%#lx\n", faulted ? "yes" : "no",
			 native_read_cr4());
	} else if (!strcmp(cmd, "efer-reserved")) {
		u64 efer;
		int err;

		rdmsrl(MSR_EFER, efer);
		err = wrmsrl_safe(MSR_EFER, efer | (1ULL << 2));   /* bits 7:1 are reserved (APM 3.1.7) */
		snprintf(result, sizeof(result), "efer-reserved faulted=%s\n", err ? "yes" : "no");
	} else if (sscanf(cmd, "read-phys %lx", &pa) == 1) {
		snprintf(result, sizeof(result), "read-phys pa=%#lx value=%#llx\n", pa, READ_ONCE(*(u64 *)phys_to_virt(pa)));
	} else {
		return -EINVAL;
	}
	return len;
}

static ssize_t sk_read(struct file *f, char __user *ubuf, size_t len, loff_t *off)
{
	return simple_read_from_buffer(ubuf, len, off, result, strlen(result));
}

static const struct proc_ops sk_ops = { .proc_write = sk_write, .proc_read = sk_read };
static struct proc_dir_entry *entry;

static int __init sktest_init(void)
{
	text_addr = sk_lookup_name("sysrq_handle_crash") + 1;
	rodata_addr = sk_lookup_name("linux_banner");
	if (text_addr == 1 || !rodata_addr)
		return -ENOENT;
	entry = proc_create("sktest", 0666, NULL, &sk_ops);
	if (!entry)
		return -ENOMEM;
	nmi_registered = !register_nmi_handler(NMI_LOCAL, deliver_nmi, 0, "sktest");
	return 0;
}

static void __exit sktest_exit(void)
{
	proc_remove(entry);
	if (nmi_registered)
		unregister_nmi_handler(NMI_LOCAL, "sktest");
	irq_work_sync(&deliver_work);
	if (text_alias)
		vunmap(text_alias);
	if (probe_va)
		vunmap(probe_va);
	if (probe_block)
		__free_pages(probe_block, 9);
}

module_init(sktest_init);
module_exit(sktest_exit);
