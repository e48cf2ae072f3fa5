/*
 * push.c: layout changes made at home, applied on every node that hosts a thread of the
 * process (docs/offload-threads.md, "Layout push to every shadow"; issue 5 item 2).
 *
 * Home side: every mmap, munmap, mprotect and mremap of a marked process that may have
 * threads elsewhere (OFFLOAD_ON or OFFLOAD_PLACE) runs under the push lock; once the
 * process has a shadow (a SPAWN succeeded: shim_pushing), the table entries of each range
 * the call changed go to the driver (OFFLOAD_IOC_PUSH), which returns when every
 * shadow has applied them. So the call returns to the program only when the change is
 * everywhere: a pointer it publishes afterwards is mapped on every node, and a window run
 * it unmapped is gone everywhere before it can be handed out again. A SPAWN holds the same
 * lock from its record's snapshot until the shadow attached (migrate.c), so no change falls
 * between the record and the first push. This covers the calls of home threads and those
 * an executor runs for an offloaded thread (exec_layout), whose own replay is then skipped
 * (q->pushed). The break needs nothing: its whole range is window memory from the start.
 *
 * Signals (docs/offload-threads.md section 5): a signal sent to the process while one of
 * its threads computes on another node is taken by that thread's executor instead of
 * interrupting it (executor.c, OFFLOAD_EXEC_SIGNALS) and pushed, with the handler as
 * installed at home, as a struct sig_push.
 *
 * Shadow side: an agent thread (every signal blocked, no SUD, on a stack inside the
 * shadow's private job region) loops on OFFLOAD_IOC_PUSH_WAIT -> check -> apply ->
 * OFFLOAD_IOC_PUSH_DONE. A layout change is replayed; replays are idempotent: mapping the
 * same window run again, or unmapping what is not mapped, changes nothing. A signal for a
 * thread that runs in this shadow gets the home's handler installed here, then is raised
 * in that thread (OFFLOAD_IOC_SIGNAL): the handler interrupts the thread where it runs, as
 * on one machine. Other shadows of the process ignore it.
 */
#include "shim.h"
#include <sched.h>
#include <fcntl.h>
#include <sys/mman.h>
#include "../kmod/offload_abi.h"

int shim_pushing;       /* home: a shadow exists somewhere: changes are pushed */
int shim_push_possible; /* home: OFFLOAD_ON or OFFLOAD_PLACE: changes take the push lock */
static int push_lock_word;


/* ---- the push lock (held across a change and its push; signals blocked) ---- */

void push_lock(uint64_t *saved)
{
    uint64_t all = ~0UL;
    sys4(SYS_rt_sigprocmask, SIG_SETMASK, &all, saved, KSIGSET_SIZE);
    while (__atomic_exchange_n(&push_lock_word, 1, __ATOMIC_ACQUIRE))
        sys0(SYS_sched_yield);
}

void push_unlock(const uint64_t *saved)
{
    __atomic_store_n(&push_lock_word, 0, __ATOMIC_RELEASE);
    sys4(SYS_rt_sigprocmask, SIG_SETMASK, saved, 0, KSIGSET_SIZE);
}

/* push_after_fork: the child is alone and has no shadows. */
void push_after_fork(void)
{
    push_lock_word = 0;
    shim_pushing = 0;
    shim_push_possible = 0;
}

/* layout_describe: q describes [lo, hi) as the table has it: the entries clipped to it, at
 * most LAYOUT_REPLY_MAX; with more, q->hi ends at the last one and q->more is set. Called
 * with the layout lock held. */
