/* SPDX-License-Identifier: GPL-2.0 */
/* splitkernel internals shared by the module's files. See docs/module.md for the design. */
#ifndef SK_H
#define SK_H

#include <linux/types.h>
#include <asm/svm.h>
#include "../include/splitkernel.h"

#define SK_POOL_ORDER   10                      /* 4 MiB, 4 MiB-aligned: two whole 2 MiB pages */
#define SK_POOL_SIZE    (PAGE_SIZE << SK_POOL_ORDER)
#define SK_POOL_PAGES   (1u << SK_POOL_ORDER)
#define SK_HOST_STACK   (4 * PAGE_SIZE)

/* Guest GPRs as sk_vmrun.S pushes them after #VMEXIT (RAX and RSP live in the VMCB). */
struct sk_gprs {
	u64 r15, r14, r13, r12, r11, r10, r9, r8, rdi, rsi, rbp, rdx, rcx, rbx, rax_unused;
};

/* One per CPU, in the pool. The first four fields are used by sk_vmrun.S: keep them first. */
struct sk_cpu {
	u64 host_rsp;        /* 0: top of the host stack (points at the slot holding this pointer) */
	u64 guest_rsp;       /* 8: captured by sk_launch; on devirtualisation, the stack to return on */
	u64 guest_rip;       /* 16: where the guest resumes after sk_launch */
	u64 vmcb_pa;         /* 24 */
	struct vmcb *vmcb;
	void *hsave;
	u8 *stack;
	struct sk_ring *ring;
	u32 cpu;
	u32 container;       /* active container id */
	u32 launched;        /* 1 once the first VMRUN entered the guest */
	int launch_error;    /* exit code of a failed first VMRUN */
	u64 flush_gen;       /* container table generation last flushed on this CPU */
	u64 *probe_entry;    /* nested entry replaced by SK_HC_PROBE_SET, restored at the next NPF */
	u64 probe_saved;
	u64 percpu;          /* this CPU's per-cpu offset in the guest kernel (current_task lives there) */
};

/* Pool layout, fixed at load. */
struct sk_state {
	void *pool;                     /* direct-map address of the 4 MiB pool */
	u64 pool_pa;
	struct sk_cpu *cpus[SK_MAX_CPUS];
	struct sk_container *containers;
	void *msrpm, *iopm;
	u64 root_ncr3;                  /* root container's top table */
	u64 tmpl_ncr3;                  /* template of non-root containers */
	unsigned long *page_used;       /* bitmap over pool pages, host-side allocator */
	u64 text_pa, text_end_pa, rodata_pa, rodata_end_pa;
	u64 modtext[256];               /* physical pages of module text at load time */
	u32 nmodtext;
	u64 desc_page_pa;
	u64 gen;                        /* bumped when any container table changes */
	u64 host_cr3;
	int nlevels;                    /* nested paging levels: the host's (4, or 5 with LA57) */                   /* init_top_pgt: the host runs on the kernel's own tables */
	int ncpus;
};

extern struct sk_state sk;
extern bool sk_probe;   /* module parameter: enable the differential-test hypercalls */
/* The descriptor fills a page of its own: non-root containers map that page read-only, and
 * nothing else the guest writes (such as THIS_MODULE's refcount) may share it. */
union sk_desc_page {
	struct sk_descriptor d;
	u8 page[PAGE_SIZE];
};
extern union sk_desc_page sk_desc_page;
#define sk_desc (sk_desc_page.d)

/* sk_vmrun.S */
int sk_launch(struct sk_cpu *c);

/* sk_npt.c: pool, nested tables, containers (host side after launch) */
int sk_pool_init(void);
void sk_pool_free(void);
void *sk_page_alloc(void);                 /* zeroed pool page or NULL; host or pre-launch */
void sk_page_free(void *p);
int sk_build_tables(void);                 /* root and template, before launch */
int sk_container_new(u32 policy, u32 owner, const char *comm);
int sk_container_free(u32 id);
void sk_container_reap(void);
int sk_protect(u32 owner, u64 pa, int visible_root);
int sk_unprotect(u64 pa);
u64 *sk_entry_ptr(u64 ncr3, u64 gpa, int level);
int sk_container_add_pgd(u32 id, u64 pgd);
void sk_container_del_pgd(u64 pgd);
u32 sk_container_of_pgd(u64 pgd);
u32 sk_region_of(u64 gpa, u32 container);
int sk_map_4k(u64 ncr3, u64 gpa, u64 hpa, u64 flags);   /* split as needed, map one 4 KiB page */
void sk_lock(void);
void sk_unlock(void);

/* sk_svm.c */
int sk_svm_supported(const char **why);
int sk_svm_virtualize_all(void);
void sk_svm_devirtualize_all(void);
u64 sk_hypercall(u64 nr, u64 a1, u64 a2, u64 a3);

static inline u64 sk_pa(const void *p) { return __pa(p); }

#endif
