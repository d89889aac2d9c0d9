// SPDX-License-Identifier: GPL-2.0
/*
 * splitkernel: per-process second-level page-table containers for Linux 6.1 (AMD SVM + NPT, or
 * Intel VMX + EPT: the backend is chosen at load from CPUID).
 *
 * Guest side: load/unload, /dev/splitkernel (ENTER, QUERY), /proc/splitkernel, and kprobes that
 * keep containers attached to processes across fork and exec and drop address spaces when they
 * are freed. Container state itself belongs to the root-mode handler (sk_exit.c, sk_slat.c and
 * the backend, sk_svm.c or sk_vmx.c) and
 * is changed only through hypercalls. Design: docs/module.md.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/init.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/uaccess.h>
#include <linux/kprobes.h>
#include "sk_kallsyms.h"
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/sched/coredump.h>
#include <linux/ptrace.h>
#include <linux/tty.h>
#include <linux/major.h>
#include <linux/kd.h>
#include <linux/mm.h>
#include <linux/vmalloc.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/cpumask.h>
#include <linux/cpuhotplug.h>
#include <linux/binfmts.h>
#include <linux/random.h>
#include <linux/cred.h>
#include <asm/io.h>
#include "sk.h"

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("split kernel: per-process nested-paging containers");

/* The handler's state, on a page of its own that containers map read-only (sk.h). */
union sk_state_page sk_state_page __aligned(PAGE_SIZE);
static bool probe;
module_param(probe, bool, 0444);
MODULE_PARM_DESC(probe, "enable SK_HC_PROBE_GET/SET, the hooks of splitdbg's differential test "
		 "(a test mode: a container may then rewrite its own nested entries)");
/*
 * The debug descriptor: in the module's data, found by its magic (and self_pa) in physical memory.
 * The magic is written last on a successful load and cleared first on unload or a failed load:
 * a freed copy of the page (an earlier load's) never looks alive.
 */
union sk_desc_page sk_desc_page __aligned(PAGE_SIZE) = { .d = { .version = SK_ABI_VERSION,
								 .size = sizeof(struct sk_descriptor) } };

/* A hypercall from the guest kernel: VMMCALL (SVM) or VMCALL (VMX), both 3 bytes. */
u64 sk_hypercall(u64 nr, u64 a1, u64 a2, u64 a3)
{
	u64 ret;

	if (sk.vendor == SK_VENDOR_VMX)
		asm volatile("vmcall" : "=a"(ret) : "a"(nr), "b"(a1), "c"(a2), "d"(a3) : "memory");
	else
		asm volatile("vmmcall" : "=a"(ret) : "a"(nr), "b"(a1), "c"(a2), "d"(a3) : "memory");
	return ret;
}

/* ---- which processes are contained (guest-side bookkeeping) ------------------------------ */

#define SK_MAX_TASKS 1024
static struct { pid_t tgid; u32 container; } sk_tasks[SK_MAX_TASKS];
static u64 sk_pgds[SK_MAX_CONTAINERS * SK_MAX_PGDS];   /* pgds registered with the handler */
static DEFINE_RAW_SPINLOCK(sk_tasks_lock);
/* Live containers and who made them: each holds a reference on the module (no unload under a
 * live container) and counts against its creator's share (no user takes every slot). */
static struct { bool live; kuid_t uid; } sk_conts[SK_MAX_CONTAINERS];
static DEFINE_MUTEX(sk_enter_mutex);   /* ENTER is one step, from the EBUSY check to the pgd listed */
static bool sk_draining;                /* the unload has begun: no new container (under sk_enter_mutex) */

/* May the caller make one more container? Unprivileged users hold SK_USER_CONTAINERS at most, and
 * SK_RESERVED_CONTAINERS slots stay for CAP_SYS_ADMIN. */
static int container_quota(void)
{
	kuid_t uid = current_uid();
	int i, mine = 0, live = 0;

	if (capable(CAP_SYS_ADMIN))
		return 0;
	raw_spin_lock_irq(&sk_tasks_lock);
	for (i = 1; i < SK_MAX_CONTAINERS; i++) {
		live += sk_conts[i].live;
		mine += sk_conts[i].live && uid_eq(sk_conts[i].uid, uid);
	}
	raw_spin_unlock_irq(&sk_tasks_lock);
	if (mine >= SK_USER_CONTAINERS)
		return -EDQUOT;
	return live >= SK_MAX_CONTAINERS - 1 - SK_RESERVED_CONTAINERS ? -ENOSPC : 0;
}

/*
 * The policies ENTER accepts: deny, isolate or log for kernel text, rodata and module text (the
 * other regions are never negotiable). isolate and log only with CAP_SYS_ADMIN: log lets the
 * container write the shared frames every process runs, isolate lets it run kernel code of its
 * own making in its container.
 */
static int policy_check(u32 policy)
{
	u32 region, relaxed = 0;

	for (region = 0; region < 8; region++) {
		u32 pol = SK_POLICY_OF(policy, region);

		if (pol == SK_POL_DENY)
			continue;
		if (pol > SK_POL_LOG || (region != SK_REGION_TEXT && region != SK_REGION_RODATA &&
					 region != SK_REGION_MODULE_TEXT))
			return -EINVAL;
		relaxed = 1;
	}
	return relaxed && !capable(CAP_SYS_ADMIN) ? -EPERM : 0;
}

static void container_made(u32 id)
{
	unsigned long flags;

	__module_get(THIS_MODULE);
	raw_spin_lock_irqsave(&sk_tasks_lock, flags);
	sk_conts[id].live = true;
	sk_conts[id].uid = current_uid();
	raw_spin_unlock_irqrestore(&sk_tasks_lock, flags);
}

/* The container's last process is gone: the handler frees it once no address space uses it. */
static void container_release(u32 id)
{
	unsigned long flags;
	bool was;

	/* irqsave: called from a kprobe (group exit), where interrupts are off and must stay so. */
	raw_spin_lock_irqsave(&sk_tasks_lock, flags);
	was = sk_conts[id].live;
	sk_conts[id].live = false;
	raw_spin_unlock_irqrestore(&sk_tasks_lock, flags);
	sk_hypercall(SK_HC_RELEASE, id, 0, 0);
	/* Not once the unload has begun: rmmod took the count to none already (a forged count let
	 * it in while this container lived, and sk_exit waited for it). */
	if (was && module_is_live(THIS_MODULE))
		module_put(THIS_MODULE);
}

