/* SPDX-License-Identifier: GPL-2.0 */
/*
 * splitkernel ABI: shared by the module (kernel/module), the guest tools (kernel/tools) and the
 * debugger (splitdbg/target/module_abi.py mirrors it; keep both in step and bump SK_ABI_VERSION).
 *
 * Everything the debugger reads lives in guest-physical memory and is reached from the debug
 * descriptor (struct sk_descriptor), which carries its own physical address so that a scan for
 * SK_MAGIC can confirm a hit. All pointers in these structures are guest-physical addresses.
 */
#ifndef SPLITKERNEL_H
#define SPLITKERNEL_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/ioctl.h>
#else
#include <linux/types.h>     /* __u8 .. __u64, as <asm/types.h> defines them for every program */
#include <sys/ioctl.h>
#endif

#define SK_MAGIC        0x4e524b54494c5053ULL   /* "SPLITKRN" in memory */
#define SK_ABI_VERSION  6

#define SK_MAX_CPUS        8
#define SK_MAX_CONTAINERS  32       /* container 0 is the root container */
#define SK_MAX_PGDS        64       /* address spaces (mm pgds) per container */
#define SK_MAX_ISOLATED    64       /* private page copies per container */
#define SK_RING_ENTRIES    4096     /* per CPU, a power of two; half as many above 4 CPUs (the
                                       pool holds every ring): each ring's header says */
#define SK_MAX_PROTECTED   16       /* protected pages per container */
#define SK_SEC_RING_ENTRIES 1024    /* per CPU: the security ring (violations, blocked CR4 writes,
                                       attacks), apart from the busy ring so that no flood of
                                       ordinary exits overwrites them; half as many above 4 CPUs */
#define SK_MAX_MODTEXT     384      /* module text and rodata pages protected in containers */
#define SK_USER_CONTAINERS 4        /* live containers one unprivileged user may hold ... */
#define SK_RESERVED_CONTAINERS 8    /* ... and slots kept for privileged callers */

/* Vendors */
#define SK_VENDOR_SVM 1
#define SK_VENDOR_VMX 2

/* Event kinds */
#define SK_EV_EXIT        1   /* a VM exit of interest (exit_code says which) */
#define SK_EV_VIOLATION   2   /* a permission violation in a container (NPF / EPT violation) */
#define SK_EV_CR3_SWITCH  3   /* intercepted CR3 write; extra = new CR3; container = the one now active */
#define SK_EV_HYPERCALL   4   /* VMMCALL from the guest side; extra = hypercall number */
#define SK_EV_ENTER_NR    5   /* return to non-root mode after handling an exit */
#define SK_EV_CR4_BLOCKED 6   /* an attempt to clear CR4.SMEP/SMAP; extra = value written */
#define SK_EV_LIFECYCLE   7   /* CPU virtualised (extra=1) / devirtualised (extra=0) */
#define SK_EV_ATTACK      8   /* something only an attacker does, refused: a hypercall from user mode or
                                 outside its rights, a virtualisation instruction (extra = exit code),
                                 a CR4/EFER value with reserved bits; extra says what */
#define SK_EV_FATAL       9   /* the handler cannot go on safely: this CPU stops (extra = exit code) */

/* What an attack event's `region` field says its `extra` is (SK_EV_ATTACK only) */
#define SK_ATTACK_HYPERCALL 1   /* extra = hypercall number: from user mode, or outside the caller's rights */
#define SK_ATTACK_EXIT      2   /* extra = SVM exit code / VMX exit reason: an instruction only an attacker runs */
#define SK_ATTACK_MSR       3   /* extra = MSR number: a write to an MSR the host owns, or a reserved EFER bit */
#define SK_ATTACK_CR        4   /* extra = control register number: a reserved bit or a host-owned bit */
#define SK_ATTACK_REPORT    5   /* extra = SK_REPORT_*: a guest-side hook refused it (SK_HC_REPORT) */

/* Rings: each CPU has two, the busy one (every event but the security kinds) and the security one. */
#define SK_RING_ALL       0
#define SK_RING_SECURITY  1
#define SK_EV_IS_SECURITY(kind) ((kind) == SK_EV_VIOLATION || (kind) == SK_EV_CR4_BLOCKED || \
				 (kind) == SK_EV_ATTACK || (kind) == SK_EV_FATAL)

