/*
 * sigs.c: signal interposition. The shim needs three things to stay true whatever the
 * program does: its SIGSYS handler stays installed, each thread keeps the shim's altstack,
 * and SIGSYS is never blocked (a SUD SIGSYS that finds SIGSYS blocked kills the process:
 * the kernel resets the handler to SIG_DFL, see force_sig_info_to_task).
 *  - rt_sigaction(SIGSYS): recorded, not applied; the old action returned is the recorded
 *    one. A SIGSYS that is not a SUD trap (kill, tgkill, seccomp) goes to the recorded
 *    action (sigs_foreign_sigsys). For other signals SIGSYS is removed from sa_mask.
 *  - sigaltstack: recorded per thread and reported back, not applied; program handlers with
 *    SA_ONSTACK run on the shim's altstack.
 *  - rt_sigprocmask: applied to the trap frame's uc_sigmask (the mask sigreturn restores),
 *    without SIGSYS; rt_sigsuspend, ppoll, pselect6, epoll_pwait(2) get a copy of their
 *    mask without SIGSYS.
 */
#include "shim.h"

static struct ksigaction prog_sigsys; /* the program's wish for SIGSYS (SIG_DFL at start) */

static int bad_ptr(long p)
{
    return (unsigned long)p >= 0x800000000000UL; /* beyond user space: kernel says EFAULT */
}

void sigs_init(void)
{
    struct ksigaction sa = {
        .handler = (void *)shim_on_sigsys,
        /* NODEFER: a program handler that runs inside ours may trap again (nested SIGSYS)
         * ONSTACK: the shim's stack. RESTORER: our own, inside the SUD allowed range. */
        .flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER | K_SA_RESTORER,
        .restorer = (void *)shim_restorer,
        .mask = 0,
    };
    uint64_t sys = SIGBIT(SIGSYS);
    sys4(SYS_rt_sigaction, SIGSYS, &sa, &prog_sigsys, KSIGSET_SIZE);
    if (prog_sigsys.handler == (void *)shim_on_sigsys) /* inherited by a fork child */
        prog_sigsys.handler = SIG_DFL;
    sys4(SYS_rt_sigprocmask, SIG_UNBLOCK, &sys, 0, KSIGSET_SIZE);
}

static long sigsys_action(const struct ksigaction *act, struct ksigaction *oact)
{
    struct ksigaction old = prog_sigsys;
    if (act) {
        if (!shim_readable(act, sizeof *act))
            return -14;
        shim_copy(&prog_sigsys, act, sizeof prog_sigsys);
    }
    if (oact)
        shim_copy(oact, &old, sizeof old);
    return 0;
}

long sigs_rt_sigaction(const long *a)
{
    int sig = (int)a[0];
    const struct ksigaction *act = (const void *)a[1];
    struct ksigaction copy;

    if (a[3] != KSIGSET_SIZE)
        return -22;
    if (sig == SIGSYS)
        return sigsys_action(act, (struct ksigaction *)a[2]);
    if (act) {
        if (!shim_readable(act, sizeof *act))
            return -14;
        shim_copy(&copy, act, sizeof copy);
        copy.mask &= ~SIGBIT(SIGSYS);
        act = &copy;
    }
    return sys4(SYS_rt_sigaction, sig, act, a[2], KSIGSET_SIZE);
}

long sigs_sigaltstack(const long *a)
{
    const stack_t *ss = (const void *)a[0];
    stack_t *old = (stack_t *)a[1];
    stack_t want;

    if (ss) {
        if (!shim_readable(ss, sizeof *ss))
            return -14;
        shim_copy(&want, ss, sizeof want);
        if (want.ss_flags & ~(SS_DISABLE | K_SS_AUTODISARM))
            return -22;
        if (!(want.ss_flags & SS_DISABLE) && want.ss_size < K_MINSIGSTKSZ)
            return -12;
    }
    if (old) {
        if (bad_ptr((long)old))
            return -14;
        if (shim_self.prog_ss_set)
            shim_copy(old, &shim_self.prog_ss, sizeof *old);
        else
            *old = (stack_t){.ss_sp = 0, .ss_flags = SS_DISABLE, .ss_size = 0};
    }
    if (ss) {
        shim_self.prog_ss = want;
        shim_self.prog_ss_set = 1;
    }
    return 0;
}

