/* SPDX-License-Identifier: GPL-2.0 */
/* splitkernel internals shared by the module's files. See docs/module.md for the design. */
#ifndef SK_H
#define SK_H

#include <linux/types.h>
#include <linux/bitops.h>
#include "../include/splitkernel.h"

#define SK_POOL_ORDER   10                      /* 4 MiB, 4 MiB-aligned: two whole 2 MiB pages */
#define SK_POOL_SIZE    (PAGE_SIZE << SK_POOL_ORDER)
#define SK_POOL_PAGES   (1u << SK_POOL_ORDER)
#define SK_HOST_STACK   (4 * PAGE_SIZE)

/* Guest GPRs as sk_vmrun.S pushes them after a VM exit. RSP lives in the VMCB/VMCS; so does RAX
 * under SVM (the pushed RAX is then the host's, and only used to hand RAX back on devirtualisation). */
struct sk_gprs {
	u64 r15, r14, r13, r12, r11, r10, r9, r8, rdi, rsi, rbp, rdx, rcx, rbx, rax;
};

/* The exit being handled, as the vendor backend read it: recorded as-is in events (sk_exit.c). */
struct sk_exit_info {
	u64 code;            /* SVM exit code / VMX exit reason (full, bit 31 = VM-entry failure) */
	u64 info1;           /* SVM EXITINFO1 / VMX exit qualification */
	u64 info2;           /* SVM EXITINFO2 / VMX guest-physical address */
	u64 gla;             /* VMX guest-linear address when the exit qualification says it is valid */
	u64 rip, cr3;        /* guest RIP and CR3 at the exit */
	u64 slat_root;       /* nCR3 / EPTP in force */
	u16 cpl;
	u64 intinfo;         /* EXITINTINFO / IDT-vectoring information (31:0), its error code (63:32) */
	struct sk_walk walk; /* a violation's second-level walk at the exit (sk_violation) */
};

/* One per CPU, in the pool. The first four fields are used by sk_vmrun.S: keep them first. */
struct sk_cpu {
	u64 host_rsp;        /* 0: top of the host stack (points at the slot holding this pointer) */
	u64 guest_rsp;       /* 8: captured by sk_launch; on devirtualisation, the stack to return on */
	u64 guest_rip;       /* 16: where the guest resumes after sk_launch */
	u64 vmcb_pa;         /* 24: VMCB (SVM) or VMCS region (VMX) */
	void *vmcb;          /* struct vmcb * (SVM) or the VMCS region (VMX) */
	void *hsave;         /* SVM host save area, or the VMXON region */
	u8 *stack;
	struct sk_ring *ring;
	u32 cpu;
	u32 container;       /* active container id */
	u32 launched;        /* 1 once the first VMRUN entered the guest */
	int launch_error;    /* exit code of a failed first VMRUN */
	u64 flush_gen;       /* container table generation last flushed on this CPU */
	u64 percpu;          /* this CPU's per-cpu offset in the guest kernel (current_task lives there) */
	struct sk_exit_info ex;   /* the exit being handled */
	int flush;           /* drop this CPU's second-level translations before the next entry */
	struct sk_ring *sec_ring; /* the security ring: violations, blocked CR4 writes, attacks */
};

/*
 * The handler's own state. It lives on a page of its own in the module's data, and that page is
 * read-only in every non-root container (region sk-state): nothing a contained process can write,
 * even with a kernel write primitive, steers the handler (its pool, its lock, its backend, the
 * armed probe, the regions it protects). Only the handler and root-container code write it.
 */
