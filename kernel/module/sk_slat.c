// SPDX-License-Identifier: GPL-2.0
/*
 * The module's private pool, second-level page tables (AMD NPT or Intel EPT) and containers.
 *
 * Everything here lives in one 4 MiB, 4 MiB-aligned block of physically contiguous memory (the
 * pool), which is absent from every nested table the guest runs under: two 2 MiB nested entries
 * hide it whole. Before launch the guest side builds the root and template tables here; after
 * launch only the root-mode handler touches the pool, under sk_lock() (a plain test-and-set
 * lock: host handlers never sleep or wait for the guest, so it cannot deadlock).
 */
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/gfp.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/bitmap.h>
#include <asm/io.h>
#include <asm/special_insns.h>
#include "sk.h"

/* NPT entries are ordinary x86 paging entries (AMD APM 15.25.5), used with U=1 throughout. */
#define NP_P   (1ULL << 0)
#define NP_RW  (1ULL << 1)
#define NP_US  (1ULL << 2)
#define NP_NX  (1ULL << 63)
/* EPT entries (Intel SDM 29.3.2): read/write/execute in bits 2:0, memory type in bits 5:3 of a leaf. */
#define EPT_R  (1ULL << 0)
#define EPT_W  (1ULL << 1)
#define EPT_X  (1ULL << 2)
#define EPT_MT_WB (6ULL << 3)   /* with "ignore PAT" clear, the guest's PAT still applies (MMIO stays UC) */
#define SL_PS  (1ULL << 7)      /* large page, in both formats */
#define NP_ADDR 0x000ffffffffff000ULL

/* Encoding of the two formats: a leaf with SK_PERM_* permissions, a non-leaf entry, "present". */
static inline u64 leaf(u32 perm)
{
	if (!perm)
		return 0;
	if (sk.vendor == SK_VENDOR_VMX)
		return EPT_MT_WB | ((perm & SK_PERM_R) ? EPT_R : 0) | ((perm & SK_PERM_W) ? EPT_W : 0) |
		       ((perm & SK_PERM_X) ? EPT_X : 0);
	return NP_P | NP_US | ((perm & SK_PERM_W) ? NP_RW : 0) | ((perm & SK_PERM_X) ? 0 : NP_NX);
}

static inline u64 dir(u64 pa)
{
	/* permissions are decided at the leaves */
	return pa | (sk.vendor == SK_VENDOR_VMX ? EPT_R | EPT_W | EPT_X : NP_P | NP_RW | NP_US);
}

static inline bool present(u64 e)
{
	return sk.vendor == SK_VENDOR_VMX ? (e & (EPT_R | EPT_W | EPT_X)) : (e & NP_P);
}

u64 sk_eptp(u64 top_pa)
{
	return top_pa | 6 /* WB */ | ((u64)(sk.nlevels - 1) << 3);   /* page-walk length - 1 */
}

/* The lock word is in the handler's state page: read-only in containers, so no contained writer
 * can hold it and hang every CPU in the handler with GIF=0. */
void sk_lock(void)
{
	while (__atomic_exchange_n(&sk.lock_word, 1, __ATOMIC_ACQUIRE))
		cpu_relax();
}

void sk_unlock(void)
{
	__atomic_store_n(&sk.lock_word, 0, __ATOMIC_RELEASE);
}

static inline u64 *tbl(u64 pa) { return (u64 *)phys_to_virt(pa); }

int sk_pool_init(void)
{
	struct page *pg = alloc_pages(GFP_KERNEL | __GFP_ZERO, SK_POOL_ORDER);

	if (!pg)
		return -ENOMEM;
	sk.pool = page_address(pg);
	sk.pool_pa = page_to_phys(pg);
	bitmap_zero(sk.page_used, SK_POOL_PAGES);
	return 0;
}

void sk_pool_free(void)
{
	if (sk.pool)
		__free_pages(virt_to_page(sk.pool), SK_POOL_ORDER);
	sk.pool = NULL;
}