/* Actions taken by the root-mode handler */
#define SK_ACT_NONE     0
#define SK_ACT_ALLOW    1   /* policy log: logged, the access was allowed to proceed */
#define SK_ACT_DENY     2   /* policy deny: #GP injected, the offending task dies, the kernel stays up */
#define SK_ACT_ISOLATE  3   /* policy isolate: the page now maps a private copy in this container */
#define SK_ACT_SWITCH   4   /* container switched */
#define SK_ACT_EMULATE  5   /* instruction emulated (CR3/CR4/MSR write) */
#define SK_ACT_PROBE    6   /* a nested fault the probe armed: recorded, the entry restored, the access retried */

/* Region kinds: what a violation hit */
#define SK_REGION_NONE        0
#define SK_REGION_TEXT        1   /* kernel text */
#define SK_REGION_RODATA      2   /* kernel read-only data */
#define SK_REGION_MODULE_TEXT 3   /* text of a module loaded before the container was made */
#define SK_REGION_SK_STATE    4   /* the module's own state (tables, rings, VMCBs) */
#define SK_REGION_PROTECTED   5   /* another container's protected page */
#define SK_NR_REGIONS         6

/* Per-region policies, packed 4 bits per region kind into sk_enter.policy */
#define SK_POL_DENY     0
#define SK_POL_ISOLATE  1
#define SK_POL_LOG      2
#define SK_POLICY(region, pol) ((__u32)(pol) << (4 * (region)))
#define SK_POLICY_OF(policy, region) (((policy) >> (4 * (region))) & 0xf)
#define SK_POLICY_DEFAULT 0  /* deny everywhere */

struct sk_event {               /* 112 bytes */
	__u64 seq;                  /* per-CPU sequence number, from 1 */
	__u64 tsc;
	__u32 cpu;
	__u32 container;
	__u32 pid;                  /* tgid of the guest task running (0 if unknown) */
	__u32 kind;                 /* SK_EV_* */
	__u64 exit_code;            /* SVM exit code / VMX basic exit reason */
	__u64 exitinfo1;            /* SVM EXITINFO1 / VMX exit qualification */
	__u64 exitinfo2;            /* SVM EXITINFO2 / VMX guest-physical address */
	__u64 rip;                  /* guest RIP */
	__u64 cr3;                  /* guest CR3 */
	__u64 slat_root;            /* nCR3 / EPTP in force when the exit happened */
	__u16 cpl;
	__u16 region;               /* SK_REGION_* for violations */
	__u32 action;               /* SK_ACT_* */
	__u64 extra;                /* kind-specific: new CR3, hypercall number, copy address, ... */
	__u64 guest_linear;         /* VMX: guest-linear address of an EPT violation (exit qualification
	                               bit 7 set), else 0; SVM's nested page faults do not report one */
	__u64 exitintinfo;          /* the event being delivered when the exit happened: SVM EXITINTINFO /
	                               VMX IDT-vectoring information (bits 31:0; valid bit 31, vector 7:0,
	                               type 10:8, error code valid 11) and its error code (bits 63:32) */
};

/* The second-level walk of a violation's guest-physical address as the handler found it at the
 * exit, before its action changed anything: entry[0] is the top level's (PML5E or PML4E), then
 * one a level down to the entry that ended the walk (a leaf, or one not present); 0 after that.
 * Kept beside each security-ring entry (the same slot), so a verdict never depends on tables as
 * they are later. */
#define SK_WALK_LEVELS 5
struct sk_walk {
	__u64 entry[SK_WALK_LEVELS];
};

struct sk_ring {                /* per CPU; entries follow the header; in the security ring,
	                               struct sk_walk walk[entries] follows the entries */
	__u64 head;                 /* events ever written (the next seq is head + 1) */
	__u64 overflow;             /* events overwritten before... i.e. max(0, head - entries) at write time */
	__u32 entries;              /* SK_RING_ENTRIES, or half of it above 4 CPUs */
	__u32 event_size;           /* sizeof(struct sk_event) */
	__u32 cpu;
	__u32 ring_kind;            /* SK_RING_ALL or SK_RING_SECURITY */
	struct sk_event ev[];       /* ev[(seq - 1) % entries] */
};

struct sk_counters {
	__u64 exits;                /* every VM exit taken while this container was active */
	__u64 exits_npf;
	__u64 exits_cr3;
	__u64 exits_vmmcall;
	__u64 exits_other;
	__u64 cr3_switches_in;      /* times this container became active */
	__u64 violations[SK_NR_REGIONS];
	__u64 denied, allowed, isolated;
	__u64 cr4_blocked;
	__u64 attacks;              /* SK_EV_ATTACK events, recorded or not (a flood is sampled) */
};