void layout_describe(struct layout_req *q, uint64_t lo, uint64_t hi)
{
    q->lo = lo;
    q->hi = hi;
    q->n = 0;
    q->more = 0;
    for (int i = layout_index(lo); i < shim_ntab && shim_tab[i].addr < hi; i++) {
        struct wmap e = shim_tab[i];
        if (q->n == LAYOUT_REPLY_MAX) {
            q->more = 1;
            q->hi = q->e[q->n - 1].addr + q->e[q->n - 1].len;
            return;
        }
        if (e.addr < lo) {
            if (e.kind == WM_WIN)
                e.off += lo - e.addr;
            e.len -= lo - e.addr;
            e.addr = lo;
        }
        if (e.addr + e.len > hi)
            e.len = hi - e.addr;
        q->e[q->n++] = e;
    }
}

/* push_range: [lo, hi) as it is now, to every shadow (push lock held), as the result of
 * call nr(a) (a replay treats the gaps by it). The driver kills the process when a shadow
 * could not apply it: nothing more to do here then. */
static void push_range(long nr, const long *a, uint64_t lo, uint64_t hi)
{
    static struct offload_push msg; /* the push lock serialises its users */
    struct layout_req *q = (struct layout_req *)msg.data;
    uint64_t saved;
    while (lo < hi) {
        shim_zero(&msg, sizeof msg);
        layout_lock(&saved);
        layout_describe(q, lo, hi);
        layout_unlock(&saved);
        q->nr = nr;
        shim_copy(q->args, a, sizeof q->args);
        msg.len = sizeof *q;
        if (sys3(SYS_ioctl, shim_win.fd, OFFLOAD_IOC_PUSH, &msg) < 0)
            return;
        lo = q->hi;
    }
}

/* A file mapping made at home that is not window memory (read-only, or shared): each node
 * maps the same file from its own identical image. */
#define FILE_PUSH_MARK 0x454c49464c4f4cL /* "LOLFILE" */
struct file_push {
    long mark;
    uint64_t addr, len, off;
    uint32_t prot, flags;
    char path[512];
};

static int ends_with(const char *s, size_t n, const char *tail)
{
    size_t k = shim_strlen(tail);
    if (n < k)
        return 0;
    for (size_t i = 0; i < k; i++)
        if (s[n - k + i] != tail[i])
            return 0;
    return 1;
}

/* push_file: the file mapping [addr, addr+len) that mmap(a) made (push lock held). A file
 * without a path (deleted, a memfd, a socket) or with a long one is not pushed: it stays
 * unmapped on the other nodes (docs/offload-threads.md, "Pushes to every shadow"). */
static void push_file(uint64_t addr, uint64_t len, const long *a)
{
    static struct offload_push msg;
    struct file_push *f = (struct file_push *)msg.data;
    char link[40] = "/proc/self/fd/";
    long n;
    shim_zero(&msg, sizeof msg);
    *shim_put_num(link + 14, (uint64_t)a[4]) = 0;
    n = sys4(SYS_readlinkat, -100 /* AT_FDCWD */, link, f->path, sizeof f->path - 1);
    if (n <= 0 || n >= (long)sizeof f->path - 1 || f->path[0] != '/' ||
        ends_with(f->path, (size_t)n, " (deleted)"))
        return;
    f->mark = FILE_PUSH_MARK;
    f->addr = addr;
    f->len = len;
    f->off = (uint64_t)a[5];
    f->prot = (uint32_t)a[2];
    f->flags = (uint32_t)a[3];
    msg.len = sizeof *f;
    sys3(SYS_ioctl, shim_win.fd, OFFLOAD_IOC_PUSH, &msg);
}

