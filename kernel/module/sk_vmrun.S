/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Entering and leaving the root-mode (R) handler. The running kernel becomes the guest in place:
 * sk_launch() (SVM) and sk_vmx_launch() (VMX) record their own return point and stack as the
 * guest's RIP/RSP, switch to the per-CPU host stack and enter the guest, which "returns" from
 * the launch function in guest mode. SVM loops on VMRUN; under VMX every exit lands at
 * sk_vmx_exit (the VMCS's host RIP) on the host stack. objtool is off for this file (Kbuild):
 * the stack switches are deliberate.
 */
#include <linux/linkage.h>

#define C_HOST_RSP  0
#define C_GUEST_RSP 8
#define C_GUEST_RIP 16
#define C_VMCB_PA   24

/* The guest GPRs as sk_vmrun.S pushes them after #VMEXIT (struct sk_gprs), back into registers. */
.macro PUSH_GPRS
	push %rax
	push %rbx
	push %rcx
	push %rdx
	push %rbp
	push %rsi
	push %rdi
	push %r8
	push %r9
	push %r10
	push %r11
	push %r12
	push %r13
	push %r14
	push %r15
.endm

.macro POP_GPRS
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %r11
	pop %r10
	pop %r9
	pop %r8
	pop %rdi
	pop %rsi
	pop %rbp
	pop %rdx
	pop %rcx
	pop %rbx
	pop %rax
.endm

	.text
/* int sk_launch(struct sk_cpu *c): returns 0 in guest mode, or an error if the first VMRUN failed. */
SYM_FUNC_START(sk_launch)
	push %rbp
	push %rbx
	push %r12
	push %r13
	push %r14
	push %r15
	mov %rsp, C_GUEST_RSP(%rdi)
	lea .Lguest_resumes(%rip), %rax
	mov %rax, C_GUEST_RIP(%rdi)
	mov C_HOST_RSP(%rdi), %rsp      /* the slot at the top holds c */
	call sk_svm_prepare_vmcb        /* rdi = c: VMCB guest state from the captured rsp/rip */
	clgi
.Lloop:
	mov (%rsp), %rax
	mov C_VMCB_PA(%rax), %rax
	vmrun %rax
	/* #VMEXIT: GIF=0; guest GPRs (but RAX, RSP) are in the registers. */
	PUSH_GPRS
	mov 15*8(%rsp), %rdi            /* c */
	mov %rsp, %rsi                  /* struct sk_gprs * */
	call sk_svm_handle_exit
	test %eax, %eax
	jnz .Lleave
	POP_GPRS
	jmp .Lloop

.Lleave:
	/*
	 * Back to native: sk_svm_handle_exit has turned SVM off, restored CR3, put the guest's RAX
	 * in the frame and built [RFLAGS][RIP] on the guest's stack at c->guest_rsp. eax = 1 after
	 * a devirtualisation hypercall; eax = 2 when the first VMRUN failed (return the error).
	 */
	mov 15*8(%rsp), %rdi
	mov C_GUEST_RSP(%rdi), %rcx
	mov %rcx, 15*8(%rsp)            /* the slot that held c now holds the stack to return on */
	POP_GPRS
	pop %rsp
	popfq
	ret

SYM_INNER_LABEL(sk_launch_failed, SYM_L_GLOBAL)
	mov $-5, %eax                   /* -EIO: the CPU could not enter the guest */
	jmp .Lpop_and_return
.Lguest_resumes:
	xor %eax, %eax
.Lpop_and_return:
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %rbx
	pop %rbp
	ret
SYM_FUNC_END(sk_launch)

/* int sk_vmx_launch(struct sk_cpu *c): returns 0 in non-root mode, or an error if VMLAUNCH failed.
 * Called after VMXON; sk_vmx_prepare_vmcs makes the VMCS current and fills it. */
SYM_FUNC_START(sk_vmx_launch)
	push %rbp
	push %rbx
	push %r12
	push %r13
	push %r14
	push %r15
	mov %rsp, C_GUEST_RSP(%rdi)
	lea .Lvmx_guest_resumes(%rip), %rax
	mov %rax, C_GUEST_RIP(%rdi)
	mov C_HOST_RSP(%rdi), %rsp      /* the slot at the top holds c */
	call sk_vmx_prepare_vmcs        /* rdi = c */
	test %eax, %eax
	jnz .Lvmx_launch_failed
	vmlaunch
	/* VMLAUNCH fell through: VMfailValid/VMfailInvalid (the error is in VM_INSTRUCTION_ERROR). */
.Lvmx_launch_failed:
	mov (%rsp), %rdi
	mov C_GUEST_RSP(%rdi), %rsp
	mov $-5, %eax                   /* -EIO */
	jmp .Lvmx_pop_and_return
.Lvmx_guest_resumes:
	xor %eax, %eax
.Lvmx_pop_and_return:
	pop %r15
	pop %r14
	pop %r13
	pop %r12
	pop %rbx
	pop %rbp
	ret
SYM_FUNC_END(sk_vmx_launch)

/* The VMCS's host RIP: every VM exit lands here, RSP = c->host_rsp (whose slot holds c), IF=0,
 * all guest GPRs but RSP in the registers. */
SYM_CODE_START(sk_vmx_exit)
	PUSH_GPRS
	mov 15*8(%rsp), %rdi            /* c */
	mov %rsp, %rsi                  /* struct sk_gprs * */
	call sk_vmx_handle_exit
	test %eax, %eax
	jnz .Lvmx_leave
	POP_GPRS
	vmresume
	/* VMRESUME fell through: hand the CPU back to the guest natively. */
	PUSH_GPRS
	mov 15*8(%rsp), %rdi
	mov %rsp, %rsi
	call sk_vmx_resume_failed
.Lvmx_leave:
	/* As .Lleave above: VMX is off, [RFLAGS][RIP] are on the guest's stack at c->guest_rsp. */
	mov 15*8(%rsp), %rdi
	mov C_GUEST_RSP(%rdi), %rcx
	mov %rcx, 15*8(%rsp)
	POP_GPRS
	pop %rsp
	popfq
	ret
SYM_CODE_END(sk_vmx_exit)