/* The container this CPU runs, as the handler knows it from CR3: not from any guest data. */
static u32 my_container(void)
{
	u32 id = current->mm ? (u32)sk_hypercall(SK_HC_WHOAMI, 0, 0, 0) : 0;

	return id < SK_MAX_CONTAINERS ? id : 0;
}

static u32 container_of_tgid(pid_t tgid)
{
	unsigned long flags;
	u32 id = 0;
	int i;

	raw_spin_lock_irqsave(&sk_tasks_lock, flags);
	for (i = 0; i < SK_MAX_TASKS; i++)
		if (sk_tasks[i].tgid == tgid && sk_tasks[i].container) {
			id = sk_tasks[i].container;
			break;
		}
	raw_spin_unlock_irqrestore(&sk_tasks_lock, flags);
	return id;
}

/* Returns -ENOSPC when the table is full: the caller must not let that process run unrecorded
 * (its container would be released under it when the recorded ones exit). */
static int set_tgid(pid_t tgid, u32 id)
{
	unsigned long flags;
	int i, free = -1, r = 0;

	raw_spin_lock_irqsave(&sk_tasks_lock, flags);
	for (i = 0; i < SK_MAX_TASKS; i++) {
		if (sk_tasks[i].tgid == tgid && sk_tasks[i].container) {
			sk_tasks[i].container = id;
			free = -2;
			break;
		}
		if (free == -1 && !sk_tasks[i].container)
			free = i;
	}
	if (free >= 0 && id) {
		sk_tasks[free].tgid = tgid;
		sk_tasks[free].container = id;
	} else if (free == -1 && id) {
		r = -ENOSPC;
	}
	raw_spin_unlock_irqrestore(&sk_tasks_lock, flags);
	return r;
}

/* Returns non-zero when the container is full (SK_MAX_PGDS): the caller must not let that
 * address space run, or it would run uncontained. */
static int add_pgd(u32 id, pgd_t *pgd)
{
	unsigned long flags;
	u64 pa = __pa(pgd);
	int i;

	if (sk_hypercall(SK_HC_ADD_PGD, id, pa, 0)) {
		pr_warn_ratelimited("splitkernel: container %u is full (%d address spaces): refusing %d's new one\n",
				    id, SK_MAX_PGDS, current->pid);
		return -ENOSPC;
	}
	raw_spin_lock_irqsave(&sk_tasks_lock, flags);
	for (i = 0; i < ARRAY_SIZE(sk_pgds); i++)
		if (!sk_pgds[i] || sk_pgds[i] == pa) {
			sk_pgds[i] = pa;
			break;
		}
	raw_spin_unlock_irqrestore(&sk_tasks_lock, flags);
	return 0;
}

/* ---- kprobes: fork, exec, address-space teardown, exit ------------------------------------ */

/* From a probe on a function's first instruction: return `ret` to its caller without running it
 * (the return address is at the top of the stack there). The probe needs a post handler, or an
 * optimised (jump) probe would ignore the new regs->ip. */
static int skip_with(struct pt_regs *regs, long ret)
{
	regs->ax = (unsigned long)ret;
	regs->ip = *(unsigned long *)regs->sp;
	regs->sp += sizeof(unsigned long);
	return 1;
}

/* A guard refuses the probed call: `err` to its caller, and to the handler a report (an attack
 * event) when `report` names one (SK_REPORT_*). */
static int refuse(struct pt_regs *regs, u32 report, long err)
{
	if (report)
		sk_hypercall(SK_HC_REPORT, report, 0, 0);
	return skip_with(regs, err);
}

/* The container the handler places an address space in (its view, not the guest-side table). */
static u64 container_of_mm(struct mm_struct *mm)
{
	return mm ? sk_hypercall(SK_HC_CONTAINER_OF, __pa(mm->pgd), 0, 0) : 0;
}

/* A post handler, even empty, keeps a guard's probe from being jump-optimised: an optimised probe
 * ignores the change of regs->ip skip_with makes. */
static void guard_post(struct kprobe *kp, struct pt_regs *regs, unsigned long flags) {}

#define GUARD(var, sym, pre) \
	static struct kprobe var = { .symbol_name = sym, .pre_handler = pre, .post_handler = guard_post }

/*
 * fork/clone: wake_up_new_task(p) runs in the parent once copy_process has succeeded and before
 * the child can run at all. A plain kprobe, not a kretprobe on copy_process: a kretprobe has a
 * fixed number of instances (maxactive) and silently misses returns beyond it, which in a fork
 * storm would let a child escape its container.
 */
static int wake_up_new_task_pre(struct kprobe *kp, struct pt_regs *regs)
{
	struct task_struct *p = (struct task_struct *)regs->di;
	u32 id;

	if (!p)
		return 0;
	/* The handler's view first (the parent's CR3): a write to the guest-side table cannot make
	 * a contained parent's child run in root. */
	id = my_container() ?: container_of_tgid(current->tgid);
	if (!id)
		return 0;
	if (set_tgid(p->tgid, id)) {
		pr_warn_ratelimited("splitkernel: %d contained processes at most: killing %d\n", SK_MAX_TASKS, p->pid);
		send_sig(SIGKILL, p, 1);    /* never runs unrecorded */
		return 0;
	}
	/* fork: the child's new address space joins the container, or the child never runs user code */
	if (p->mm && p->mm != current->mm && add_pgd(id, p->mm->pgd))
		send_sig(SIGKILL, p, 1);
	return 0;
}

static struct kprobe kp_fork = { .symbol_name = "wake_up_new_task", .pre_handler = wake_up_new_task_pre };

/*
 * exec: begin_new_exec(bprm) runs before the new address space is switched in (exec_mmap, inlined
 * there): it joins the caller's container while the CPU still runs the old one, so the new image
 * never runs a single instruction, kernel or user, outside it. From any thread of the group.
 */
static int begin_new_exec_pre(struct kprobe *kp, struct pt_regs *regs)
{
	struct linux_binprm *bprm = (struct linux_binprm *)regs->di;
	u32 id = my_container() ?: container_of_tgid(current->tgid);

	/* Container full: the exec fails before its point of no return (begin_new_exec not run),
	 * the old image goes on, and the new one never runs. */
	if (id && bprm && bprm->mm && add_pgd(id, bprm->mm->pgd))
		return skip_with(regs, -ENOSPC);
	return 0;
}

