/*
 * onstack.S: shim_on_stack(top, fn, arg) calls fn(arg) with rsp = top (16-byte aligned
 * down) and comes back to the caller's stack. The constructor moves the main thread's
 * stack into the window from a temporary stack (move.c): nothing may write the old stack
 * between the copy and the mapping that replaces it. Also shim_trap, the one `syscall`
 * deliberately outside the SUD allowed range (gate.S).
 */
        .text
        .globl shim_on_stack
        .hidden shim_on_stack
        .type shim_on_stack, @function
shim_on_stack:
        push    %rbp
        mov     %rsp, %rbp
        mov     %rdi, %rsp
        and     $-16, %rsp
        mov     %rdx, %rdi
        call    *%rsi
        mov     %rbp, %rsp
        pop     %rbp
        ret
        .size shim_on_stack, .-shim_on_stack

/* long shim_trap(nr, arg): a `syscall` outside the SUD allowed range, so it always traps:
 * the shim's private numbers (OFFLOAD_SYS_MIGRATE, OFFLOAD_SYS_RESUME) reach the SIGSYS
 * handler with the caller's full context in the ucontext. */
        .globl shim_trap
        .hidden shim_trap
        .type shim_trap, @function
shim_trap:
        mov     %rdi, %rax
        mov     %rsi, %rdi
        syscall
        ret
        .size shim_trap, .-shim_trap

        .section .note.GNU-stack, "", @progbits