struct sk_state {
	void *pool;                     /* direct-map address of the 4 MiB pool */
	u64 pool_pa;
	struct sk_cpu *cpus[SK_MAX_CPUS];
	struct sk_container *containers;
	void *msrpm, *iopm;            /* SVM MSR/IO permission maps; VMX: msrpm is the MSR bitmap */
	const struct sk_backend *be;    /* chosen at load from CPUID (its ops live in module rodata) */
	u32 vendor;                     /* SK_VENDOR_*: chosen at load from CPUID */
	u32 ring_entries;               /* per CPU: SK_RING_ENTRIES, halved above 4 CPUs */
	u32 sec_ring_entries;           /* per CPU: SK_SEC_RING_ENTRIES, halved above 4 CPUs */
	u32 lock_word;                  /* sk_lock(): host handlers only */
	u64 slat_caps;                  /* IA32_VMX_EPT_VPID_CAP, or CPUID 8000_000Ah EDX (the descriptor's) */
	u64 root_ncr3;                  /* root container's top table */
	u64 tmpl_ncr3;                  /* template of non-root containers */
	/* Bitmap over pool pages (the host-side allocator): here, read-only in containers. A kmalloc'd
	 * bitmap was writable there: clearing a table page's bit had it handed out again, as a
	 * protected page's split table, found by review. */
	unsigned long page_used[BITS_TO_LONGS(SK_POOL_PAGES)];
	u64 text_pa, text_end_pa, rodata_pa, rodata_end_pa;
	u64 desc_page_pa, state_page_pa;
	u64 gen;                        /* bumped when any container table changes */
	u64 host_cr3;                   /* the handler's page tables: SVM, a copy in the pool (sk_build_host_tables);
					 * VMX, the kernel's own (kernel_cr3): see docs/module.md */
	u64 kernel_cr3;                 /* the kernel's init_top_pgt */
	u32 host_table_pages;
	u64 cr4_allowed;                /* CR4 bits the guest may set (others are reserved: #GP) */
	u64 efer_allowed;               /* EFER bits the guest may set (those set at load) */
	int nlevels;                    /* second-level paging levels: the host's (4, or 5 with LA57) */
	int ncpus;
	bool probe;                     /* module parameter probe=1, copied here at load */
	u32 unloading;                  /* SK_HC_BEGIN_UNLOAD done: DEVIRT from any container */
	/* The armed probe (SK_HC_PROBE_SET, module parameter probe=1): one at a time, machine-wide,
	 * since the changed entry is in a container that other CPUs may be running too. */
	u64 *probe_entry;               /* nested entry replaced, restored at the next violation */
	u64 probe_saved;
	u32 probe_cpu;                  /* the CPU that armed it */
	u32 nmodtext;
	u64 modtext[SK_MAX_MODTEXT];    /* module text/rodata pages (pa | SK_PERM_* in bits 2:0) */
};

union sk_state_page {
	struct sk_state s;
	u8 page[PAGE_SIZE];
};
extern union sk_state_page sk_state_page;
#define sk (sk_state_page.s)
/* The descriptor fills a page of its own: non-root containers map that page read-only, and
 * nothing else the guest writes (such as THIS_MODULE's refcount) may share it. */
union sk_desc_page {
	struct sk_descriptor d;
	u8 page[PAGE_SIZE];
};
extern union sk_desc_page sk_desc_page;
#define sk_desc (sk_desc_page.d)

/*
 * A vendor backend (sk_svm.c, sk_vmx.c). Everything else (pool, tables, containers, policies,
 * hypercalls, rings) is shared; the backend decodes its exits into c->ex and calls sk_exit.c.
 */
struct sk_backend {
	const char *name;                        /* "SVM, nested paging" */
	u32 vendor;                              /* SK_VENDOR_* */
	int (*supported)(const char **why);      /* CPU and firmware checks, before anything is allocated */
	int (*setup)(void);                      /* vendor pages in the pool (MSR maps), before launch */
	int (*virtualize_all)(void);
	void (*devirtualize_all)(void);
	/* root-mode hooks used by sk_exit.c */
	void (*set_slat_root)(struct sk_cpu *c, u64 top_pa);   /* nCR3 / EPTP of the next entry */
	void (*inject)(struct sk_cpu *c, int vector);          /* #GP (error code 0) or #UD */
};
extern const struct sk_backend sk_svm_backend, sk_vmx_backend;
#define sk_be (sk.be)