/* The handler's current mask equals the trap-time mask (empty sa_mask, SA_NODEFER), so
 * the program's thread mask lives in uc_sigmask: sigreturn installs it. */
long sigs_rt_sigprocmask(const long *a, ucontext_t *uc)
{
    uint64_t *mask = (uint64_t *)&uc->uc_sigmask;
    uint64_t set = 0, now = *mask;
    long r = 0;

    if (a[3] != KSIGSET_SIZE)
        return -22;
    if (a[1]) {
        if (!shim_readable((void *)a[1], KSIGSET_SIZE))
            return -14;
        shim_copy(&set, (void *)a[1], sizeof set);
        switch (a[0]) {
        case SIG_BLOCK: now |= set; break;
        case SIG_UNBLOCK: now &= ~set; break;
        case SIG_SETMASK: now = set; break;
        default: return -22;
        }
    }
    if (a[2]) /* the kernel writes the current mask: = the old one, -EFAULT if bad */
        r = sys4(SYS_rt_sigprocmask, SIG_BLOCK, 0, a[2], KSIGSET_SIZE);
    *mask = now & ~(SIGBIT(SIGSYS) | SIGBIT(SIGKILL) | SIGBIT(SIGSTOP));
    return r;
}

/* clean_set: copy the sigset at *pp without SIGSYS into buf and point *pp at it. */
static int clean_set(long *pp, uint64_t *buf)
{
    if (!*pp)
        return 0;
    if (!shim_readable((void *)*pp, KSIGSET_SIZE))
        return -14;
    shim_copy(buf, (void *)*pp, sizeof *buf);
    *buf &= ~SIGBIT(SIGSYS);
    *pp = (long)buf;
    return 0;
}

/* sigs_masked_call: the calls that install a temporary signal mask while they wait.
 * A program handler run from inside them would otherwise run with SIGSYS blocked. */
long sigs_masked_call(long nr, const long *a)
{
    long b[6];
    uint64_t set;
    struct { long ss; long len; } ps;
    int err = 0;

    shim_copy(b, a, sizeof b);
    switch (nr) {
    case SYS_rt_sigsuspend: err = clean_set(&b[0], &set); break;
    case SYS_ppoll: err = clean_set(&b[3], &set); break;
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2: err = clean_set(&b[4], &set); break;
    case SYS_pselect6:
        if (b[5]) {
            if (!shim_readable((void *)b[5], sizeof ps))
                return -14;
            shim_copy(&ps, (void *)b[5], sizeof ps);
            err = clean_set(&ps.ss, &set);
            b[5] = (long)&ps;
        }
        break;
    }
    if (err)
        return err;
    return shim_sys6(nr, b[0], b[1], b[2], b[3], b[4], b[5]);
}

/* sigs_foreign_sigsys: a SIGSYS that SUD did not raise; do what the program asked for. */
void sigs_foreign_sigsys(int sig, siginfo_t *si, void *ctx)
{
    struct ksigaction act = prog_sigsys;
    uint64_t block = act.mask & ~SIGBIT(SIGSYS);

    if (act.handler == SIG_IGN)
        return;
    if (act.handler == SIG_DFL) {
        /* default action (core dump): give the kernel SIG_DFL and let it redeliver */
        struct ksigaction dfl = {.handler = SIG_DFL};
        sys4(SYS_rt_sigaction, SIGSYS, &dfl, 0, KSIGSET_SIZE);
        sys3(SYS_tgkill, sys0(SYS_getpid), sys0(SYS_gettid), SIGSYS);
        return;
    }
    if (act.flags & SA_RESETHAND)
        prog_sigsys.handler = SIG_DFL;
    /* the program's sa_mask while its handler runs; sigreturn restores ours */
    sys4(SYS_rt_sigprocmask, SIG_BLOCK, &block, 0, KSIGSET_SIZE);
    if (act.flags & SA_SIGINFO)
        ((void (*)(int, siginfo_t *, void *))act.handler)(sig, si, ctx);
    else
        ((void (*)(int))act.handler)(sig);
}