GUARD(kp_exec, "begin_new_exec", begin_new_exec_pre);

static int pgd_free_pre(struct kprobe *kp, struct pt_regs *regs)
{
	u64 pa = __pa((void *)regs->si);     /* pgd_free(struct mm_struct *mm, pgd_t *pgd) */
	unsigned long flags;
	int i, hit = 0;

	raw_spin_lock_irqsave(&sk_tasks_lock, flags);
	for (i = 0; i < ARRAY_SIZE(sk_pgds); i++)
		if (sk_pgds[i] == pa) {
			sk_pgds[i] = 0;
			hit = 1;
		}
	raw_spin_unlock_irqrestore(&sk_tasks_lock, flags);
	if (hit)
		sk_hypercall(SK_HC_DEL_PGD, pa, 0, 0);
	return 0;
}

static struct kprobe kp_pgd_free = { .symbol_name = "pgd_free", .pre_handler = pgd_free_pre };

/*
 * The thread group's last thread exits (whichever it is: the leader may have gone first with
 * SYS_exit, or been replaced by a non-leader's execve). do_exit calls exit_itimers only for the
 * thread whose decrement took signal->live to 0: exactly one thread of the group, however many
 * exit at the same instant (a probe on do_exit's entry, reading live there, saw 2 in both of two
 * threads exiting together, and the container leaked). exec calls it too: PF_EXITING tells.
 */
static int group_exit_pre(struct kprobe *kp, struct pt_regs *regs)
{
	unsigned long flags;
	u32 id;
	int i, others = 0;

	if (!(current->flags & PF_EXITING) || atomic_read(&current->signal->live) ||
	    !(id = container_of_tgid(current->tgid)))
		return 0;
	set_tgid(current->tgid, 0);
	raw_spin_lock_irqsave(&sk_tasks_lock, flags);
	for (i = 0; i < SK_MAX_TASKS; i++)
		others |= sk_tasks[i].container == id;
	raw_spin_unlock_irqrestore(&sk_tasks_lock, flags);
	/* The last process of the container (CLONE_VM children and forks count as its processes). */
	if (!others)
		container_release(id);
	return 0;
}

static struct kprobe kp_exit = { .symbol_name = "exit_itimers", .pre_handler = group_exit_pre };

/*
 * ptrace and every check like it (/proc/PID/mem, environ, maps, map_files, pidfd_getfd, ...: each
 * ptrace_may_access): a contained process may reach only processes of its own container.
 * Attaching to one outside, e.g. its uncontained parent shell, and writing code there would run
 * that code in root; reading (environ, maps, map_files' mappings) would show what the container
 * should not see. Refused as __ptrace_may_access itself refuses (-EPERM); an attempt to attach
 * or write is reported to the handler (an attack event), a read is not (`ps` reads a lot).
 * From root, anything, as ever.
 */
static int ptrace_access_pre(struct kprobe *kp, struct pt_regs *regs)
{
	struct task_struct *task = (struct task_struct *)regs->di;   /* __ptrace_may_access(task, mode) */
	unsigned int mode = regs->si;
	u32 mine, theirs;

	if (!(mine = my_container()))
		return 0;
	/* The callers hold task_lock(task): its mm stays while we look. */
	theirs = (u32)container_of_mm(task->mm);
	if (theirs == mine)
		return 0;
	return refuse(regs, mode & PTRACE_MODE_ATTACH ? SK_REPORT_PTRACE : 0, -EPERM);
}

GUARD(kp_ptrace, "__ptrace_may_access", ptrace_access_pre);

/*
 * TIOCSTI (push bytes into a terminal's input), TIOCLINUX (a VT's selection paste), and the
 * modem-line, port and line-discipline settings (a UART in loopback mode reads back what it
 * sends): from a container, typing into a terminal that an uncontained shell reads is running
 * commands outside.
 * tiocsti() is inlined into tty_ioctl(file, cmd, arg): the probe is there.
 */
static int tty_ioctl_pre(struct kprobe *kp, struct pt_regs *regs)
{
	unsigned int cmd = regs->si;

	switch (cmd) {
	case TIOCSTI:       /* push bytes into the terminal's input */
	case TIOCLINUX:     /* a VT's selection paste */
	case TIOCMSET:      /* modem lines: TIOCM_LOOP puts a UART in loopback, its output becomes */
	case TIOCMBIS:      /* input (found by review: the agent's and the console's serial ports) */
	case TIOCMBIC:
	case TIOCSSERIAL:   /* port settings */
	case TIOCSETD:      /* line discipline */
	case TIOCCONS:      /* console output redirected to this tty */
	case TIOCVHANGUP:   /* SIGHUP to the tty's session, outside */
	case KDSKBENT:      /* a VT's keymap: the next key a person types outside types the attacker's */
	case KDSKBSENT:
		break;
	default:
		return 0;
	}
	return my_container() ? refuse(regs, SK_REPORT_TTY, -EPERM) : 0;
}

GUARD(kp_tty, "tty_ioctl", tty_ioctl_pre);

/* Opening a terminal that is not its own from a container: the serial ports and VTs (major 4)
 * and /dev/console, read by the uncontained shell and the lab's agent (reading steals their
 * input, writing forges their output). /dev/tty (its controlling terminal) and ptys stay open. */
static int tty_open_pre(struct kprobe *kp, struct pt_regs *regs)
{
	struct inode *inode = (struct inode *)regs->di;     /* tty_open(inode, filp) */
	unsigned int major = imajor(inode), minor = iminor(inode);

	if (major != TTY_MAJOR && !(major == TTYAUX_MAJOR && minor == 1))
		return 0;
	return my_container() ? refuse(regs, SK_REPORT_TTY, -EPERM) : 0;
}

GUARD(kp_ttyopen, "tty_open", tty_open_pre);

/*
 * What a contained root could have the kernel run outside: a sysctl write (kernel.modprobe, the
 * helper request_module runs) and request_module itself (modprobe runs uncontained, reading
 * configuration the container may have written). Both refused from a container (-EPERM): a
 * contained program gets no module loaded on its behalf and tunes no kernel setting.
 */
static int refuse_in_container_pre(struct kprobe *kp, struct pt_regs *regs)
{
	return my_container() ? refuse(regs, 0, -EPERM) : 0;
}