struct sk_container {           /* in the module's pool; array of SK_MAX_CONTAINERS */
	__u32 id;
	__u32 active;               /* 1 in use, 2 released (freed once no address space and no CPU uses it) */
	__u32 owner_pid;            /* tgid of the process that entered (0 for the root container) */
	__u32 policy;               /* SK_POLICY(region, pol) */
	__u64 ncr3;                 /* physical address of the top-level second-level table: nCR3 (SVM),
	                               or the EPT PML4/PML5 that the EPTP points at (VMX) */
	__u32 npgds;
	__u32 nisolated;
	__u64 pgds[SK_MAX_PGDS];    /* guest CR3 (pgd physical address) of each address space */
	__u64 iso_gpa[SK_MAX_ISOLATED];   /* pages isolated: guest-physical ... */
	__u64 iso_copy[SK_MAX_ISOLATED];  /* ... and the private copy they now map */
	struct sk_counters counters;
	char owner_comm[16];
	__u32 nprotected;
	__u32 protected_flags;      /* bit i: protected_pa[i] is visible to the root container */
	__u64 protected_pa[SK_MAX_PROTECTED];   /* pages present only in this container */
};

struct sk_descriptor {
	__u64 magic;                /* SK_MAGIC */
	__u32 version;              /* SK_ABI_VERSION */
	__u32 size;                 /* sizeof(struct sk_descriptor) */
	__u64 self_pa;              /* physical address of this descriptor */
	__u32 vendor;               /* SK_VENDOR_* */
	__u32 ncpus;                /* CPUs virtualised */
	__u32 cpu_mask;             /* bit per CPU currently under the root-mode handler */
	__u32 max_containers;
	__u64 containers_pa;        /* struct sk_container[max_containers] */
	__u32 container_size;
	__u32 event_size;
	__u32 ring_entries;
	__u32 slat_levels;          /* levels of the nested tables (the host's paging: 4, or 5 with LA57) */
	__u64 rings_pa[SK_MAX_CPUS];
	__u64 vmcb_pa[SK_MAX_CPUS]; /* VMCB (SVM) or VMCS (VMX) of each CPU */
	__u64 pool_pa;              /* the module's private memory: tables, rings, VMCBs */
	__u64 pool_size;
	__u64 kernel_text_pa, kernel_text_end_pa;
	__u64 rodata_pa, rodata_end_pa;
	__u64 total_exits;
	__u64 hypercalls;
	__u64 load_count;           /* incremented each time the module virtualises the CPUs */
	__u64 slat_caps;            /* VMX: IA32_VMX_EPT_VPID_CAP; SVM: CPUID 8000_000Ah EDX */
	__u32 maxphyaddr;           /* the CPU's physical-address width (CPUID 8000_0008h EAX[7:0]) */
	__u32 reserved;
	struct sk_guest_regs {      /* per CPU, written at every VM exit: the guest's control registers, */
		__u64 cr0, cr3, cr4, efer;   /* readable without knowing the VMCS's in-memory layout */
	} guest[SK_MAX_CPUS];
	__u64 sec_rings_pa[SK_MAX_CPUS];   /* each CPU's security ring (SK_RING_SECURITY) */
	__u64 load_nonce;           /* random, set at each load: tells this load from a dead one's copy */
	__u64 module_core_va;       /* the module's own load address (struct module core base), to be
	                               confirmed against the kernel's module list */
	__u64 state_page_pa;        /* the handler's variables (struct sk_state): read-only in containers */
	__u64 host_cr3;             /* the page tables the handler runs on (the kernel's init_top_pgt) */
	struct sk_cpu_now {         /* per CPU, written as each exit's handling ends: what it runs next */
		__u64 cr3;              /* the guest CR3 (after an intercepted MOV to CR3, the new one) */
		__u64 ncr3;             /* the nested table (nCR3 / EPT PML4) of that container */
		__u32 container;
		__u32 reserved;
	} cpu_now[SK_MAX_CPUS];
};

/* ioctls on /dev/splitkernel */
struct sk_enter {
	__u32 policy;               /* in: SK_POLICY(...) or SK_POLICY_DEFAULT */
	__u32 container;            /* out: container id */
};

