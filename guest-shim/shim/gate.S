/*
 * gate.S: every `syscall` instruction of shim.so, in one section `shim_gate`. That
 * section, and nothing else, is the Syscall User Dispatch allowed range: calls made from
 * here run natively whatever the selector says; calls from anywhere else (the program,
 * libc, ld.so, a vDSO fallback) raise SIGSYS. Keeping the range this small means that no
 * code besides these stubs can bypass the shim.
 *
 *  shim_sys6          generic raw syscall (SysV args -> kernel args)
 *  shim_restorer      sa_restorer of the shim's SIGSYS handler: its rt_sigreturn must be in
 *                     the allowed range (x86_64 exempts no sigreturn trampoline from SUD)
 *  shim_sigreturn_at  performs a program's trapped rt_sigreturn with the program's rsp
 *  shim_clone_call    runs a trapped clone; a child with a new stack is diverted to
 *                     shim_child_start (C) on its own altstack and then shim_child_resume
 *  shim_child_resume  loads the trap-time registers and jumps to the program (not a
 *                     syscall, but kept here next to its counterpart)
 *  shim_thread_start  a shim-internal thread (an executor at home): raw clone whose child
 *                     calls fn(arg) on the stack it was given
 */
#include "block.h"

        .section shim_gate, "ax", @progbits

        .globl shim_sys6
        .hidden shim_sys6
        .type shim_sys6, @function
shim_sys6:
        mov     %rdi, %rax
        mov     %rsi, %rdi
        mov     %rdx, %rsi
        mov     %rcx, %rdx
        mov     %r8, %r10
        mov     %r9, %r8
        mov     8(%rsp), %r9
        syscall
        ret
        .size shim_sys6, .-shim_sys6

        .globl shim_restorer
        .hidden shim_restorer
        .type shim_restorer, @function
shim_restorer:
        mov     $15, %eax               /* __NR_rt_sigreturn */
        syscall
        ud2
        .size shim_restorer, .-shim_restorer

/* shim_sigreturn_at(sp): the kernel finds the signal frame at rsp - 8 (the restorer was
 * entered by `ret`, which popped pretcode); rsp must be exactly the program's. */
        .globl shim_sigreturn_at
        .hidden shim_sigreturn_at
        .type shim_sigreturn_at, @function
shim_sigreturn_at:
        mov     %rdi, %rsp
        mov     $15, %eax
        syscall
        ud2
        .size shim_sigreturn_at, .-shim_sigreturn_at

/* long shim_clone_call(struct clone_call *c). Parent (and fork-like child, whose stack is
 * its own copy of ours): returns rax. Child with a block: rsp is now the program's new
 * stack, which we must not touch beyond what shim_child_resume documents; r12 (preserved
 * by clone in the child) still holds the block, whose address is also the top of the
 * child's altstack: run the C setup below it. */
        .globl shim_clone_call
        .hidden shim_clone_call
        .type shim_clone_call, @function
shim_clone_call:
        push    %r12
        mov     CC_BLOCK(%rdi), %r12
        mov     CC_NR(%rdi), %rax
        mov     CC_ARGS+8(%rdi), %rsi
        mov     CC_ARGS+16(%rdi), %rdx
        mov     CC_ARGS+24(%rdi), %r10
        mov     CC_ARGS+32(%rdi), %r8
        mov     CC_ARGS+40(%rdi), %r9
        mov     CC_ARGS(%rdi), %rdi
        syscall
        test    %rax, %rax
        jnz     1f
        test    %r12, %r12
        jz      1f
        mov     %r12, %rsp
        and     $-16, %rsp
        mov     %r12, %rdi
        call    shim_child_start        /* noreturn */
        ud2
1:      pop     %r12
        ret
        .size shim_clone_call, .-shim_clone_call

/* shim_child_resume(block): fxrstor, then every general register from the block; rip and
 * rflags travel through the 16 bytes just below the new stack pointer (unused memory of a
 * fresh stack), consumed by popfq + ret, which leave rsp = the new stack exactly. */
        .globl shim_child_resume
        .hidden shim_child_resume
        .type shim_child_resume, @function
shim_child_resume:
        cmpq    $0, CB_HAS_FX(%rdi)
        je      2f
        fxrstor64 CB_FX(%rdi)
2:      mov     CB_GREGS+G_RSP(%rdi), %rax
        sub     $16, %rax
        mov     CB_GREGS+G_RIP(%rdi), %rcx
        mov     %rcx, 8(%rax)
        mov     CB_GREGS+G_EFL(%rdi), %rcx
        mov     %rcx, (%rax)
        mov     %rax, %rsp
        mov     CB_GREGS+G_R8(%rdi), %r8
        mov     CB_GREGS+G_R9(%rdi), %r9
        mov     CB_GREGS+G_R10(%rdi), %r10
        mov     CB_GREGS+G_R11(%rdi), %r11
        mov     CB_GREGS+G_R12(%rdi), %r12
        mov     CB_GREGS+G_R13(%rdi), %r13
        mov     CB_GREGS+G_R14(%rdi), %r14
        mov     CB_GREGS+G_R15(%rdi), %r15
        mov     CB_GREGS+G_RSI(%rdi), %rsi
        mov     CB_GREGS+G_RBP(%rdi), %rbp
        mov     CB_GREGS+G_RBX(%rdi), %rbx
        mov     CB_GREGS+G_RDX(%rdi), %rdx
        mov     CB_GREGS+G_RCX(%rdi), %rcx
        mov     CB_GREGS+G_RAX(%rdi), %rax
        mov     CB_GREGS+G_RDI(%rdi), %rdi
        popfq
        ret
        .size shim_child_resume, .-shim_child_resume

/* long shim_thread_start(flags, stack, tls, fn, arg): clone(flags, stack, 0, 0, tls).
 * Parent: returns the child's tid or -errno. Child: rsp = stack (16-byte aligned), calls
 * fn(arg), which must not return. fn and arg travel in r12/r13, which the child keeps. */
        .globl shim_thread_start
        .hidden shim_thread_start
        .type shim_thread_start, @function
shim_thread_start:
        push    %r12
        push    %r13
        mov     %rcx, %r12
        mov     %r8, %r13
        mov     %rdx, %r8               /* tls */
        xor     %edx, %edx              /* parent_tid */
        xor     %r10d, %r10d            /* child_tid */
        and     $-16, %rsi
        mov     $56, %eax               /* __NR_clone */
        syscall
        test    %rax, %rax
        jnz     3f
        mov     %r13, %rdi
        call    *%r12                   /* noreturn */
        ud2
3:      pop     %r13
        pop     %r12
        ret
        .size shim_thread_start, .-shim_thread_start

        .section .note.GNU-stack, "", @progbits