/* push_changed: the ranges call nr(a) with result r changed, pushed. */
static void push_changed(long nr, const long *a, long r)
{
    uint64_t lo = (uint64_t)a[0], len = pgup((uint64_t)a[1]);
    switch (nr) {
    case SYS_mmap:
        if ((a[3] & MAP_FIXED) && !(a[3] & MAP_FIXED_NOREPLACE))
            push_range(nr, a, lo, lo + len); /* even a failed one may have unmapped the range */
        else if (!is_err(r))
            push_range(nr, a, (uint64_t)r, (uint64_t)r + len);
        if (!is_err(r) && !(a[3] & MAP_ANONYMOUS) && a[4] >= 0 && !layout_is_window((uint64_t)r))
            push_file((uint64_t)r, len, a);
        return;
    case SYS_munmap:
        if (r == 0)
            push_range(nr, a, lo, lo + len);
        return;
    case SYS_mremap: {
        uint64_t nlen = pgup((uint64_t)a[2]);
        if (is_err(r))
            return;
        if ((uint64_t)r == lo) {
            push_range(nr, a, lo, lo + (nlen > len ? nlen : len));
        } else {
            push_range(nr, a, lo, lo + len);
            push_range(nr, a, (uint64_t)r, (uint64_t)r + nlen);
        }
        return;
    }
    default: /* mprotect, pkey_mprotect: a partial one (ENOMEM) changed a part */
        if (r == 0 || r == -12)
            push_range(nr, a, lo, lo + len);
        return;
    }
}

static long mem_call(long nr, const long *a)
{
    switch (nr) {
    case SYS_mmap: return mem_mmap(a);
    case SYS_munmap: return mem_munmap(a);
    case SYS_mremap: return mem_mremap(a);
    default: return mem_mprotect(nr, a);
    }
}

/* home_layout_call: mmap, munmap, mprotect, pkey_mprotect or mremap of a marked process at
 * home (a home thread's, or one an executor runs): the call, then its push. */
long home_layout_call(long nr, const long *a)
{
    uint64_t saved;
    long r;
    if (!shim_push_possible)
        return mem_call(nr, a);
    push_lock(&saved);
    r = mem_call(nr, a);
    if (shim_pushing)
        push_changed(nr, a, r);
    push_unlock(&saved);
    return r;
}

/* push_signal: p to every shadow (the one hosting p->home_tid raises it). */
void push_signal(const struct sig_push *p)
{
    struct offload_push msg;
    shim_zero(&msg, sizeof msg);
    msg.len = sizeof *p;
    shim_copy(msg.data, p, sizeof *p);
    sys3(SYS_ioctl, shim_win.fd, OFFLOAD_IOC_PUSH, &msg);
}

/* ---- shadow side: the agent ---- */

/* shim_map_file: [addr, addr+len) of this node's copy of path (offset off, prot), private;
 * MAP_FIXED, or MAP_FIXED_NOREPLACE with noreplace. 0 or -errno. */
long shim_map_file(const char *path, uint64_t addr, uint64_t len, uint32_t prot, uint64_t off,
                   int noreplace)
{
    long fd = sys4(SYS_openat, -100 /* AT_FDCWD */, path, O_RDONLY | O_CLOEXEC_, 0), r = fd;
    if (fd >= 0) {
        r = shim_sys6(SYS_mmap, (long)addr, (long)len, prot,
                      MAP_PRIVATE | (noreplace ? MAP_FIXED_NOREPLACE : MAP_FIXED), fd, (long)off);
        sys1(SYS_close, fd);
    }
    return is_err(r) ? r : 0;
}

/* agent_file: a file mapping made at home, made here from this node's copy of the file.
 * One that cannot be made is logged and left unmapped (a thread here that touches it gets
 * SIGSEGV); a shared writable one cannot be coherent between nodes and is left too. */
static long agent_file(const struct offload_push *m)
{
    const struct file_push *f = (const struct file_push *)m->data;
    if (m->len != sizeof *f || f->path[sizeof f->path - 1] || !f->len ||
        ((f->addr | f->len) & (PAGE - 1)))
        return -22;
    if ((f->flags & MAP_TYPE) != MAP_PRIVATE && (f->prot & PROT_WRITE)) {
        shim_say_kmsg("offload-shim: shadow: a shared writable file mapping is not made here:");
        shim_say_kmsg(f->path);
        return 0;
    }
    if (shim_map_file(f->path, f->addr, f->len, f->prot, f->off, 0) < 0) {
        shim_say_kmsg("offload-shim: shadow: cannot map a file the home mapped:");
        shim_say_kmsg(f->path);
    }
    return 0;
}