/* Callers hold sk_lock() after launch. */
static void *page_alloc_locked(void)
{
	unsigned long i = find_first_zero_bit(sk.page_used, SK_POOL_PAGES);
	void *p;

	if (i >= SK_POOL_PAGES)
		return NULL;
	__set_bit(i, sk.page_used);
	p = (u8 *)sk.pool + i * PAGE_SIZE;
	memset(p, 0, PAGE_SIZE);
	return p;
}

void *sk_page_alloc(void)
{
	void *p;

	sk_lock();
	p = page_alloc_locked();
	sk_unlock();
	return p;
}

static void page_free_locked(void *p)
{
	__clear_bit(((u8 *)p - (u8 *)sk.pool) / PAGE_SIZE, sk.page_used);
}

void sk_page_free(void *p)
{
	sk_lock();
	page_free_locked(p);
	sk_unlock();
}

/* Split a large leaf (or fill a missing table) one level down, keeping the mapping. */
static int split(u64 *entry, int level)
{
	u64 e = *entry, *t;
	u64 size = level == 3 ? (1ULL << 21) : PAGE_SIZE;
	int i;

	t = page_alloc_locked();
	if (!t)
		return -ENOMEM;
	if (present(e)) {
		u64 base = e & NP_ADDR & ~((size << 9) - 1);
		u64 flags = e & ~NP_ADDR & ~SL_PS;

		for (i = 0; i < 512; i++)
			t[i] = (base + i * size) | flags | (level == 3 ? SL_PS : 0);
	}
	*entry = dir(sk_pa(t));
	return 0;
}

/* Map one 4 KiB guest-physical page to hpa with `perm` in the tables under ncr3 (lock held). */
static int map_4k_locked(u64 ncr3, u64 gpa, u64 hpa, u32 perm)
{
	u64 *t = tbl(ncr3), *e;
	int level;

	for (level = sk.nlevels; level > 1; level--) {
		e = &t[(gpa >> (12 + 9 * (level - 1))) & 511];
		if (!present(*e) || (level <= 3 && (*e & SL_PS))) {
			if (split(e, level))
				return -ENOMEM;
		}
		t = tbl(*e & NP_ADDR);
	}
	t[(gpa >> 12) & 511] = perm ? (hpa & NP_ADDR) | leaf(perm) : 0;
	return 0;
}

int sk_map_4k(u64 ncr3, u64 gpa, u64 hpa, u32 perm)
{
	int r;

	sk_lock();
	r = map_4k_locked(ncr3, gpa, hpa, perm);
	sk.gen++;
	sk_unlock();
	return r;
}

static void hide_pool(u64 ncr3)
{
	/* The pool is two whole 2 MiB pages: make their nested PDEs not present. */
	u64 *pml4 = tbl(ncr3), *pdpt, *pd;
	u64 gpa;

	if (sk.nlevels == 5)
		pml4 = tbl(pml4[0] & NP_ADDR);
	for (gpa = sk.pool_pa; gpa < sk.pool_pa + SK_POOL_SIZE; gpa += 1ULL << 21) {
		pdpt = tbl(pml4[(gpa >> 39) & 511] & NP_ADDR);
		if (pdpt[(gpa >> 30) & 511] & SL_PS)
			split(&pdpt[(gpa >> 30) & 511], 3);
		pd = tbl(pdpt[(gpa >> 30) & 511] & NP_ADDR);
		pd[(gpa >> 21) & 511] = 0;
	}
}

/*
 * Identity map of the first 512 GiB with 1 GiB pages (RAM and MMIO), pool hidden. Nested tables
 * have as many levels as the host's own paging: a PML5 on top when the kernel runs with LA57.
 */
static u64 build_identity(void)
{
	u64 *pml4 = page_alloc_locked(), *pdpt = page_alloc_locked(), *top = pml4;
	int i;

	if (!pml4 || !pdpt)
		return 0;
	for (i = 0; i < 512; i++)
		pdpt[i] = ((u64)i << 30) | leaf(SK_PERM_RWX) | SL_PS;
	pml4[0] = dir(sk_pa(pdpt));
	if (sk.nlevels == 5) {
		top = page_alloc_locked();
		if (!top)
			return 0;
		top[0] = dir(sk_pa(pml4));
	}
	hide_pool(sk_pa(top));
	return sk_pa(top);
}