GUARD(kp_sysctl, "proc_sys_write", refuse_in_container_pre);
GUARD(kp_modreq, "__request_module", refuse_in_container_pre);

/* perf_event_open(attr, pid, cpu, ...) with pid -1 samples whatever runs on that CPU: other
 * containers' and root's registers and user stacks. Not from a container (-EACCES). */
static int perf_open_pre(struct kprobe *kp, struct pt_regs *regs)
{
	return (int)regs->si == -1 && my_container() ? refuse(regs, 0, -EACCES) : 0;
}

GUARD(kp_perf, "__do_sys_perf_event_open", perf_open_pre);

/* The rest of what a contained root could do to the machine outside: reboot(2), the sysrq
 * trigger (a crash on 'c'), and writes to sysfs/kernfs (module parameters, device and CPU
 * settings, cgroups). Refused from a container. */
GUARD(kp_reboot, "__do_sys_reboot", refuse_in_container_pre);
GUARD(kp_sysrq, "write_sysrq_trigger", refuse_in_container_pre);
GUARD(kp_kernfs, "kernfs_fop_write_iter", refuse_in_container_pre);

/*
 * Signals from user space (kill, tkill, sigqueue, pidfd_send_signal: each through
 * check_kill_permission(sig, info, t)): a contained process signals only processes of its own
 * container (kill(-1, SIGKILL) from a contained root killed the agent and every daemon). Signals
 * the kernel sends (SIGCHLD to a parent outside, job control) do not come from user space: they
 * pass.
 */
static int kill_permission_pre(struct kprobe *kp, struct pt_regs *regs)
{
	const struct kernel_siginfo *info = (const void *)regs->si;
	struct task_struct *t = (struct task_struct *)regs->dx;
	bool from_user = info == SEND_SIG_NOINFO || (info != SEND_SIG_PRIV && info->si_code <= 0);
	u32 mine, theirs;

	if (!from_user || !(mine = my_container()))
		return 0;
	task_lock(t);
	theirs = (u32)container_of_mm(t->mm);
	task_unlock(t);
	return theirs == mine ? 0 : refuse(regs, 0, -EPERM);
}

GUARD(kp_kill, "check_kill_permission", kill_permission_pre);

static struct kprobe *guards[] = { &kp_ptrace, &kp_tty, &kp_ttyopen, &kp_sysctl, &kp_modreq, &kp_perf, &kp_reboot, &kp_sysrq,
				   &kp_kernfs, &kp_kill };

/* ---- /dev/splitkernel --------------------------------------------------------------------- */

/* Protected pages belong to the open file that allocated them: freed on FREE or on close. */
struct sk_file {
	struct mutex lock;
	struct page *pages[SK_MAX_PROTECTED];
	int mapped[SK_MAX_PROTECTED];    /* live user mappings of each page (FREE waits for none) */
};

/* Force an exit on every CPU: each flushes its TLB before running again (sk_exit_end). */
static void sk_ping_cpu(void *unused)
{
	sk_hypercall(SK_HC_PING, 0, 0, 0);
}

static void sk_shootdown(void)
{
	on_each_cpu(sk_ping_cpu, NULL, 1);
}

static int sk_open(struct inode *inode, struct file *f)
{
	struct sk_file *sf = kzalloc(sizeof(*sf), GFP_KERNEL);

	if (!sf)
		return -ENOMEM;
	mutex_init(&sf->lock);
	f->private_data = sf;
	return 0;
}

static void free_protected(struct sk_file *sf, int i)
{
	/* Only once every container maps it again may the page go back to the allocator. */
	if (sk_hypercall(SK_HC_UNPROTECT, page_to_phys(sf->pages[i]), 0, 0) == 0)
		__free_page(sf->pages[i]);
	else
		pr_warn("splitkernel: protected page %#llx could not be released; leaking it\n",
			(u64)page_to_phys(sf->pages[i]));
	sf->pages[i] = NULL;
}

static int sk_release(struct inode *inode, struct file *f)
{
	struct sk_file *sf = f->private_data;
	int i;

	for (i = 0; i < SK_MAX_PROTECTED; i++)
		if (sf->pages[i])
			free_protected(sf, i);
	kfree(sf);
	return 0;
}

static long sk_protect_ioctl(struct sk_file *sf, unsigned int cmd, struct sk_protect *p)
{
	struct page *pg;
	int i;

	if (cmd == SK_IOC_FREE_PROTECTED) {
		if (p->index >= SK_MAX_PROTECTED || !sf->pages[p->index])
			return -EINVAL;
		if (sf->mapped[p->index])
			return -EBUSY;      /* still mapped: freeing it would leave a user PTE to a free page */
		free_protected(sf, p->index);
		return 0;
	}
	if (!container_of_tgid(current->tgid))
		return -EPERM;      /* only a process in a container can own a protected page */
	for (i = 0; i < SK_MAX_PROTECTED && sf->pages[i]; i++)
		;
	if (i == SK_MAX_PROTECTED)
		return -ENOSPC;
	pg = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!pg)
		return -ENOMEM;
	if (sk_hypercall(SK_HC_PROTECT, page_to_phys(pg), p->flags, 0)) {
		__free_page(pg);
		return -ENOSPC;
	}
	/* No CPU may keep a stale translation (e.g. a root 1 GiB entry) that still reaches the page. */
	sk_shootdown();
	sf->pages[i] = pg;
	p->index = i;
	p->pa = page_to_phys(pg);
	return 0;
}

/* The vma holds a reference to the file, so sf outlives every mapping of its pages. */
static void sk_vm_open(struct vm_area_struct *vma)
{
	struct sk_file *sf = vma->vm_file->private_data;

	mutex_lock(&sf->lock);
	sf->mapped[vma->vm_pgoff]++;
	mutex_unlock(&sf->lock);
}

static void sk_vm_close(struct vm_area_struct *vma)
{
	struct sk_file *sf = vma->vm_file->private_data;

	mutex_lock(&sf->lock);
	sf->mapped[vma->vm_pgoff]--;
	mutex_unlock(&sf->lock);
}

static const struct vm_operations_struct sk_vm_ops = { .open = sk_vm_open, .close = sk_vm_close };

