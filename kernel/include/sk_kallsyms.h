/* SPDX-License-Identifier: GPL-2.0 */
/* kallsyms_lookup_name for modules: not exported since 5.7, so a kprobe resolves it once. */
#ifndef SK_KALLSYMS_H
#define SK_KALLSYMS_H
#include <linux/kprobes.h>

static unsigned long sk_lookup_name(const char *name)
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
#endif