static int protect_range(u64 ncr3, u64 start, u64 end, u32 perm)
{
	u64 pa;

	for (pa = start & PAGE_MASK; pa < end; pa += PAGE_SIZE)
		if (map_4k_locked(ncr3, pa, pa, perm))
			return -ENOMEM;
	return 0;
}

/*
 * The page tables the handler runs on: a copy, in the pool, of the kernel half of the kernel's own
 * init_top_pgt as it is at load (every table page below it copied too, down to the leaves). The
 * kernel's tables are ordinary kernel data, writable in every container: a write there would
 * have redirected the handler's view of its own code, state and pool. The copy is absent from
 * every container like the rest of the pool, and what the handler touches (its module core, the
 * pool and RAM through the direct map, kernel text, the CPU entry area with the IDT, GDT and IST
 * stacks) was all mapped at load. Returns the copy's top, or 0 when the pool is too small.
 */
static u64 copy_host_table(u64 src, int level, int *pages)
{
	u64 *s = tbl(src), *d = page_alloc_locked();
	int i;

	if (!d)
		return 0;
	++*pages;
	for (i = 0; i < 512; i++) {
		u64 e = READ_ONCE(s[i]);

		if (level > 1 && (e & _PAGE_PRESENT) && !(level <= 3 && (e & _PAGE_PSE))) {
			u64 child = copy_host_table(e & PTE_PFN_MASK, level - 1, pages);

			if (!child)
				return 0;
			e = (e & ~PTE_PFN_MASK) | child;
		}
		d[i] = e;
	}
	return sk_pa(d);
}

/*
 * Is [va, va + len) mapped in the handler's own tables (a walk of sk.host_cr3)? For pointers the
 * handler reads that guest data gave it (a task, a comm): virt_addr_valid() says RAM, not mapped
 * (gaps in the kernel image, freed init memory, reserved ranges), and a fault in root mode is a
 * crash. host_cr3 is the copy (SVM) or init_top_pgt (VMX).
 */
bool sk_host_mapped(unsigned long va, unsigned long len)
{
	int levels = (native_read_cr4() & X86_CR4_LA57) ? 5 : 4;
	unsigned long a;

	if (!len || va + len < va)
		return false;
	for (a = va & PAGE_MASK; a < va + len; a += PAGE_SIZE) {
		u64 table = sk.host_cr3, e = 0;
		int level;

		for (level = levels; level >= 1; level--) {
			e = READ_ONCE(tbl(table)[(a >> (12 + 9 * (level - 1))) & 511]);
			if (!(e & _PAGE_PRESENT))
				return false;
			if (level == 1 || (level <= 3 && (e & _PAGE_PSE)))
				break;
			table = e & PTE_PFN_MASK;
			if (table >= sk.pool_pa && table < sk.pool_pa + SK_POOL_SIZE)
				continue;           /* the copy's own tables */
			if (!pfn_valid(PHYS_PFN(table)))
				return false;
		}
	}
	return true;
}

int sk_build_host_tables(u64 kernel_top)
{
	int levels = (native_read_cr4() & X86_CR4_LA57) ? 5 : 4, i, pages = 1;
	u64 *s = tbl(kernel_top), *d;

	sk_lock();
	d = page_alloc_locked();
	for (i = 256; d && i < 512; i++) {     /* the kernel half: the user half stays empty */
		u64 e = READ_ONCE(s[i]);

		if (e & _PAGE_PRESENT) {
			u64 child = copy_host_table(e & PTE_PFN_MASK, levels - 1, &pages);

			if (!child) {
				d = NULL;
				break;
			}
			e = (e & ~PTE_PFN_MASK) | child;
		}
		d[i] = e;
	}
	sk_unlock();
	if (!d)
		return -ENOMEM;
	sk.host_cr3 = sk_pa(d);
	sk.host_table_pages = pages;
	return 0;
}