static int sk_mmap(struct file *f, struct vm_area_struct *vma)
{
	struct sk_file *sf = f->private_data;
	unsigned long i = vma->vm_pgoff;
	int r;

	if (vma->vm_end - vma->vm_start != PAGE_SIZE || i >= SK_MAX_PROTECTED)
		return -EINVAL;
	mutex_lock(&sf->lock);
	r = sf->pages[i] ? remap_pfn_range(vma, vma->vm_start, page_to_pfn(sf->pages[i]), PAGE_SIZE,
					   vma->vm_page_prot) : -EINVAL;
	if (!r) {
		/* One page, not expandable, and not inherited across fork (the child's vma would
		 * outlive FREE's check); mremap moves it through vm_ops open/close. */
		vma->vm_flags |= VM_DONTEXPAND | VM_DONTCOPY;
		vma->vm_ops = &sk_vm_ops;
		sf->mapped[i]++;
	}
	mutex_unlock(&sf->lock);
	return r;
}

/*
 * ENTER, whole, under sk_enter_mutex: two callers sharing an address space (threads, or
 * CLONE_VM processes) racing here once left a container that no process could release. An
 * address space shared with another process (CLONE_VM without CLONE_THREAD, or a vfork child's,
 * which is its parent's) is refused: entering would take the other process in with it.
 */
static void sk_shootdown(void);

static int enter_locked(struct sk_enter *en)
{
	s64 id;
	int r;

	if (sk_draining)
		return -ENODEV;
	if (!current->mm || test_bit(MMF_MULTIPROCESS, &current->mm->flags) || current->vfork_done ||
	    get_nr_threads(current) != 1)
		return -EINVAL;    /* enter before starting threads (a vfork from another thread shares the mm) */
	if (container_of_tgid(current->tgid) || my_container())
		return -EBUSY;
	if (!list_empty(&current->ptraced))
		return -EBUSY;     /* a tracer keeps its rights on its tracees outside (PTRACE_POKE*) */
	r = container_quota();
	if (r)
		return r;
	id = (s64)sk_hypercall(SK_HC_NEW_CONTAINER, en->policy, current->tgid, (u64)current->comm);
	if (id <= 0 || id >= SK_MAX_CONTAINERS)
		return -ENOSPC;
	container_made(id);
	if (set_tgid(current->tgid, id) || add_pgd(id, current->mm->pgd)) {   /* takes effect at once: the handler switches nCR3 */
		set_tgid(current->tgid, 0);
		container_release(id);
		return -ENOSPC;
	}
	sk_shootdown();    /* every CPU re-derives its container: one may hold this mm lazily */
	en->container = id;
	return 0;
}

static long sk_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	struct sk_enter en;
	struct sk_query q;
	struct sk_protect pr;
	struct sk_counters *cnt;
	struct sk_file *sf = f->private_data;
	long r;
	int i;

	switch (cmd) {
	case SK_IOC_ALLOC_PROTECTED:
	case SK_IOC_FREE_PROTECTED:
		if (copy_from_user(&pr, (void __user *)arg, sizeof(pr)))
			return -EFAULT;
		mutex_lock(&sf->lock);
		r = sk_protect_ioctl(sf, cmd, &pr);
		mutex_unlock(&sf->lock);
		if (!r && cmd == SK_IOC_ALLOC_PROTECTED && copy_to_user((void __user *)arg, &pr, sizeof(pr)))
			return -EFAULT;
		return r;
	case SK_IOC_ENTER:
		if (copy_from_user(&en, (void __user *)arg, sizeof(en)))
			return -EFAULT;
		r = policy_check(en.policy);
		if (r)
			return r;
		mutex_lock(&sk_enter_mutex);
		r = enter_locked(&en);
		mutex_unlock(&sk_enter_mutex);
		if (r)
			return r;
		return copy_to_user((void __user *)arg, &en, sizeof(en)) ? -EFAULT : 0;
	case SK_IOC_QUERY:
		if (copy_from_user(&q, (void __user *)arg, sizeof(q)))
			return -EFAULT;
		/* The caller's own: the container its CPU runs now, as the handler knows it from CR3. */
		q.container = q.pid ? container_of_tgid(q.pid) : my_container();
		if (my_container() && q.container != my_container())
			return -EPERM;      /* from a container, only its own counters */
		q.mode = q.container ? 1 : 0;
		q.vendor = sk.vendor;
		cnt = &q.counters;
		for (i = 0; i < sizeof(*cnt) / sizeof(u64); i++)
			((u64 *)cnt)[i] = sk_hypercall(SK_HC_QUERY, q.container, i, 0);
		return copy_to_user((void __user *)arg, &q, sizeof(q)) ? -EFAULT : 0;
	}
	return -ENOTTY;
}

static const struct file_operations sk_fops = {
	.owner = THIS_MODULE,
	.open = sk_open,
	.release = sk_release,
	.mmap = sk_mmap,
	.unlocked_ioctl = sk_ioctl,
};

static struct miscdevice sk_misc = { .minor = MISC_DYNAMIC_MINOR, .name = "splitkernel", .fops = &sk_fops,
				     .mode = 0666 };

/* /proc/splitkernel: one line per contained process: "tgid container". */
static int sk_proc_show(struct seq_file *m, void *v)
{
	int i;

	seq_printf(m, "# splitkernel abi %d, cpus 0x%x, exits %llu, hypercalls %llu\n", SK_ABI_VERSION,
		   sk_desc.cpu_mask, sk_desc.total_exits, sk_desc.hypercalls);
	for (i = 0; i < SK_MAX_TASKS; i++)
		if (sk_tasks[i].container)
			seq_printf(m, "%d %u\n", sk_tasks[i].tgid, sk_tasks[i].container);
	return 0;
}

/* ---- load and unload ---------------------------------------------------------------------- */


/* Each page of a module's text (RX) and rodata (R), in the order protect_module walks them. */
#define for_each_module_ro_page(mod, a, perm)							\
	for (a = (unsigned long)(mod)->core_layout.base;						\
	     a < (unsigned long)(mod)->core_layout.base + (mod)->core_layout.ro_size &&			\
	     ((perm = a < (unsigned long)(mod)->core_layout.base + (mod)->core_layout.text_size ?	\
		       SK_PERM_R | SK_PERM_X : SK_PERM_R), 1);						\
	     a += PAGE_SIZE)

/* Before launch: this module's own text and rodata, read-only from the first container on. */
static int add_module_text(struct module *mod)
{
	unsigned long a;
	u32 perm;

	for_each_module_ro_page(mod, a, perm) {
		if (sk.nmodtext >= SK_MAX_MODTEXT)
			return -E2BIG;     /* never truncated: a page left out would be writable */
		sk.modtext[sk.nmodtext++] = PFN_PHYS(vmalloc_to_pfn((void *)a)) | perm;
	}
	return 0;
}

