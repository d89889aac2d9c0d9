/*
 * sk-bochs-break: stop a Bochs-emulated machine where the debugger can dump it.
 *
 * 1. `xchg %bx,%bx` is Bochs's magic breakpoint (bochsrc `magic_break: enabled=1`): the Bochs
 *    debugger stops right after it. Elsewhere (QEMU, hardware) it is a no-op.
 * 2. `cpuid`: under the split-kernel module on Intel VMX, CPUID exits unconditionally, so with
 *    the debugger's `vmexitbp` on, Bochs stops again in VMX root mode in the module's handler.
 *    Natively it just returns the vendor leaf.
 * The two instructions are back to back. Prints a marker before and after, so the host side can
 * follow (splitdbg/lab_bochs.py).
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	unsigned int a = 0, b, c = 0, d;

	printf("SPLITDBG: bochs-break magic, then cpuid\n");
	fflush(stdout);
	/* Back to back: the debugger steps this CPU alone from the magic breakpoint into the
	 * CPUID exit, so the dump shows this process (and its container) as it was. */
	__asm__ volatile("xchg %%bx, %%bx\n\tcpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d) :: "memory");
	printf("SPLITDBG: bochs-break done vendor=%.4s%.4s%.4s\n", (char *)&b, (char *)&d, (char *)&c);
	return 0;
}