/* Before launch: the root container and the template every non-root container is cloned from. */
int sk_build_tables(void)
{
	u32 i;
	int r = 0;

	sk.nlevels = (native_read_cr4() & X86_CR4_LA57) ? 5 : 4;
	sk.root_ncr3 = build_identity();
	sk.tmpl_ncr3 = build_identity();
	if (!sk.root_ncr3 || !sk.tmpl_ncr3)
		return -ENOMEM;
	/* Non-root: kernel text, module text and rodata read-only; our descriptor read-only. */
	r |= protect_range(sk.tmpl_ncr3, sk.text_pa, sk.text_end_pa, SK_PERM_R | SK_PERM_X);
	/* Rodata stays executable at this level: the vDSO that user space runs lives in it, and the
	 * guest's own page tables already make kernel rodata non-executable. */
	r |= protect_range(sk.tmpl_ncr3, sk.rodata_pa, sk.rodata_end_pa, SK_PERM_R | SK_PERM_X);
	for (i = 0; i < sk.nmodtext; i++)
		r |= map_4k_locked(sk.tmpl_ncr3, sk.modtext[i] & PAGE_MASK, sk.modtext[i] & PAGE_MASK,
				   sk.modtext[i] & SK_PERM_RWX);
	r |= map_4k_locked(sk.tmpl_ncr3, sk.desc_page_pa, sk.desc_page_pa, SK_PERM_R);
	r |= map_4k_locked(sk.tmpl_ncr3, sk.state_page_pa, sk.state_page_pa, SK_PERM_R);
	return r ? -ENOMEM : 0;
}

static u64 clone_table(u64 src, int level)
{
	u64 *s = tbl(src), *d = page_alloc_locked();
	int i;

	if (!d)
		return 0;
	memcpy(d, s, PAGE_SIZE);
	if (level == 1)
		return sk_pa(d);
	for (i = 0; i < 512; i++) {
		if (present(s[i]) && !(level <= 3 && (s[i] & SL_PS))) {
			u64 child = clone_table(s[i] & NP_ADDR, level - 1);

			if (!child)
				return 0;   /* the pages taken so far are leaked until unload: the pool is freed whole */
			d[i] = child | (s[i] & ~NP_ADDR);
		}
	}
	return sk_pa(d);
}

static void free_table(u64 pa, int level)
{
	u64 *t = tbl(pa);
	int i;

	if (level > 1)
		for (i = 0; i < 512; i++)
			if (present(t[i]) && !(level <= 3 && (t[i] & SL_PS)))
				free_table(t[i] & NP_ADDR, level - 1);
	page_free_locked(t);
}

int sk_container_new(u32 policy, u32 owner, const char *comm)
{
	struct sk_container *ct;
	int id, r = -1;

	sk_lock();
	for (id = 1; id < SK_MAX_CONTAINERS; id++) {
		ct = &sk.containers[id];
		if (ct->active)
			continue;
		memset(ct, 0, sizeof(*ct));
		ct->ncr3 = clone_table(sk.tmpl_ncr3, sk.nlevels);
		if (!ct->ncr3)
			break;
		ct->id = id;
		ct->owner_pid = owner;
		ct->policy = policy;
		if (comm)
			memcpy(ct->owner_comm, comm, sizeof(ct->owner_comm) - 1);
		ct->active = 1;
		r = id;
		break;
	}
	sk_unlock();
	return r;
}

/* Free released containers that no address space and no CPU uses any more (host side). */
void sk_container_reap(void)
{
	u32 id, cpu;

	for (id = 1; id < SK_MAX_CONTAINERS; id++) {
		struct sk_container *ct = &sk.containers[id];

		if (ct->active != 2 || ct->npgds)
			continue;
		for (cpu = 0; cpu < SK_MAX_CPUS; cpu++)
			if (sk.cpus[cpu] && READ_ONCE(sk.cpus[cpu]->container) == id)
				break;
		if (cpu == SK_MAX_CPUS)
			sk_container_free(id);
	}
}