/*
 * After launch: a module loaded later (from root or from inside a container) has its text and
 * rodata made read-only in every container when it comes (its own jump labels patched already,
 * its memory already read-only in the guest's tables), and ordinary again when it goes. A module
 * that cannot be protected (table full) fails to load: fail closed.
 */
static int protect_module(struct module *mod, bool on)
{
	unsigned long a;
	u32 perm;

	for_each_module_ro_page(mod, a, perm) {
		u64 pa = PFN_PHYS(vmalloc_to_pfn((void *)a));

		if (!on)
			sk_hypercall(SK_HC_MODTEXT_DEL, pa, 0, 0);
		else if (sk_hypercall(SK_HC_MODTEXT_ADD, pa, perm, 0))
			return -ENOSPC;
	}
	return 0;
}

static int sk_module_notify(struct notifier_block *nb, unsigned long action, void *data)
{
	struct module *mod = data;

	if (mod == THIS_MODULE)
		return NOTIFY_DONE;
	if (action == MODULE_STATE_COMING && protect_module(mod, true)) {
		protect_module(mod, false);
		pr_err("splitkernel: cannot protect module %s's text (%d pages at most): refusing it\n",
		       mod->name, SK_MAX_MODTEXT);
		return notifier_from_errno(-ENOSPC);
	}
	if (action == MODULE_STATE_GOING)
		protect_module(mod, false);
	return NOTIFY_OK;
}

/* Last on COMING (after jump labels and static calls have patched the module's text). */
static struct notifier_block sk_module_nb = { .notifier_call = sk_module_notify, .priority = INT_MIN };

/*
 * After the notifier is registered: every module loaded before it (COMING or LIVE), so none falls
 * between a scan and the registration. A module met both here and by the notifier is added once
 * (MODTEXT_ADD of a page already module text with the same permissions succeeds). No container
 * exists yet, so no kernel patching of a coming module's text runs inside one.
 */
static int protect_loaded_modules(void)
{
	unsigned long modules = sk_lookup_name("modules");
	struct module *mod;
	int r = 0;

	rcu_read_lock();   /* the module list is RCU-protected; module_mutex is not exported */
	list_for_each_entry_rcu(mod, &THIS_MODULE->list, list) {
		if ((unsigned long)&mod->list == modules || mod == THIS_MODULE)
			continue;
		if (mod->state != MODULE_STATE_COMING && mod->state != MODULE_STATE_LIVE)
			continue;
		r = r ?: protect_module(mod, true);
		/* Going meanwhile (its GOING notification may have come before our additions):
		 * give its pages back, or freed frames would stay read-only in containers. */
		if (READ_ONCE(mod->state) == MODULE_STATE_GOING)
			protect_module(mod, false);
	}
	rcu_read_unlock();
	if (r)
		pr_err("splitkernel: the loaded modules' text does not fit the table (%d pages at most)\n",
		       SK_MAX_MODTEXT);
	return r;
}

static int collect_regions(void)
{
	unsigned long text = sk_lookup_name("_text"), etext = sk_lookup_name("_etext");
	unsigned long ro = sk_lookup_name("__start_rodata"), ero = sk_lookup_name("__end_rodata");
	unsigned long modules = sk_lookup_name("modules"), top = sk_lookup_name("init_top_pgt");

	if (!text || !etext || !ro || !ero || !modules || !top)
		return -ENOENT;
	sk.kernel_cr3 = sk.host_cr3 = __pa_symbol(top);   /* SVM: until sk_build_host_tables copies it */
	sk.text_pa = __pa_symbol(text);
	sk.text_end_pa = __pa_symbol(etext);
	sk.rodata_pa = __pa_symbol(ro);
	sk.rodata_end_pa = __pa_symbol(ero);
	/* This module's own text; the others once the module notifier runs (protect_loaded_modules). */
	if (add_module_text(THIS_MODULE))
		return -E2BIG;
	sk.desc_page_pa = PFN_PHYS(vmalloc_to_pfn(&sk_desc));
	sk.state_page_pa = PFN_PHYS(vmalloc_to_pfn(&sk));
	return 0;
}

static int carve_pool(void)
{
	int cpu, n = 0;
	struct sk_cpu *c;

	/* Pool pages, before launch, handed out in order (sk_page_alloc). */
	sk.containers = sk_page_alloc();
	for (n = 1; n * PAGE_SIZE < SK_MAX_CONTAINERS * sizeof(struct sk_container); n++)
		sk_page_alloc();    /* contiguous: the allocator hands pages out in order at first */
	sk.msrpm = sk_page_alloc();
	sk_page_alloc();        /* SVM's MSRPM is 8 KiB (VMX's MSR bitmap 4 KiB) */
	sk.iopm = sk_page_alloc();
	sk_page_alloc();
	sk_page_alloc();        /* SVM's IOPM is 12 KiB */
	if (!sk.iopm || sk_be->setup())
		return -ENOMEM;
	/* Above 4 CPUs the rings would leave too little of the 4 MiB pool (the buddy allocator's
	 * largest block) for containers: 8 CPUs with 4,096 entries left room for 4 of them. */
	sk.ring_entries = num_online_cpus() > 4 ? SK_RING_ENTRIES / 2 : SK_RING_ENTRIES;
	sk.sec_ring_entries = num_online_cpus() > 4 ? SK_SEC_RING_ENTRIES / 2 : SK_SEC_RING_ENTRIES;
	for_each_online_cpu(cpu) {
		int i, pages = (sizeof(struct sk_ring) + sk.ring_entries * sizeof(struct sk_event)) / PAGE_SIZE + 1;
		int sec_pages = (sizeof(struct sk_ring) + sk.sec_ring_entries *
				 (sizeof(struct sk_event) + sizeof(struct sk_walk))) / PAGE_SIZE + 1;

		if (cpu >= SK_MAX_CPUS)
			return -E2BIG;
		c = sk_page_alloc();
		if (!c)
			return -ENOMEM;
		c->cpu = cpu;
		c->percpu = per_cpu_offset(cpu);
		c->vmcb = sk_page_alloc();
		c->hsave = sk_page_alloc();
		c->stack = sk_page_alloc();
		for (i = 1; i < SK_HOST_STACK / PAGE_SIZE; i++)
			if (!c->stack || sk_page_alloc() != c->stack + i * PAGE_SIZE)
				return -ENOMEM;
		/* The rings take most of the pool (113 pages a CPU with 4,096 entries): it may run out here,
		 * and a ring cut short would overlap pages handed out later. */
		c->ring = sk_page_alloc();
		for (i = 1; i < pages; i++)
			if (!c->ring || sk_page_alloc() != (u8 *)c->ring + i * PAGE_SIZE)
				return -ENOMEM;
		c->sec_ring = sk_page_alloc();
		for (i = 1; i < sec_pages; i++)
			if (!c->sec_ring || sk_page_alloc() != (u8 *)c->sec_ring + i * PAGE_SIZE)
				return -ENOMEM;
		if (!c->vmcb || !c->hsave || !c->ring || !c->sec_ring)
			return -ENOMEM;
		c->vmcb_pa = sk_pa(c->vmcb);
		/* The top slot of the host stack holds c: sk_vmrun.S finds it there after every exit. */
		c->host_rsp = (u64)(c->stack + SK_HOST_STACK - 64);
		*(struct sk_cpu **)c->host_rsp = c;
		c->ring->entries = sk.ring_entries;
		c->ring->event_size = sizeof(struct sk_event);
		c->ring->cpu = cpu;
		c->ring->ring_kind = SK_RING_ALL;
		c->sec_ring->entries = sk.sec_ring_entries;
		c->sec_ring->event_size = sizeof(struct sk_event);
		c->sec_ring->cpu = cpu;
		c->sec_ring->ring_kind = SK_RING_SECURITY;
		sk.cpus[cpu] = c;
		sk_desc.rings_pa[cpu] = sk_pa(c->ring);
		sk_desc.sec_rings_pa[cpu] = sk_pa(c->sec_ring);
		sk_desc.vmcb_pa[cpu] = c->vmcb_pa;
		sk.ncpus++;
	}
	return 0;
}