struct sk_query {
	__u32 pid;                  /* in: tgid, 0 = caller */
	__u32 mode;                 /* out: 0 = root (R), 1 = non-root container (NR) */
	__u32 container;            /* out */
	__u32 vendor;               /* out */
	struct sk_counters counters;   /* out: the container's counters */
};

/* ALLOC_PROTECTED: a zeroed page present only in the caller's container; mmap /dev/splitkernel
 * at offset index * 4096 to use it. SK_PROT_VISIBLE_TO_ROOT keeps it readable from processes that
 * have no container (to show what containers add); by default the root container loses it too. */
#define SK_PROT_VISIBLE_TO_ROOT 1
struct sk_protect {
	__u32 flags;                /* in */
	__u32 index;                /* out (ALLOC), in (FREE) */
	__u64 pa;                   /* out: its guest-physical address */
};

#define SK_IOC_MAGIC  's'
#define SK_IOC_ENTER  _IOWR(SK_IOC_MAGIC, 1, struct sk_enter)
#define SK_IOC_QUERY  _IOWR(SK_IOC_MAGIC, 2, struct sk_query)
#define SK_IOC_ALLOC_PROTECTED _IOWR(SK_IOC_MAGIC, 3, struct sk_protect)
#define SK_IOC_FREE_PROTECTED  _IOW(SK_IOC_MAGIC, 4, struct sk_protect)

/* Hypercalls (VMMCALL under SVM, VMCALL under VMX; RAX = number, RBX/RCX/RDX = arguments, RAX = result). Guest kernel only:
 * from user mode (CPL 3) the instruction raises #UD and is recorded as SK_EV_HYPERCALL with SK_ACT_DENY. */
#define SK_HC_PING            0x5301   /* returns SK_MAGIC; the CPU's container is derived from CR3 again */
#define SK_HC_DEVIRT          0x5302   /* this CPU leaves the root-mode handler (unload) */
#define SK_HC_NEW_CONTAINER   0x5303   /* rbx = policy, rcx = owner tgid: returns id or -1 */
#define SK_HC_ADD_PGD         0x5304   /* rbx = container, rcx = pgd pa: 0 or -1 */
#define SK_HC_DEL_PGD         0x5305   /* rbx = pgd pa */
#define SK_HC_FREE_CONTAINER  0x5306   /* rbx = container */
#define SK_HC_QUERY           0x5307   /* rbx = container, rcx = word index in struct sk_counters: returns it
                                          (the handler writes nowhere on the caller's behalf) */
#define SK_HC_RELEASE         0x5308   /* rbx = container: its last process exited */
#define SK_HC_PROTECT         0x5309   /* rbx = page pa, rcx = flags: only in the caller's container */
#define SK_HC_UNPROTECT       0x530a   /* rbx = page pa */
/* Test hooks for the model's differential test (module parameter probe=1 only; own container only):
 * read a nested entry on the path of a guest-physical address, or replace it until the next nested
 * fault, which is recorded (SK_ACT_PROBE, extra = the replaced entry's address) and undone. */
#define SK_HC_PROBE_GET       0x530b   /* rbx = gpa, rcx = level: returns the entry (splits to 4 KiB first) */
#define SK_HC_PROBE_SET       0x530c   /* rbx = gpa, rcx = level, rdx = new entry */
#define SK_HC_PROBE_CLEAR     0x530d   /* undo a change no fault consumed: returns 1 if it was still armed */
#define SK_HC_WHOAMI          0x530e   /* returns the container this CPU runs (from its CR3, the handler's view) */
#define SK_HC_MODTEXT_ADD     0x530f   /* rbx = page pa, rcx = SK_PERM_*: a module's text/rodata page, kept
                                          read-only in every non-root container (any container may add) */
#define SK_HC_MODTEXT_DEL     0x5310   /* rbx = page pa: the module is going; the page is ordinary again
                                          (root container only) */
#define SK_HC_BEGIN_UNLOAD    0x5311   /* root container only, no live container: DEVIRT allowed everywhere */
#define SK_HC_CONTAINER_OF    0x5312   /* rbx = pgd pa: container id (0: none) | its active state << 32 */
#define SK_HC_REPORT          0x5313   /* rbx = SK_REPORT_*: a guest-side hook refused something: an attack event */
#define SK_REPORT_PTRACE      1        /* attach to (control, write) a process of another container or root */
#define SK_REPORT_TTY         2        /* TIOCSTI / TIOCLINUX: typing into a terminal another process reads */

#endif