int sk_container_free(u32 id)
{
	struct sk_container *ct;
	u32 i;

	if (id == 0 || id >= SK_MAX_CONTAINERS)
		return -1;
	sk_lock();
	ct = &sk.containers[id];
	if (ct->active) {
		free_table(ct->ncr3, sk.nlevels);
		for (i = 0; i < ct->nisolated; i++)
			page_free_locked(phys_to_virt(ct->iso_copy[i]));
		ct->active = 0;
		ct->npgds = 0;
		sk.gen++;
	}
	sk_unlock();
	return 0;
}

int sk_container_add_pgd(u32 id, u64 pgd)
{
	struct sk_container *ct;
	int r = -1;
	u32 i, j;

	if (id == 0 || id >= SK_MAX_CONTAINERS)
		return -1;
	pgd &= NP_ADDR;
	sk_lock();
	ct = &sk.containers[id];
	if (ct->active == 1) {
		/* An address space belongs to one container. Never taken from a live one (two
		 * processes sharing an mm entering at once would leave a container no process can
		 * release); a released one's entry is stale, or its processes stay contained here. */
		for (j = 1; j < SK_MAX_CONTAINERS; j++)
			for (i = 0; i < sk.containers[j].npgds; i++)
				if (sk.containers[j].pgds[i] == pgd && j != id && sk.containers[j].active == 1)
					goto out;
		for (j = 1; j < SK_MAX_CONTAINERS; j++)
			for (i = 0; i < sk.containers[j].npgds; i++)
				if (sk.containers[j].pgds[i] == pgd)
					sk.containers[j].pgds[i] = sk.containers[j].pgds[--sk.containers[j].npgds];
		if (ct->npgds < SK_MAX_PGDS) {
			ct->pgds[ct->npgds++] = pgd;
			r = 0;
		}
	}
out:
	sk_unlock();
	return r;
}

void sk_container_del_pgd(u64 pgd)
{
	u32 i, j;

	pgd &= NP_ADDR;
	sk_lock();
	for (j = 1; j < SK_MAX_CONTAINERS; j++)
		for (i = 0; i < sk.containers[j].npgds; i++)
			if (sk.containers[j].pgds[i] == pgd)
				sk.containers[j].pgds[i] = sk.containers[j].pgds[--sk.containers[j].npgds];
	sk_unlock();
}

u32 sk_container_of_pgd(u64 pgd)
{
	u32 i, j, id = 0;

	pgd &= NP_ADDR;
	sk_lock();
	for (j = 1; j < SK_MAX_CONTAINERS && !id; j++)
		if (sk.containers[j].active)
			for (i = 0; i < sk.containers[j].npgds; i++)
				if (sk.containers[j].pgds[i] == pgd) {
					id = j;
					break;
				}
	sk_unlock();
	return id;
}

/*
 * The entries on gpa's path through the tables at top_pa, top level first, down to the one that
 * ends the walk. Every table of ours is in the pool: an address outside it (an entry the probe
 * made with reserved bits, say) ends the walk rather than being followed.
 */
void sk_slat_walk(u64 top_pa, u64 gpa, struct sk_walk *w)
{
	u64 *t, pa = top_pa & NP_ADDR, e;
	int l;

	memset(w, 0, sizeof(*w));
	for (l = sk.nlevels; l >= 1; l--) {
		if (pa < sk.pool_pa || pa >= sk.pool_pa + SK_POOL_SIZE)
			return;
		t = tbl(pa);
		e = READ_ONCE(t[(gpa >> (12 + 9 * (l - 1))) & 511]);
		w->entry[sk.nlevels - l] = e;
		if (l == 1 || !present(e) || (l <= 3 && (e & SL_PS)))
			return;
		pa = e & NP_ADDR;
	}
}

