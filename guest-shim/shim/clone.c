/*
 * clone.c: clone, clone3, fork, vfork and thread exit. SUD is per thread and the kernel
 * clears it in every new task (dup_task_struct), so each child must arm itself.
 *  - No CLONE_VM (fork): the child owns a copy of our memory, including the SIGSYS frame
 *    on its copy of the altstack: it re-arms and returns through the frame with rax = 0.
 *  - vfork (CLONE_VM|CLONE_VFORK without a new stack) becomes a plain fork: a vfork child
 *    running on the parent's stack would take its SIGSYS frames on the parent's altstack,
 *    right over the parent's own frame, suspended in clone.
 *  - CLONE_VM (threads, posix_spawn's child): the child cannot return through the frame,
 *    which is on the parent's altstack. gate.S gives it a fresh altstack; there it arms
 *    SUD and resumes at the trap-time rip with the trap-time registers, rax = 0 and
 *    rsp = its new stack (shim_child_resume).
 *  - Offloaded (a thread running away from home, shadow.c): a new thread gets its executor
 *    at home first (OFFLOAD_SYS_NEWEXEC); that executor's tid is the tid the program sees
 *    (clone's result, PARENT_SETTID, CHILD_SETTID), so gettid, tgkill and pthread_kill,
 *    which run at home, name the right thread; then the local clone as above. A fork (and
 *    vfork, and posix_spawn's CLONE_VM|CLONE_VFORK child) happens at home: "the child
 *    comes home" (shadow_fork_home, migrate.c exec_fork).
 *  - --place (home): the K-th thread created may start on another node: its child
 *    migrates before the program's first instruction (migrate_new_thread).
 */
#include "shim.h"
#include <sched.h>
#include "block.h"

struct clone_call {
    long nr;
    long args[6];
    struct child_block *block;
};

struct child_block {
    greg_t gregs[NGREG];
    char pad[CB_FX - NGREG * 8];
    char fx[512] __attribute__((aligned(16)));
    long has_fx;
    char *region; /* the child's altstack region; the block sits at its top */
    int slot;     /* its pool slot + 1 */
    int own_tls;  /* CLONE_SETTLS: the child has its own shim_self */
    long clear_tid; /* marked: the CLONE_CHILD_CLEARTID address the shim clears at exit */
    long home_tid;  /* offloaded: the new thread's executor at home */
    int place;      /* home, --place: the node the thread starts on, or -1 */
} __attribute__((aligned(64)));

_Static_assert(offsetof(struct clone_call, block) == CC_BLOCK, "CC_BLOCK");
_Static_assert(offsetof(struct clone_call, args) == CC_ARGS, "CC_ARGS");
_Static_assert(offsetof(struct child_block, fx) == CB_FX, "CB_FX");
_Static_assert(offsetof(struct child_block, has_fx) == CB_HAS_FX, "CB_HAS_FX");
_Static_assert(sizeof(struct child_block) <= CB_SIZE, "CB_SIZE");
_Static_assert(REG_RSP * 8 == G_RSP && REG_RIP * 8 == G_RIP && REG_EFL * 8 == G_EFL &&
                   REG_RAX * 8 == G_RAX && REG_RDI * 8 == G_RDI && REG_R8 * 8 == G_R8,
               "REG_* offsets");

long shim_clone_call(struct clone_call *c) HIDDEN;
__attribute__((noreturn)) void shim_child_resume(struct child_block *b) HIDDEN;
__attribute__((noreturn)) void shim_child_start(struct child_block *b) HIDDEN;

/* clone3's struct clone_args, the fields we look at (linux/sched.h) */
#define CA_FLAGS 0
#define CA_CHILD_TID 16
#define CA_PARENT_TID 24
#define CA_EXIT_SIGNAL 32
#define CA_TLS 56
#define CA_STACK 40
#define CA_STACK_SIZE 48
#define CA_MAX 128

/* make_block: the child's altstack region and, at its top, its resume record. */
static struct child_block *make_block(const ucontext_t *uc, long new_sp, long flags)
{
    char *region;
    int slot = altstack_alloc(&region);
    struct child_block *b;

