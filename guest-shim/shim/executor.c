/*
 * executor.c: the home side of a thread that runs on another node (docs/offload-threads.md
 * sections 3 and 4): its executor. An executor is a thread of the home process registered
 * with offload.ko as the executor of its tid; it serves the thread's forwarded calls for
 * ever (EXEC_WAIT -> run the call here -> EXEC_DONE) and exits when the thread does.
 *  - the migrated main thread and --place'd threads become executors themselves after
 *    their SPAWN (migrate.c);
 *  - OFFLOAD_SYS_NEWEXEC (an offloaded thread calls clone): a shim-internal thread is made
 *    here with the new thread's TLS (so its handlers and the shim's per-thread state see
 *    the thread's own TLS, window memory), registers itself before its tid is returned,
 *    then serves; that tid is the tid the program sees for the new thread;
 *  - OFFLOAD_SYS_FORK (an offloaded thread forks): the executor forks through the marked
 *    fork path (private memory, unmarked child); the child restores the thread's context,
 *    captured on the other node, with rax = 0: "the child comes home". The parent there
 *    gets the child's pid.
 */
#include "shim.h"
#include <fcntl.h>
#include <sched.h>
#include "record.h"
#include "../kmod/offload_abi.h"

struct executor {
    int fd;
    int slot;       /* this thread's altstack slot (the thread's TLS says the remote one) */
    int keep_fd;    /* the file SPAWNed: closing it would KILL the process's shadows */
    ucontext_t *uc; /* what shim_dispatch gets as the trap frame (a dummy if none) */
};

/* executor_open: a file of our own, with this thread registered as an executor (EXEC_WAIT
 * with O_NONBLOCK: -EAGAIN) before anyone can know its tid; blocking from then on unless
 * nonblock is asked (a SPAWN follows first). The fd or -errno. */
long executor_open(int nonblock)
{
    struct offload_exec_call c = {.flags = 0};
    long fd = sys4(SYS_openat, AT_FDCWD, "/dev/offload", O_RDWR | O_CLOEXEC | O_NONBLOCK, 0);
    long r;
    if (fd < 0)
        return fd;
    r = sys3(SYS_ioctl, fd, OFFLOAD_IOC_EXEC_WAIT, &c);
    if (r != -11 && r < 0) {
        sys1(SYS_close, fd);
        return r;
    }
    if (!nonblock)
        sys3(SYS_fcntl, fd, F_SETFL, O_RDWR);
    fd_guard_add((int)fd);
    return fd;
}

/* exec_sigprocmask: the thread on the other node changed its mask: the executor takes the
 * same one as its real mask (it never returns through a trap frame), so signals sent to the
 * process stay pending while the thread blocks them, and are delivered here when it
 * unblocks them, before its call returns. SIGSYS is never blocked. */
static long exec_sigprocmask(const long *a)
{
    uint64_t set;
    if (a[3] != KSIGSET_SIZE)
        return -22;
    if (!a[1])
        return sys4(SYS_rt_sigprocmask, SIG_BLOCK, 0, a[2], KSIGSET_SIZE);
    if (!shim_readable((void *)a[1], KSIGSET_SIZE))
        return -14;
    shim_copy(&set, (void *)a[1], sizeof set);
    set &= ~(SIGBIT(SIGSYS) | SIGBIT(SIGKILL) | SIGBIT(SIGSTOP));
    return sys4(SYS_rt_sigprocmask, a[0], &set, a[2], KSIGSET_SIZE);
}

/* ---- OFFLOAD_SYS_NEWEXEC ---- */

struct newexec {
    int ready;  /* futex word: the child registered (or failed) */
    long err;
    char *region;
    int slot;
};

static void executor_loop(struct executor *ex);

/* newexec_main: the new executor thread, on its altstack region (also its stack). */
static void newexec_main(void *arg)
{
    struct newexec *n = arg;
    struct executor ex = {.slot = n->slot, .keep_fd = 0};
    ucontext_t dummy;
    long fd;
    shim_zero(&dummy, sizeof dummy);
    ex.uc = &dummy;
    altstack_install(n->region);
    altstack_set_owner(n->slot, (int)sys0(SYS_getpid), (int)sys0(SYS_gettid));
    fd = executor_open(0);
    n->err = fd < 0 ? fd : 0;
    if (fd >= 0)
        shim_arm_thread();
    __atomic_store_n(&n->ready, 1, __ATOMIC_RELEASE);
    sys3(SYS_futex, &n->ready, 1 /* FUTEX_WAKE */ | 128, 1); /* n is gone after this */
    if (fd < 0)
        thread_exit_as(0, ex.slot, 0);
    ex.fd = (int)fd;
    executor_loop(&ex);
}

#define EXEC_THREAD_FLAGS                                                              \
    (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM | \
     CLONE_SETTLS)

/* exec_newexec: a new executor thread with the TLS tls; its tid, or -errno. It counts as a
 * thread the process created (--place numbering); it starts where its creator runs. */
static long exec_newexec(long tls)
{
    struct newexec n = {.ready = 0};
    long t;
    place_of_next_thread();
    n.slot = altstack_alloc(&n.region);
    if (!n.region)
        return -12;
    t = shim_thread_start(EXEC_THREAD_FLAGS, n.region + ALT_SIZE, tls, newexec_main, &n);
    if (t < 0) {
        altstack_release(n.slot, n.region);
        return t;
    }
    while (!__atomic_load_n(&n.ready, __ATOMIC_ACQUIRE))
        sys4(SYS_futex, &n.ready, 0 /* FUTEX_WAIT */ | 128, 0, 0);
    return n.err ? n.err : t;
}

