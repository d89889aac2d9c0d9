// SPDX-License-Identifier: GPL-2.0
/*
 * sktest: the split kernel's attack and probe driver, for scenarios only.
 * Write a command to /proc/sktest, read the result back:
 *   write-text | write-rodata   write one byte of kernel text (sysrq_handle_crash+1) or rodata
 *                               (linux_banner[0]) through a fresh writable alias of its frame
 *   peek-text | peek-rodata     the byte as this context sees it (through its container)
 *   cr4-smep                    clear CR4.SMEP with a raw MOV to CR4, report what stuck, restore
 *   read-phys PA                read 8 bytes of physical memory through the direct map
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kprobes.h>
#include <linux/proc_fs.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>
#include <linux/io.h>
#include <asm/special_insns.h>

MODULE_LICENSE("GPL");

static char result[160];
static unsigned long text_addr, rodata_addr;

static unsigned long lookup(const char *name)
{
	static unsigned long (*kln)(const char *);
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };

	if (!kln) {
		if (register_kprobe(&kp))
			return 0;
		kln = (void *)kp.addr;
		unregister_kprobe(&kp);
	}
	return kln(name);
}

static int write_alias(unsigned long addr, u8 *before, u8 *after)
{
	struct page *pg = pfn_to_page(__pa_symbol(addr) >> PAGE_SHIFT);
	u8 *alias = vmap(&pg, 1, VM_MAP, PAGE_KERNEL);   /* a writable guest mapping of the frame */

	if (!alias)
		return -ENOMEM;
	*before = READ_ONCE(alias[offset_in_page(addr)]);
	WRITE_ONCE(alias[offset_in_page(addr)], (u8)~*before);   /* the write the container must catch */
	*after = READ_ONCE(alias[offset_in_page(addr)]);
	vunmap(alias);
	return 0;
}

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
	text_addr = lookup("sysrq_handle_crash") + 1;
	rodata_addr = lookup("linux_banner");
	if (text_addr == 1 || !rodata_addr)
		return -ENOENT;
	entry = proc_create("sktest", 0666, NULL, &sk_ops);
	return entry ? 0 : -ENOMEM;
}

static void __exit sktest_exit(void)
{
	proc_remove(entry);
}

module_init(sktest_init);
module_exit(sktest_exit);