    if (!region)
        return 0;
    b = (struct child_block *)(region + ALT_SIZE - CB_SIZE);
    shim_copy(b->gregs, uc->uc_mcontext.gregs, sizeof b->gregs);
    b->gregs[REG_RAX] = 0;
    b->gregs[REG_RSP] = new_sp;
    b->has_fx = uc->uc_mcontext.fpregs != 0;
    if (b->has_fx)
        shim_copy(b->fx, uc->uc_mcontext.fpregs, sizeof b->fx);
    b->region = region;
    b->slot = slot;
    b->own_tls = (flags & CLONE_SETTLS) != 0;
    b->home_tid = 0;
    b->place = -1;
    if (!shim_offloaded && (flags & CLONE_THREAD)) {
        int node = place_of_next_thread();
        b->place = b->own_tls && shim_marked ? node : -1;
    }
    return b;
}

/* The child of a CLONE_VM clone, on its altstack (gate.S). */
void shim_child_start(struct child_block *b)
{
    altstack_install(b->region);
    altstack_set_owner(b->slot, (int)sys0(SYS_getpid), (int)sys0(SYS_gettid));
    if (b->own_tls) {
        shim_self.slot = b->slot;
        shim_self.prog_ss_set = 0;
        shim_self.clear_tid = b->clear_tid;
        shim_self.home_tid = b->home_tid;
    }
    shim_arm_thread();
    if (b->place >= 0)
        migrate_new_thread(b->gregs, b->has_fx ? b->fx : 0, b->place); /* returns only on failure */
    shim_child_resume(b);
}

/* fork_child: we are the child of a fork-like clone, on our own copy of everything (a
 * marked parent's window memory is copied out first, before anything is written). */
static void fork_child(const struct fork_job *f)
{
    int pid;
    if (f)
        fork_unmark_child(f);
    if (f && f->slot)
        shim_self.slot = f->slot; /* an executor forks: its own region, not the thread's */
    pid = (int)sys0(SYS_getpid);
    altstack_after_fork(shim_self.slot, pid);
    stats_reset_in_child();
    shim_arm_thread();
}

/* run: the clone itself. A fork-like clone of a marked process goes through move.c's
 * fork protocol (lock, strip CHILD_SETTID/CLEARTID, the child copies the window out while
 * the parent waits). ctid is the child_tid argument; ca, for clone3, the copy of
 * clone_args whose flags the protocol edits (clone: c->args[0]). */
static long run(struct clone_call *c, long flags, long ctid, char *ca)
{
    struct child_block *b = c->block;
    struct fork_job job, *f = 0;
    long r;

    if (shim_marked && !(flags & CLONE_VM)) {
        long fl = flags;
        if (fork_prepare(&job, &fl, ctid) < 0)
            return -11; /* EAGAIN, as fork says when it cannot */
        if (ca)
            shim_copy(ca + CA_FLAGS, &fl, 8);
        else if (c->nr == SYS_clone)
            c->args[0] = fl;
        f = &job;
    }
    r = shim_clone_call(c);
    if (r == 0) { /* only a fork-like child comes back here */
        fork_child(f);
        return 0;
    }
    if (f)
        fork_parent(f, r);
    /* parent: a vfork-style child has exec'd or exited by now; a failed clone never ran */
    if (b && (r < 0 || (flags & CLONE_VFORK)))
        altstack_release(b->slot, b->region);
    return r;
}

/* strip_cleartid: a marked thread's CLONE_CHILD_CLEARTID is done by the shim at exit
 * (the kernel's wake is a shared futex, which window pages cannot take). */
static long strip_cleartid(long *flags, struct child_block *b, long ctid)
{
    if (!shim_marked || !(*flags & CLONE_CHILD_CLEARTID))
        return *flags;
    b->clear_tid = ctid;
    *flags &= ~(long)CLONE_CHILD_CLEARTID;
    return *flags;
}

/* remote_thread: an offloaded thread creates a thread: its executor is made at home first
 * (registered before its tid is known to anyone); that tid is the one the program sees, so
 * the kernel's PARENT_SETTID/CHILD_SETTID (which would write the local tid) are done here.
 * Only pthread-like clones (CLONE_THREAD with their own TLS, where the shim keeps the
 * thread's home tid) can run away from home. */