/* ---- OFFLOAD_SYS_FORK ---- */

/* exec_fork: fork here for the thread; a[0]: its context (rec_ctx, window memory), a[1]:
 * clone flags (exit signal, SETTID/CLEARTID), a[2], a[3]: parent/child tid words. The
 * child (private memory, unmarked) becomes the thread: its context with rax = 0. */
static long exec_fork(const struct executor *ex, const long *a)
{
    const struct rec_ctx *c = (const struct rec_ctx *)a[0];
    long r;
    if (!shim_readable(c, sizeof *c) || c->magic != REC_CTX_MAGIC)
        return -14;
    r = clone_fork_for(a[1], a[2], a[3], ex->slot);
    if (r != 0)
        return r;
    sys2(SYS_arch_prctl, 0x1002 /* ARCH_SET_FS */, c->fs_base);
    shim_trap(OFFLOAD_SYS_RESUME, (long)c); /* does not come back */
    shim_say("offload-shim: fork child: resume failed\n");
    return sys1(SYS_exit_group, 127);
}

/* ---- the loop ---- */

/* exec_exit: the thread ended there: answer, then end this executor the same way (its
 * CLONE_CHILD_CLEARTID word cleared and woken here, where the joiners wait). */
static long exec_exit(const struct executor *ex, const struct offload_exec_call *c)
{
    struct offload_exec_done d = {.token = c->token, .ret = 0};
    sys3(SYS_ioctl, ex->fd, OFFLOAD_IOC_EXEC_DONE, &d);
    if (!ex->keep_fd) {
        fd_guard_drop(ex->fd);
        sys1(SYS_close, ex->fd);
    }
    return thread_exit_as((long)c->args[0], ex->slot, shim_self.clear_tid);
}

/* exec_one: one forwarded call. */
static long exec_one(const struct executor *ex, const struct offload_exec_call *c)
{
    long a[6];
    shim_copy(a, c->args, sizeof a);
    switch ((long)c->nr) {
    case SYS_exit:
        return exec_exit(ex, c);
    case SYS_exit_group:
        stats_write("exit_group");
        return sys1(SYS_exit_group, a[0]);
    case OFFLOAD_SYS_LAYOUT:
        return exec_layout((struct layout_req *)a[1], ex->uc);
    case OFFLOAD_SYS_NEWEXEC:
        return exec_newexec(a[0]);
    case OFFLOAD_SYS_FORK:
        return exec_fork(ex, a);
    case SYS_rt_sigprocmask:
        return exec_sigprocmask(a);
    case SYS_clone:
    case SYS_clone3:
    case SYS_fork:
    case SYS_vfork:
        return -38; /* the remote side sends NEWEXEC/FORK instead */
    }
    return shim_dispatch((long)c->nr, a, ex->uc);
}

/* exec_signal: a signal for the process that this executor took while its thread had no
 * call here (OFFLOAD_EXEC_SIGNALS): it goes to the thread, whose handler runs there. The
 * handler as installed here travels with it (push.c). */
static void exec_signal(const struct offload_exec_call *c)
{
    struct sig_push p;
    shim_zero(&p, sizeof p);
    p.mark = SIG_PUSH_MARK;
    p.home_tid = c->tid;
    shim_copy(p.info, c->args, sizeof c->args);
    shim_copy(&p.signo, p.info, 4);
    if (sys4(SYS_rt_sigaction, p.signo, 0, &p.act, KSIGSET_SIZE) < 0)
        return;
    push_signal(&p);
}

static void executor_loop(struct executor *ex)
{
    struct offload_exec_call c;
    for (;;) {
        long r;
        struct offload_exec_done d;
        c.flags = OFFLOAD_EXEC_SIGNALS;
        r = sys3(SYS_ioctl, ex->fd, OFFLOAD_IOC_EXEC_WAIT, &c);
        if (r == -4)
            continue;
        if (r < 0) {
            shim_say("offload-shim: executor: EXEC_WAIT failed; exiting\n");
            sys1(SYS_exit_group, 1);
        }
        if (c.nr == OFFLOAD_EXEC_SIGNAL) {
            exec_signal(&c);
            continue;
        }
        d = (struct offload_exec_done){.token = c.token, .ret = exec_one(ex, &c)};
        sys3(SYS_ioctl, ex->fd, OFFLOAD_IOC_EXEC_DONE, &d);
    }
}

/* executor_serve: the calling thread serves its remote thread for ever through fd (which
 * SPAWNed, so it stays open). slot: its own altstack slot; uc: its trap frame or NULL. */
void executor_serve(int fd, int slot, ucontext_t *uc)
{
    struct executor ex = {.fd = fd, .slot = slot, .keep_fd = 1, .uc = uc};
    ucontext_t dummy;
    if (!uc) {
        shim_zero(&dummy, sizeof dummy);
        ex.uc = &dummy;
    }
    sys3(SYS_fcntl, fd, F_SETFL, O_RDWR); /* blocking EXEC_WAIT from now on */
    executor_loop(&ex);
}