/* Address of the nested entry at `level` on gpa's path (splitting large pages above it), or NULL. */
u64 *sk_entry_ptr(u64 ncr3, u64 gpa, int level)
{
	u64 *t = tbl(ncr3), *e = NULL;
	int l;

	sk_lock();
	for (l = sk.nlevels; l >= level; l--) {
		e = &t[(gpa >> (12 + 9 * (l - 1))) & 511];
		if (l == level)
			break;
		if (!present(*e) || (l <= 3 && (*e & SL_PS) && split(e, l))) {
			e = NULL;
			break;
		}
		t = tbl(*e & NP_ADDR);
	}
	sk.gen++;
	sk_unlock();
	return e;
}

/* Make `pa` present only in container `owner` (and in root when visible_root). */
int sk_protect(u32 owner, u64 pa, int visible_root)
{
	struct sk_container *ct = &sk.containers[owner];
	int r = 0;
	u32 id;

	pa &= NP_ADDR;
	if (sk_region_of(pa, owner) != SK_REGION_NONE || pa >= (512ULL << 30) || !pfn_valid(PHYS_PFN(pa)))
		return -1;   /* only ordinary RAM (the handler zeroes it on UNPROTECT), not already special */
	sk_lock();
	if (ct->nprotected >= SK_MAX_PROTECTED) {
		sk_unlock();
		return -1;
	}
	for (id = 1; id < SK_MAX_CONTAINERS; id++)
		if (id != owner && sk.containers[id].active)
			r |= map_4k_locked(sk.containers[id].ncr3, pa, 0, 0);
	r |= map_4k_locked(sk.tmpl_ncr3, pa, 0, 0);
	if (!visible_root)
		r |= map_4k_locked(sk.root_ncr3, pa, 0, 0);
	if (visible_root)
		ct->protected_flags |= 1u << ct->nprotected;
	else
		ct->protected_flags &= ~(1u << ct->nprotected);
	ct->protected_pa[ct->nprotected++] = pa;
	sk.gen++;
	sk_unlock();
	return r ? -1 : 0;
}

/* Give a protected page back to everyone; returns the owner, or -1. */
int sk_unprotect(u64 pa)
{
	u32 id, i, owner = 0;

	pa &= NP_ADDR;
	sk_lock();
	for (id = 1; id < SK_MAX_CONTAINERS && !owner; id++)
		for (i = 0; i < sk.containers[id].nprotected; i++)
			if (sk.containers[id].protected_pa[i] == pa) {
				struct sk_container *ct = &sk.containers[id];
				u32 last = --ct->nprotected;

				ct->protected_pa[i] = ct->protected_pa[last];
				ct->protected_flags = (ct->protected_flags & ~(1u << i)) |
						      (((ct->protected_flags >> last) & 1) << i);
				ct->protected_flags &= ~(1u << last);
				owner = id;
				break;
			}
	if (owner) {
		/* Scrub it while no one else can see it yet: the owner's secret must not outlive it. */
		memset(phys_to_virt(pa), 0, PAGE_SIZE);
		for (id = 1; id < SK_MAX_CONTAINERS; id++)
			if (id != owner && sk.containers[id].active)
				map_4k_locked(sk.containers[id].ncr3, pa, pa, SK_PERM_RWX);
		map_4k_locked(sk.tmpl_ncr3, pa, pa, SK_PERM_RWX);
		map_4k_locked(sk.root_ncr3, pa, pa, SK_PERM_RWX);
		sk.gen++;
	}
	sk_unlock();
	return owner ? (int)owner : -1;
}

