/*
 * handler.c: the SIGSYS handler. For a SUD trap it reads nr and the six arguments from the
 * ucontext, counts the call under its routing class, runs it from the shim's gate and puts
 * the result into the context's rax exactly as the kernel returned it (-errno included);
 * the program's libc then sets errno as usual. The handler itself never touches errno (it
 * calls no libc), so the program's errno is as the kernel alone would have left it.
 * In a marked process the address-space calls and futexes go to memcalls.c first.
 * Async-signal-safe by construction: raw syscalls from the gate only; the one lock (the
 * window table's, layout.c) is taken with every signal blocked.
 */
#include "shim.h"
#include "route.h"

static void args_of(const ucontext_t *uc, long *a)
{
    const greg_t *g = uc->uc_mcontext.gregs;
    a[0] = g[REG_RDI];
    a[1] = g[REG_RSI];
    a[2] = g[REG_RDX];
    a[3] = g[REG_R10];
    a[4] = g[REG_R8];
    a[5] = g[REG_R9];
}

/* exec_trap: the new image starts with fresh counters (and loads the shim again through
 * LD_PRELOAD from its environment), so write ours first; if the exec fails, count on from
 * zero (what was written stays written). A CLONE_VM child (posix_spawn's) does neither:
 * the counters it sees are its parent's. */
static long exec_trap(long nr, const long *a)
{
    int owner = stats_owner();
    long r;
    if (owner)
        stats_write("execve");
    r = shim_sys6(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (owner)
        stats_reset_in_child();
    return r;
}

/* marked_call: the address-space and futex calls of a marked process (memcalls.c);
 * returns 1 and sets *r when it handled the call. */
static int marked_call(long nr, const long *a, long *r)
{
    switch (nr) {
    case SYS_mmap:
    case SYS_munmap:
    case SYS_mprotect:
    case SYS_pkey_mprotect:
    case SYS_mremap: *r = home_layout_call(nr, a); return 1; /* push.c */
    case SYS_madvise: *r = mem_madvise(a); return 1;
    case SYS_futex: *r = mem_futex(a); return 1;
    case SYS_close:
    case SYS_close_range:
    case SYS_dup2:
    case SYS_dup3: *r = mem_fd_guard(nr, a); return 1;
    case SYS_set_tid_address: /* the shim clears the tid at exit (futexes on window) */
        shim_self.clear_tid = a[0];
        *r = sys1(SYS_set_tid_address, 0);
        return 1;
    }
    return 0;
}

long shim_dispatch(long nr, const long *a, ucontext_t *uc)
{
    long r;
    int handled = 0;
    if (nr == OFFLOAD_SYS_MIGRATE)
        return migrate_trap(a, uc);
    if (shim_offloaded && (r = offloaded_call(nr, a, uc, &handled), handled))
        return r;
    if (nr == SYS_brk && shim_brk.on)
        return mem_brk(a);
    if (shim_marked && marked_call(nr, a, &r))
        return r;
    switch (nr) {
    case SYS_rt_sigreturn:
        /* a program handler returning through libc's restorer (outside the gate): do its
         * sigreturn on its own stack; our SIGSYS frame is simply abandoned */
        shim_sigreturn_at(uc->uc_mcontext.gregs[REG_RSP]);
    case SYS_clone:
    case SYS_clone3:
    case SYS_fork:
    case SYS_vfork:
        return clone_trap(nr, a, uc);
    case SYS_exit:
        return thread_exit_trap(a);
    case SYS_exit_group:
        stats_write("exit_group");
        return sys1(SYS_exit_group, a[0]);
    case SYS_execve:
    case SYS_execveat:
        return exec_trap(nr, a);
    case SYS_rt_sigaction:
        return sigs_rt_sigaction(a);
    case SYS_sigaltstack:
        return sigs_sigaltstack(a);
    case SYS_rt_sigprocmask:
        return sigs_rt_sigprocmask(a, uc);
    case SYS_rt_sigsuspend:
    case SYS_ppoll:
    case SYS_pselect6:
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2:
        return sigs_masked_call(nr, a);
    case SYS_prctl:
        if (a[0] == PR_SET_SYSCALL_USER_DISPATCH_)
            return -16; /* EBUSY: the shim owns this thread's SUD */
        break;
    }
    return shim_sys6(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

void shim_on_sigsys(int sig, siginfo_t *si, void *ctx)
{
    ucontext_t *uc = ctx;
    long a[6], nr;

    if (si->si_code != SI_SYS_USER_DISPATCH) {
        sigs_foreign_sigsys(sig, si, ctx);
        return;
    }
    nr = uc->uc_mcontext.gregs[REG_RAX]; /* the kernel rolled rax back to the number */
    args_of(uc, a);
    if (nr == OFFLOAD_SYS_RESUME) { /* the shadow's restore: uc becomes the home's context */
        shadow_resume(uc, a);
        return;
    }
    stats_count(nr);
    uc->uc_mcontext.gregs[REG_RAX] = shim_dispatch(nr, a, uc);
}
