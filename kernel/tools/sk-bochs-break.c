/*
 * sk-bochs-break: stop a Bochs-emulated machine where the debugger can dump it.
 *
 * 1. `xchg %bx,%bx` is Bochs's magic breakpoint (bochsrc `magic_break: enabled=1`): the Bochs
 *    debugger stops right after it. Elsewhere (QEMU, hardware) it is a no-op.
 * 2. `cpuid`: under the split-kernel module on Intel VMX, CPUID exits unconditionally, so with
 *    the debugger's `vmexitbp` on, Bochs stops again in VMX root mode in the module's handler.
 *    Natively it just returns the vendor leaf.
 * Prints a marker before each step so the host side can follow (splitdbg/lab_bochs.py).
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	unsigned int a = 0, b, c = 0, d;

	printf("SPLITDBG: bochs-break magic\n");
	fflush(stdout);
	__asm__ volatile("xchg %%bx, %%bx" ::: "memory");
	printf("SPLITDBG: bochs-break cpuid\n");
	fflush(stdout);
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d) :: "memory");
	printf("SPLITDBG: bochs-break done vendor=%.4s%.4s%.4s\n", (char *)&b, (char *)&d, (char *)&c);
	return 0;
}