static long remote_thread(long *flags, struct child_block *b, long ptid, long ctid, long tls)
{
    long t;
    if (!(*flags & CLONE_THREAD) || !(*flags & CLONE_SETTLS))
        return -38; /* ENOSYS (docs/syscall-routing.md) */
    if (((*flags & CLONE_PARENT_SETTID) && !shim_readable((void *)ptid, 4)) ||
        ((*flags & CLONE_CHILD_SETTID) && !shim_readable((void *)ctid, 4)))
        return -14;
    t = shadow_newexec(tls);
    if (t < 0)
        return t;
    if (*flags & CLONE_PARENT_SETTID)
        *(int *)ptid = (int)t;
    if (*flags & CLONE_CHILD_SETTID)
        *(int *)ctid = (int)t;
    *flags &= ~(long)(CLONE_PARENT_SETTID | CLONE_CHILD_SETTID);
    b->home_tid = t;
    return t;
}

/* run_offloaded: remote_thread, then the local clone; the program gets the home tid. ca:
 * clone3's args copy (its flags are rewritten), else c->args[0] is. */
static long run_offloaded(struct clone_call *c, long *flags, long ptid, long ctid, long tls,
                          char *ca)
{
    long t = c->block ? remote_thread(flags, c->block, ptid, ctid, tls) : -38, r;
    if (t < 0) {
        if (c->block)
            altstack_release(c->block->slot, c->block->region);
        return t;
    }
    if (ca)
        shim_copy(ca + CA_FLAGS, flags, 8);
    else
        c->args[0] = *flags;
    shadow_threads_add(1); /* before the child can run (and exit) */
    r = run(c, *flags, ctid, ca);
    if (r < 0) {
        shadow_threads_add(-1);
        shadow_end_exec(t);
        return r;
    }
    shadow_tid_add(t, r);
    return t;
}

/* clone3_offloaded: clone3 of a thread running away from home (see remote_thread). */
static long clone3_offloaded(struct clone_call *c, char *args, long flags, ucontext_t *uc)
{
    long stack, stack_size, ptid, ctid, tls, sig;
    shim_copy(&stack, args + CA_STACK, 8);
    shim_copy(&stack_size, args + CA_STACK_SIZE, 8);
    shim_copy(&ctid, args + CA_CHILD_TID, 8);
    shim_copy(&ptid, args + CA_PARENT_TID, 8);
    shim_copy(&tls, args + CA_TLS, 8);
    shim_copy(&sig, args + CA_EXIT_SIGNAL, 8);
    if (!(flags & CLONE_VM) || (flags & CLONE_VFORK))
        return shadow_fork_home(uc, (flags & ~(long)CSIGNAL) | (sig & CSIGNAL), ptid, ctid,
                                flags & CLONE_VM ? stack + stack_size : 0);
    c->block = make_block(uc, stack ? stack + stack_size : uc->uc_mcontext.gregs[REG_RSP],
                          flags);
    if (!c->block)
        return -12;
    strip_cleartid(&flags, c->block, ctid);
    return run_offloaded(c, &flags, ptid, ctid, tls, args);
}

static long clone_legacy(const long *a, ucontext_t *uc)
{
    struct clone_call c = {.nr = SYS_clone, .block = 0};
    long flags = a[0], sp = a[1];

    shim_copy(c.args, a, sizeof c.args);
    if ((flags & CLONE_VM) && (flags & CLONE_VFORK) && !sp) {
        flags &= ~(CLONE_VM | CLONE_VFORK);
        c.args[0] = flags;
    }
    if (shim_offloaded && (!(flags & CLONE_VM) || (flags & CLONE_VFORK)))
        return shadow_fork_home(uc, flags, a[2], a[3], flags & CLONE_VM ? sp : 0);
    if (flags & CLONE_VM) {
        c.block = make_block(uc, sp ? sp : uc->uc_mcontext.gregs[REG_RSP], flags);
        if (!c.block)
            return -12; /* ENOMEM */
        c.args[0] = strip_cleartid(&flags, c.block, a[3]);
    }
    if (shim_offloaded)
        return run_offloaded(&c, &flags, a[2], a[3], a[4], 0);
    return run(&c, flags, a[3], 0);
}