/* sk_vmrun.S */
int sk_launch(struct sk_cpu *c);
int sk_vmx_launch(struct sk_cpu *c);

/* Abstract permissions of a second-level mapping; sk_slat.c encodes them as NPT or EPT entries. */
#define SK_PERM_R   1
#define SK_PERM_W   2
#define SK_PERM_X   4
#define SK_PERM_RWX 7

/* sk_slat.c: pool, second-level tables (NPT or EPT), containers (host side after launch) */
int sk_pool_init(void);
void sk_pool_free(void);
void *sk_page_alloc(void);                 /* zeroed pool page or NULL; host or pre-launch */
void sk_page_free(void *p);
int sk_build_tables(void);                 /* root and template, before launch */
int sk_build_host_tables(u64 kernel_top);  /* the handler's own page tables, before launch */
bool sk_host_mapped(unsigned long va, unsigned long len);   /* mapped in the handler's tables? */
int sk_container_new(u32 policy, u32 owner, const char *comm);
int sk_container_free(u32 id);
void sk_container_reap(void);
int sk_protect(u32 owner, u64 pa, int visible_root);
int sk_unprotect(u64 pa);
int sk_modtext_add(u64 pa, u32 perm);
int sk_modtext_del(u64 pa);
u64 *sk_entry_ptr(u64 ncr3, u64 gpa, int level);
void sk_slat_walk(u64 top_pa, u64 gpa, struct sk_walk *w);
int sk_container_add_pgd(u32 id, u64 pgd);
void sk_container_del_pgd(u64 pgd);
u32 sk_container_of_pgd(u64 pgd);
u32 sk_region_of(u64 gpa, u32 container);
int sk_map_4k(u64 ncr3, u64 gpa, u64 hpa, u32 perm);    /* split as needed, map one 4 KiB page */
u64 sk_eptp(u64 top_pa);                                 /* EPTP for tables at top_pa: WB, page-walk length */
void sk_lock(void);
void sk_unlock(void);

/* sk_exit.c: the vendor-neutral part of the root-mode handler */
void sk_record(struct sk_cpu *c, u32 kind, u32 region, u32 action, u64 extra);
struct sk_counters *sk_counters_of(struct sk_cpu *c);
void sk_exit_begin(struct sk_cpu *c);
void sk_exit_end(struct sk_cpu *c);
void sk_switch_container(struct sk_cpu *c, u32 id);
void sk_cr3_written(struct sk_cpu *c, u64 cr3);
u64 sk_cr4_filter(struct sk_cpu *c, u64 old, u64 val);
bool sk_cr4_reserved(u64 val);
bool sk_efer_reserved(u64 val);
void sk_violation(struct sk_cpu *c, u64 gpa);
void sk_attack(struct sk_cpu *c, u32 class, u64 what);
void sk_fatal(struct sk_cpu *c);   /* never returns (not marked: objtool cannot see it across files) */
#define SK_HC_DONE  0   /* result in *res; step over the instruction */
#define SK_HC_LEAVE 1   /* SK_HC_DEVIRT: leave root mode on this CPU */
#define SK_HC_FAULT 2   /* #UD injected (user mode); do not step */
int sk_hypercall_exit(struct sk_cpu *c, u64 nr, u64 a1, u64 a2, u64 a3, u64 *res);
void sk_note_guest_regs(struct sk_cpu *c, u64 cr0, u64 cr3, u64 cr4, u64 efer);

/* guest side (sk_main.c): VMMCALL or VMCALL, as the backend needs */
u64 sk_hypercall(u64 nr, u64 a1, u64 a2, u64 a3);

static inline u64 sk_pa(const void *p) { return __pa(p); }

#endif