u32 sk_region_of(u64 gpa, u32 container)
{
	u32 i, id;

	for (id = 1; id < SK_MAX_CONTAINERS; id++)
		if (id != container && sk.containers[id].active)
			for (i = 0; i < sk.containers[id].nprotected; i++)
				if (sk.containers[id].protected_pa[i] == (gpa & NP_ADDR))
					return SK_REGION_PROTECTED;

	if (gpa >= sk.pool_pa && gpa < sk.pool_pa + SK_POOL_SIZE)
		return SK_REGION_SK_STATE;
	if ((gpa & PAGE_MASK) == sk.desc_page_pa || (gpa & PAGE_MASK) == sk.state_page_pa)
		return SK_REGION_SK_STATE;
	if (gpa >= sk.text_pa && gpa < sk.text_end_pa)
		return SK_REGION_TEXT;
	if (gpa >= sk.rodata_pa && gpa < sk.rodata_end_pa)
		return SK_REGION_RODATA;
	for (i = 0; i < READ_ONCE(sk.nmodtext); i++)
		if ((gpa & PAGE_MASK) == (sk.modtext[i] & PAGE_MASK))
			return SK_REGION_MODULE_TEXT;
	return SK_REGION_NONE;
}

/* Apply a mapping of page pa to the template and to every live non-root container. */
static int map_everywhere_locked(u64 pa, u32 perm)
{
	int r = 0;
	u32 id;

	for (id = 1; id < SK_MAX_CONTAINERS; id++)
		if (sk.containers[id].active)
			r |= map_4k_locked(sk.containers[id].ncr3, pa, pa, perm);
	r |= map_4k_locked(sk.tmpl_ncr3, pa, pa, perm);
	sk.gen++;
	return r;
}

static u32 modtext_perm_locked(u64 pa)
{
	u32 i;

	for (i = 0; i < sk.nmodtext; i++)
		if ((sk.modtext[i] & PAGE_MASK) == pa)
			return sk.modtext[i] & (SK_PERM_R | SK_PERM_X);
	return 0;
}

/*
 * A module loaded after splitkernel (from root or from inside a container): its text (RX) and
 * rodata (R) become read-only in every non-root container, as the kernel's own are. Returns -1
 * when the page cannot be protected (table full, not ordinary RAM): the module load then fails.
 */
int sk_modtext_add(u64 pa, u32 perm)
{
	int r = -1;

	pa &= NP_ADDR;
	perm &= SK_PERM_R | SK_PERM_X;
	/* Only ordinary RAM: not the pool, the handler's pages, kernel text/rodata, another
	 * container's protected page (mapping those readable everywhere would show them), nor MMIO. */
	if (!(perm & SK_PERM_R) || pa >= (512ULL << 30) || !pfn_valid(PHYS_PFN(pa)))
		return -1;
	sk_lock();
	if (sk_region_of(pa, 0) == SK_REGION_MODULE_TEXT) {
		/* Met twice at load (the notifier and protect_loaded_modules): once is enough, with
		 * the same permissions only. */
		r = modtext_perm_locked(pa) == perm ? 0 : -1;
		goto out;
	}
	if (sk_region_of(pa, 0) != SK_REGION_NONE)
		goto out;    /* already protected otherwise: not readable everywhere */
	if (sk.nmodtext >= SK_MAX_MODTEXT)
		goto out;
	sk.modtext[sk.nmodtext] = pa | perm;
	WRITE_ONCE(sk.nmodtext, sk.nmodtext + 1);
	if (map_everywhere_locked(pa, perm)) {
		/* Out of pool pages for the split tables: not protected, so say so (the load fails). */
		WRITE_ONCE(sk.nmodtext, sk.nmodtext - 1);
		map_everywhere_locked(pa, SK_PERM_RWX);
		goto out;
	}
	r = 0;
out:
	sk_unlock();
	return r;
}

/* The module is going: its pages return to the allocator and must be ordinary memory again. */
int sk_modtext_del(u64 pa)
{
	u32 i;
	int r = -1;

	pa &= NP_ADDR;
	sk_lock();
	for (i = 0; i < sk.nmodtext; i++)
		if ((sk.modtext[i] & PAGE_MASK) == pa) {
			sk.modtext[i] = sk.modtext[sk.nmodtext - 1];
			WRITE_ONCE(sk.nmodtext, sk.nmodtext - 1);
			map_everywhere_locked(pa, SK_PERM_RWX);
			r = 0;
			break;
		}
	sk_unlock();
	return r;
}