static long clone3_trap(const long *a, ucontext_t *uc)
{
    struct clone_call c = {.nr = SYS_clone3, .block = 0};
    char args[CA_MAX];
    unsigned long size = (unsigned long)a[1];
    long flags, stack, stack_size;

    if (size < 64 || size > CA_MAX) /* let the kernel judge sizes we do not copy */
        return shim_sys6(SYS_clone3, a[0], a[1], 0, 0, 0, 0);
    if (!shim_readable((void *)a[0], size))
        return -14;
    shim_copy(args, (void *)a[0], size);
    shim_copy(&flags, args + CA_FLAGS, 8);
    shim_copy(&stack, args + CA_STACK, 8);
    shim_copy(&stack_size, args + CA_STACK_SIZE, 8);
    c.args[0] = (long)args;
    c.args[1] = (long)size;
    if ((flags & CLONE_VM) && (flags & CLONE_VFORK) && !stack) {
        flags &= ~(CLONE_VM | CLONE_VFORK);
        shim_copy(args + CA_FLAGS, &flags, 8);
    }
    if (shim_offloaded)
        return clone3_offloaded(&c, args, flags, uc);
    if (flags & CLONE_VM) {
        long sp = stack ? stack + stack_size : uc->uc_mcontext.gregs[REG_RSP];
        long ctid;
        c.block = make_block(uc, sp, flags);
        if (!c.block)
            return -12;
        shim_copy(&ctid, args + CA_CHILD_TID, 8);
        strip_cleartid(&flags, c.block, ctid);
        shim_copy(args + CA_FLAGS, &flags, 8);
    }
    {
        long ctid;
        shim_copy(&ctid, args + CA_CHILD_TID, 8);
        return run(&c, flags, ctid, args);
    }
}

long clone_trap(long nr, const long *a, ucontext_t *uc)
{
    struct clone_call c = {.nr = SYS_fork, .block = 0};

    switch (nr) {
    case SYS_clone: return clone_legacy(a, uc);
    case SYS_clone3: return clone3_trap(a, uc);
    default: /* fork, and vfork made a fork */
        if (shim_offloaded)
            return shadow_fork_home(uc, SIGCHLD, 0, 0, 0);
        return run(&c, 0, 0, 0);
    }
}

/* thread_exit_trap: the thread's altstack becomes reusable once the thread is gone. A
 * marked thread's CLONE_CHILD_CLEARTID is done here, as the kernel would: store 0, wake
 * one waiter (private: the waiter's futex was made private too). Everything needed is
 * read first: after the store the joiner may free the stack holding our TLS. */
long thread_exit_trap(const long *a)
{
    return thread_exit_as(a[0], shim_self.slot, shim_self.clear_tid);
}

/* thread_exit_as: the same with the altstack slot and clear-tid word given (an executor's
 * slot is not the thread's; an offloaded thread leaves the clearing to its executor). */
long thread_exit_as(long code, int slot, long clear)
{
    altstack_exiting(slot, (int)sys0(SYS_gettid));
    if (clear) {
        __atomic_store_n((int *)clear, 0, __ATOMIC_SEQ_CST);
        sys3(SYS_futex, clear, 1 /* FUTEX_WAKE */ | 128 /* PRIVATE */, 1);
    }
    return sys1(SYS_exit, code);
}

/* clone_fork_for: an executor forks for its thread (the child comes home): a marked fork
 * of flags (exit signal, CHILD_SETTID/CLEARTID, PARENT_SETTID). The child gets private
 * memory and is unmarked; it returns 0 with every signal but SIGSYS as the executor had
 * them; the parent gets the pid or -errno. */
long clone_fork_for(long flags, long ptid, long ctid, int slot)
{
    struct clone_call c = {.nr = SYS_clone, .args = {0, 0, ptid, ctid, 0, 0}, .block = 0};
    struct fork_job job;
    long fl = flags & (CSIGNAL | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID |
                       CLONE_PARENT_SETTID), r;
    if (fork_prepare(&job, &fl, ctid) < 0)
        return -11;
    job.slot = slot;
    c.args[0] = fl;
    r = shim_clone_call(&c);
    if (r == 0) {
        fork_child(&job);
        sys4(SYS_rt_sigprocmask, SIG_SETMASK, &job.saved, 0, KSIGSET_SIZE);
        return 0;
    }
    fork_parent(&job, r);
    return r;
}