static struct proc_dir_entry *sk_proc;

/*
 * CPU hotplug while loaded would take a CPU out from under the handler (offline: INIT/SIPI resets
 * it out of SVM on the way back) or bring one up that runs uncontained: both are refused.
 */
static int sk_hp_state = -1;
static int sk_cpu_up_refuse(unsigned int cpu) { return -EBUSY; }
static int sk_cpu_down_refuse(unsigned int cpu) { return -EBUSY; }

/* What a live descriptor says on top of the layout: set last, so a half-made load never looks alive. */
static void descriptor_publish(void)
{
	sk_desc.load_nonce = get_random_u64();
	sk_desc.module_core_va = (u64)THIS_MODULE->core_layout.base;
	barrier();
	WRITE_ONCE(sk_desc.magic, SK_MAGIC);
}

static void descriptor_withdraw(void)
{
	WRITE_ONCE(sk_desc.magic, 0);
	sk_desc.self_pa = 0;
	sk_desc.load_nonce = 0;
}

static int __init sk_init(void)
{
	const char *why = NULL;
	u64 efer;
	int r;

	BUILD_BUG_ON(sizeof(struct sk_state) > PAGE_SIZE);
	BUILD_BUG_ON(sizeof(struct sk_descriptor) > PAGE_SIZE);
	BUILD_BUG_ON(sizeof(struct sk_event) != 112);
	BUILD_BUG_ON(sizeof(struct sk_cpu_now) != 24);
	BUILD_BUG_ON(SK_RING_ENTRIES & (SK_RING_ENTRIES - 1));
	BUILD_BUG_ON(SK_SEC_RING_ENTRIES & (SK_SEC_RING_ENTRIES - 1));

	/* The backend follows the CPU: VMX on Intel, SVM on AMD (CPUID 1 ECX.VMX, 8000_0001h ECX.SVM). */
	sk_be = boot_cpu_has(X86_FEATURE_VMX) ? &sk_vmx_backend : &sk_svm_backend;
	sk.vendor = sk_be->vendor;
	sk.probe = probe;
	if (!sk_be->supported(&why)) {
		pr_err("splitkernel: not loading (%s backend): %s\n", sk_be->name, why);
		r = -ENODEV;
		goto err_state;
	}
	/* Reserved CR4/EFER bits (#GP for the guest): what the CPUs run with (each CPU adds its own
	 * CR4 as it launches: they differ, e.g. in PSE), plus the bits the kernel toggles at run time
	 * (PGE to flush, TSD for seccomp/prctl, PCE for rdpmc, DE, MCE, PSE). */
	sk.cr4_allowed = native_read_cr4() | X86_CR4_PGE | X86_CR4_TSD | X86_CR4_PCE | X86_CR4_DE | X86_CR4_MCE |
			 X86_CR4_PSE;
	rdmsrl(MSR_EFER, efer);
	sk.efer_allowed = efer | (sk.vendor == SK_VENDOR_SVM ? EFER_SVME : 0);
	r = collect_regions();
	if (r) {
		pr_err("splitkernel: kernel symbols not found (%d)\n", r);
		goto err_state;
	}
	r = sk_pool_init();
	if (r)
		goto err_state;
	r = carve_pool();
	if (!r)
		r = sk_build_tables();
	/* Under SVM the host runs with GIF=0: no NMI reaches the kernel's handlers there, so the host
	 * can run on a copy frozen at load. Under VMX an NMI in root mode runs the kernel's NMI
	 * handlers, which need its live mappings (task stacks, later modules): until the handler has
	 * an IDT of its own, VMX stays on init_top_pgt. */
	if (!r && sk.vendor == SK_VENDOR_SVM)
		r = sk_build_host_tables(sk.kernel_cr3);
	if (r) {
		pr_err("splitkernel: out of pool memory while setting up (%d)\n", r);
		goto err_pool;
	}
	sk.containers[0].active = 1;
	sk.containers[0].ncr3 = sk.root_ncr3;
	sk_desc.self_pa = PFN_PHYS(vmalloc_to_pfn(&sk_desc)) + offset_in_page(&sk_desc);
	sk_desc.vendor = sk.vendor;
	sk_desc.ncpus = sk.ncpus;
	sk_desc.max_containers = SK_MAX_CONTAINERS;
	sk_desc.containers_pa = sk_pa(sk.containers);
	sk_desc.container_size = sizeof(struct sk_container);
	sk_desc.event_size = sizeof(struct sk_event);
	sk_desc.ring_entries = sk.ring_entries;
	sk_desc.slat_levels = sk.nlevels;
	sk_desc.slat_caps = sk.slat_caps;
	sk_desc.maxphyaddr = boot_cpu_data.x86_phys_bits;
	sk_desc.pool_pa = sk.pool_pa;
	sk_desc.pool_size = SK_POOL_SIZE;
	sk_desc.kernel_text_pa = sk.text_pa;
	sk_desc.kernel_text_end_pa = sk.text_end_pa;
	sk_desc.rodata_pa = sk.rodata_pa;
	sk_desc.rodata_end_pa = sk.rodata_end_pa;
	sk_desc.state_page_pa = sk.state_page_pa;
	sk_desc.host_cr3 = sk.host_cr3;
	sk_desc.load_count++;

	r = sk_be->virtualize_all();
	if (r) {
		pr_err("splitkernel: a CPU could not enter the guest (%s); nothing changed\n", sk_be->name);
		goto err_virt;
	}
	r = register_module_notifier(&sk_module_nb);
	if (r)
		goto err_hooks;
	r = protect_loaded_modules();
	if (r)
		goto err_notifier;
	r = register_kprobe(&kp_fork);
	if (r)
		goto err_notifier;
	r = register_kprobe(&kp_exec);
	if (r)
		goto err_fork;
	r = register_kprobe(&kp_pgd_free);
	if (r)
		goto err_exec;
	r = register_kprobe(&kp_exit);
	if (r)
		goto err_pgd_free;
	r = register_kprobes(guards, ARRAY_SIZE(guards));
	if (r)
		goto err_exit;
	r = misc_register(&sk_misc);
	if (r)
		goto err_guards;
	sk_hp_state = cpuhp_setup_state_nocalls(CPUHP_AP_ONLINE_DYN, "splitkernel:online",
						sk_cpu_up_refuse, sk_cpu_down_refuse);
	if (sk_hp_state < 0) {
		r = sk_hp_state;
		goto err_misc;
	}
	sk_proc = proc_create_single("splitkernel", 0444, NULL, sk_proc_show);
	descriptor_publish();
	pr_info("splitkernel: %d CPU(s) under the root-mode handler (%s); descriptor at %#llx, pool %#llx+%#lx, "
		"host tables %d pages\n", sk.ncpus, sk_be->name, sk_desc.self_pa, sk.pool_pa, SK_POOL_SIZE,
		sk.host_table_pages);
	return 0;

err_misc:
	misc_deregister(&sk_misc);
err_guards:
	unregister_kprobes(guards, ARRAY_SIZE(guards));
err_exit:
	unregister_kprobe(&kp_exit);
err_pgd_free:
	unregister_kprobe(&kp_pgd_free);
err_exec:
	unregister_kprobe(&kp_exec);
err_fork:
	unregister_kprobe(&kp_fork);
err_notifier:
	unregister_module_notifier(&sk_module_nb);
err_hooks:
	pr_err("splitkernel: hooks or device failed (%d)\n", r);
err_virt:
	sk_be->devirtualize_all();     /* no container yet: every CPU leaves from root */
err_pool:
	sk_pool_free();
err_state:
	descriptor_withdraw();
	memset(&sk, 0, sizeof(sk));
	return r;
}