/* agent_signal: a pushed signal; raised here if its thread is one of ours. */
static long agent_signal(const struct offload_push *m)
{
    const struct sig_push *p = (const struct sig_push *)m->data;
    struct offload_signal s;
    long tid;
    if (m->len != sizeof *p || p->signo < 1 || p->signo > 64 || p->signo == SIGSYS ||
        p->signo == SIGKILL || p->signo == SIGSTOP)
        return -22;
    tid = shadow_tid_of(p->home_tid);
    if (tid <= 0)
        return 0; /* not a thread of this shadow */
    if (sys4(SYS_rt_sigaction, p->signo, &p->act, 0, KSIGSET_SIZE) < 0)
        return -22;
    s.tid = (uint32_t)tid;
    s.signo = p->signo;
    shim_copy(s.info, p->info, sizeof s.info);
    return sys3(SYS_ioctl, shim_win.fd, OFFLOAD_IOC_SIGNAL, &s);
}

/* req_ok: a pushed change is well formed: sorted, disjoint entries inside [lo, hi). */
static int req_ok(const struct offload_push *m)
{
    const struct layout_req *q = (const struct layout_req *)m->data;
    uint64_t x;
    if (m->len != sizeof *q || q->n > LAYOUT_REPLY_MAX || q->lo > q->hi ||
        (q->lo | q->hi) & (PAGE - 1))
        return 0;
    x = q->lo;
    for (uint32_t i = 0; i < q->n; i++) {
        const struct wmap *e = &q->e[i];
        if (e->addr < x || !e->len || e->addr + e->len > q->hi ||
            ((e->addr | e->len | e->off) & (PAGE - 1)) ||
            (e->kind != WM_WIN && e->kind != WM_PENDING))
            return 0;
        x = e->addr + e->len;
    }
    return 1;
}

static struct offload_push agent_msg; /* the agent's alone */

static void agent_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct offload_push_done d = {0, 0, 0};
        long r;
        agent_msg.flags = 0;
        r = sys3(SYS_ioctl, shim_win.fd, OFFLOAD_IOC_PUSH_WAIT, &agent_msg);
        if (r == -4 || r == -11)
            continue;
        if (r < 0) {
            shim_say_kmsg("offload-shim: shadow: layout agent stops (PUSH_WAIT failed)\n");
            sys1(SYS_exit, 0);
        }
        d.id = agent_msg.id;
        if (agent_msg.len >= 8 && *(const long *)agent_msg.data == SIG_PUSH_MARK)
            d.status = (int32_t)agent_signal(&agent_msg);
        else if (agent_msg.len >= 8 && *(const long *)agent_msg.data == FILE_PUSH_MARK)
            d.status = (int32_t)agent_file(&agent_msg);
        else if (req_ok(&agent_msg))
            layout_replay((const struct layout_req *)agent_msg.data);
        else
            d.status = -22;
        sys3(SYS_ioctl, shim_win.fd, OFFLOAD_IOC_PUSH_DONE, &d);
    }
}

/* push_agent_start: the shadow's agent thread on [stack_lo, stack_hi) (private memory
 * no window mapping covers). Every signal is blocked in it; it never touches TLS. */
int push_agent_start(char *stack_lo, char *stack_hi)
{
    uint64_t all = ~0UL, saved;
    long t;
    (void)stack_lo;
    sys4(SYS_rt_sigprocmask, SIG_SETMASK, &all, &saved, KSIGSET_SIZE);
    t = shim_thread_start(CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
                              CLONE_SYSVSEM,
                          stack_hi, 0, agent_main, 0);
    sys4(SYS_rt_sigprocmask, SIG_SETMASK, &saved, 0, KSIGSET_SIZE);
    return t < 0 ? (int)t : 0;
}