/*
 * Processes the handler still runs in a container, by their address space (its view, not the
 * guest-side table). Those of a released container are sent SIGKILL. Returns how many there are.
 */
static int contained_left(void)
{
	struct task_struct *g, *p;
	int left = 0;

	rcu_read_lock();
	for_each_process_thread(g, p) {   /* threads too: a group whose leader left with SYS_exit */
		u64 st;

		task_lock(p);
		st = container_of_mm(p->mm);
		task_unlock(p);
		if (!(u32)st)
			continue;
		left++;
		if (st >> 32 == 2 && p != current)   /* rmmod itself in one: it waits for ever (tier 3) */
			send_sig(SIGKILL, p, 1);
	}
	rcu_read_unlock();
	return left;
}

/*
 * Unload. rmmod cannot reach here while a container lives: each holds a reference on the module
 * ("Module splitkernel is in use"), so contained processes are never returned to root. CPUs that
 * still run a released container lazily may leave from it once the unload has begun.
 */
static void __exit sk_exit(void)
{
	/* No new container from here on (an fd opened before could still ask). */
	mutex_lock(&sk_enter_mutex);
	sk_draining = true;
	mutex_unlock(&sk_enter_mutex);
	/* The handler agrees first, while every hook still runs. It refuses while a container is
	 * live, which a reference count forged with a kernel write primitive (or rmmod -f) hides
	 * from rmmod: then wait, fork, exec and exit still tracked, until the container's processes
	 * end. Processes the handler still places in a *released* container (its release forged
	 * early) are killed: unloading would return them to native. Freeing the module under CPUs
	 * in guest mode would crash. */
	while (contained_left() || sk_hypercall(SK_HC_BEGIN_UNLOAD, 0, 0, 0)) {
		if (my_container())
			pr_warn_once("splitkernel: rmmod from inside container %u (CAP_SYS_MODULE there is kernel code: "
				     "tier 3): the unload waits for that container to end\n", my_container());
		pr_warn_once("splitkernel: unload with a live container (forged module reference count?): "
			     "waiting for it to end\n");
		schedule_timeout_idle(HZ / 5);
	}
	descriptor_withdraw();
	cpuhp_remove_state_nocalls(sk_hp_state);
	proc_remove(sk_proc);
	misc_deregister(&sk_misc);
	unregister_kprobes(guards, ARRAY_SIZE(guards));
	unregister_kprobe(&kp_exit);
	unregister_kprobe(&kp_pgd_free);
	unregister_kprobe(&kp_exec);
	unregister_kprobe(&kp_fork);
	unregister_module_notifier(&sk_module_nb);
	sk_be->devirtualize_all();
	sk_pool_free();
	memset(sk_tasks, 0, sizeof(sk_tasks));
	memset(sk_pgds, 0, sizeof(sk_pgds));
	memset(sk_conts, 0, sizeof(sk_conts));
	memset(&sk, 0, sizeof(sk));
	pr_info("splitkernel: unloaded, every CPU back to native\n");
}

module_init(sk_init);
module_exit(sk_exit);
