/*
 * shadow.c: the shadow side of a moved thread (docs/offload-threads.md section 3).
 * `offload shadow` execs the home's program (same image, same addresses: no ASLR) with
 * OFFLOAD_SHADOW=NODE:PID:TID:REC_OFF:REC_LEN and OFFLOAD_FD=n (its /dev/offload file,
 * attached). The constructor here:
 *  1. maps the record, checks that every FILE mapping of the home is here at the same
 *     address (path, offset, prot), mapping from this node's copy those the home made at
 *     run time where nothing of ours is: else the image differs and nothing can be resumed
 *     (status 127; the driver tells the home, which ends the process);
 *  2. copies what it still needs (context, maps) into a private region that no window
 *     mapping will cover, and continues on that region as its stack;
 *  3. maps every WIN region MAP_FIXED|MAP_SHARED over its own memory (data, bss, heap,
 *     stack, TLS: from now on the home's bytes), reserves the PENDING ones, rebuilds the
 *     table, sets FS base, arms SUD in "offloaded" mode;
 *  4. issues OFFLOAD_SYS_RESUME: its SIGSYS ucontext is overwritten with the home's
 *     (registers, FPU/xsave state, mask) and the handler returns into the home's thread,
 *     right after its migrate trap, with rax = 0.
 * Offloaded routing (offloaded_call): HOME calls go to the thread's executor
 * (OFFLOAD_IOC_SYSCALL to shim_self.home_tid: per thread, in its TLS), LOCAL ones run
 * here, LAYOUT ones run at home and are replayed here from the table entries the executor
 * sends back; clone of a thread makes its executor at home first (OFFLOAD_SYS_NEWEXEC,
 * clone.c), fork makes the child at home (OFFLOAD_SYS_FORK, shadow_fork_home); exit ends
 * the executor, which clears the thread's CLEARTID word at home. Messages of a shadow go to
 * /dev/kmsg as well (its stderr is /dev/null). With a fake window (the native migration test) there is
 * no home to forward to: the process is marked and runs everything itself.
 */
#include "shim.h"
#include <fcntl.h>
#include <sys/mman.h>
#include "record.h"
#include "route.h"
#include "../kmod/offload_abi.h"

int shim_offloaded;
int shim_resumed;          /* this process resumed a home's thread (stats line) */
uint64_t shim_job_lo, shim_job_hi; /* the private job region (not "left outside the window") */
static uint32_t home_node, home_tid; /* home_tid: the main (first) thread's executor */

#define JOB_SIZE (4UL << 20)
#define JOB_MAPS_MAX 8192
/* The layout agent's stack inside the job region: above the job, below shadow_finish's. */
#define AGENT_LO (1UL << 20)
#define AGENT_HI (2UL << 20)

/* Everything the restore needs, in private memory that no window mapping covers. */
struct shadow_job {
    struct rec_ctx ctx;
    uint32_t n;
    struct rec_map maps[JOB_MAPS_MAX];
};
_Static_assert(sizeof(struct shadow_job) <= AGENT_LO, "the job overlaps the agent's stack");
static int program_threads; /* threads of the program here (the agent is not one) */

/* Which local thread runs which home thread (home tid: the executor's, the program's). */
#define TIDS_MAX 1024
static struct { long home, local; } tids[TIDS_MAX];

void shadow_tid_add(long home_tid, long tid)
{
    for (int i = 0; i < TIDS_MAX; i++) {
        long free_ = 0;
        if (__atomic_compare_exchange_n(&tids[i].home, &free_, -1, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST)) {
            __atomic_store_n(&tids[i].local, tid, __ATOMIC_SEQ_CST);
            __atomic_store_n(&tids[i].home, home_tid, __ATOMIC_SEQ_CST);
            return;
        }
    }
}

void shadow_tid_drop(long home_tid)
{
    for (int i = 0; i < TIDS_MAX; i++)
        if (__atomic_load_n(&tids[i].home, __ATOMIC_SEQ_CST) == home_tid)
            __atomic_store_n(&tids[i].home, 0, __ATOMIC_SEQ_CST);
}

/* shadow_tid_of: the local tid of home_tid, or 0 if it does not run here. */
long shadow_tid_of(long home_tid)
{
    for (int i = 0; i < TIDS_MAX; i++)
        if (home_tid > 0 && __atomic_load_n(&tids[i].home, __ATOMIC_SEQ_CST) == home_tid)
            return __atomic_load_n(&tids[i].local, __ATOMIC_SEQ_CST);
    return 0;
}

/* shadow_threads_add: n more (or fewer) threads of the program run here. The agent keeps
 * the process alive: when the last program thread is gone the shadow ends. */
void shadow_threads_add(int n)
{
    if (!__atomic_add_fetch(&program_threads, n, __ATOMIC_SEQ_CST))
        sys1(SYS_exit_group, 0);
}


/* die: stderr is /dev/null in a shadow (offload shadow redirects it): the kernel log too. */
static void die(const char *msg)
{
    shim_say_kmsg(msg);
    sys1(SYS_exit_group, 127);
}

/* parse_u: a decimal field up to ':' or the end; *p moves past it. */
static uint64_t parse_u(const char **p)
{
    uint64_t v = 0;
    while (**p >= '0' && **p <= '9')
        v = v * 10 + (uint64_t)(*(*p)++ - '0');
    if (**p == ':')
        (*p)++;
    return v;
}

static struct pmap here[2048];

/* free_here: nothing of this process is mapped in [lo, hi) (here[0..n)). */
static int free_here(int n, uint64_t lo, uint64_t hi)
{
    for (int k = 0; k < n; k++)
        if (here[k].lo < hi && here[k].hi > lo)
            return 0;
    return 1;
}

/* files_match: every FILE entry of the record is mapped here identically (the program and
 * the libraries ld.so loaded), or, where nothing is mapped here, is mapped now from this
 * node's copy of the file: a file the home mapped at run time (a locale archive, a library
 * loaded with dlopen, a data file) before the thread moved. */
static int files_match(const char *rec, uint64_t len, const struct rec_view *v)
{
    int n = procmaps_read(here, 2048);
    for (uint32_t i = 0; i < v->n_maps; i++) {
        const struct rec_map *m = &v->maps[i];
        const char *path = rec_map_path(rec, len, m);
        int ok = m->kind != REC_FILE;
        for (int k = 0; k < n && !ok; k++)
            ok = here[k].lo == m->addr && here[k].hi == m->addr + m->len &&
                 here[k].off == m->off && here[k].prot == m->prot && path_is(here[k].path, path);
        if (!ok && free_here(n, m->addr, m->addr + m->len))
            ok = shim_map_file(path, m->addr, m->len, m->prot, m->off, 1) == 0;
        if (!ok) {
            shim_say_kmsg("offload-shim: shadow: file mapping differs from the home's:");
            shim_say_kmsg(rec_map_path(rec, len, m));
            return 0;
        }
    }
    return 1;
}

static int overlaps(const struct rec_view *v, uint64_t lo, uint64_t hi)
{
    for (uint32_t i = 0; i < v->n_maps; i++)
        if (v->maps[i].kind != REC_FILE && v->maps[i].addr < hi &&
            v->maps[i].addr + v->maps[i].len > lo)
            return 1;
    return 0;
}

/* job_region: private memory outside every WIN/PENDING range of the record. */
static struct shadow_job *job_region(const struct rec_view *v)
{
    uint64_t hint = 0x100000000000UL;
    for (int tries = 0; tries < 64; tries++, hint += 0x10000000000UL) {
        long p = shim_sys6(SYS_mmap, (long)hint, JOB_SIZE, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (is_err(p))
            return 0;
        if (!overlaps(v, (uint64_t)p, (uint64_t)p + JOB_SIZE))
            return (struct shadow_job *)p;
        sys2(SYS_munmap, p, JOB_SIZE);
    }
    return 0;
}

/* map_regions: the home's memory over ours; the table becomes the home's. Runs on the
 * job region's stack: our own stack is one of the regions replaced. */
static void map_regions(struct shadow_job *j)
{
    layout_clear();
    for (uint32_t i = 0; i < j->n; i++) {
        const struct rec_map *m = &j->maps[i];
        long r = 0;
        if (m->kind == REC_WIN) {
            r = win_map(m->addr, m->len, (int)m->prot, m->off, MAP_FIXED);
            win_fake_reserve(m->off, m->len / PAGE);
            tab_add(m->addr, m->len, m->off, (int)m->prot, WM_WIN);
        } else if (m->kind == REC_PENDING) {
            r = shim_sys6(SYS_mmap, (long)m->addr, (long)m->len, (long)m->prot,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
            tab_add(m->addr, m->len, 0, (int)m->prot, WM_PENDING);
        }
        if (is_err(r))
            die("offload-shim: shadow: cannot map a window region\n");
    }
    shim_brk = (struct brk_state){.lo = j->ctx.brk_lo, .hi = j->ctx.brk_hi,
                                  .cur = j->ctx.brk_cur, .on = j->ctx.brk_hi != 0};
}

/* shadow_finish: on the job region's stack; never returns (RESUME trap). */
static void shadow_finish(void *arg)
{
    struct shadow_job *j = arg;
    char *alt;
    int slot;
    map_regions(j);
    sys2(SYS_arch_prctl, 0x1002 /* ARCH_SET_FS */, j->ctx.fs_base);
    shim_self.home_tid = home_tid; /* the thread's TLS is the home's from here on */
    sigs_init();
    slot = altstack_alloc(&alt);
    if (!alt || altstack_install(alt) < 0)
        die("offload-shim: shadow: no signal stack\n");
    shim_self.slot = slot;
    altstack_set_owner(slot, (int)sys0(SYS_getpid), (int)sys0(SYS_gettid));
    if (!shim_win.fake && push_agent_start((char *)j + AGENT_LO, (char *)j + AGENT_HI) < 0)
        die("offload-shim: shadow: cannot start the layout agent\n");
    shadow_threads_add(1);
    shadow_tid_add(home_tid, sys0(SYS_gettid));
    if (shim_arm_thread() < 0)
        die("offload-shim: shadow: cannot arm syscall user dispatch\n");
    shim_trap(OFFLOAD_SYS_RESUME, (long)&j->ctx);
    die("offload-shim: shadow: resume failed\n");
}

/* shadow_resume: in the handler of the RESUME trap: the frame becomes the context a[0]
 * (a struct rec_ctx: a shadow's job, or the thread context a fork child at home resumes). */
void shadow_resume(ucontext_t *uc, const long *a)
{
    const struct rec_ctx *c = (const struct rec_ctx *)a[0];
    uint8_t *fp = (uint8_t *)uc->uc_mcontext.fpregs;
    uint32_t ext = frame_fp_size(uc);
    uint64_t mask = c->sigmask & ~SIGBIT(SIGSYS);
    shim_copy(uc->uc_mcontext.gregs, c->gregs, sizeof c->gregs);
    shim_copy(&uc->uc_sigmask, &mask, 8);
    if (!fp)
        return;
    if (c->fp_size == ext) { /* same CPU features: the whole image */
        shim_copy(fp, c->fp, ext);
        return;
    }
    shim_copy(fp, c->fp, 464); /* the legacy fxsave part, then x87+SSE in use */
    if (ext > 512)
        fp[512] |= 3;
}

/* open_window: the fake file of the native test, or the inherited OFFLOAD_FD. */
static int open_window(char **envp)
{
    struct offload_window_info wi;
    const char *fd = shim_getenv(envp, "OFFLOAD_FD");
    long n;
    if (shim_getenv(envp, "OFFLOAD_SHIM_FAKE_WINDOW"))
        return win_open(envp);
    if (!fd)
        return -9;
    n = (long)parse_u(&fd);
    if (sys3(SYS_ioctl, n, OFFLOAD_IOC_WINDOW_INFO, &wi) < 0)
        return -9;
    win_adopt_fd((int)n, 0, wi.size);
    shim_win.node = wi.node_index;
    return 0;
}

/* shadow_start: the constructor in shadow mode; returns only on failure (< 0). */
int shadow_start(char **envp)
{
    const char *s = shim_getenv(envp, "OFFLOAD_SHADOW");
    uint64_t off, len;
    struct rec_view v;
    struct shadow_job *j;
    long rec;
    home_node = (uint32_t)parse_u(&s);
    parse_u(&s); /* home pid: the driver's business (attach) */
    home_tid = (uint32_t)parse_u(&s);
    off = parse_u(&s);
    len = parse_u(&s);
    if (open_window(envp) < 0)
        die("offload-shim: shadow: no window\n");
    rec = win_map(0, pgup(len), PROT_READ, off, 0);
    if (is_err(rec) || rec_decode((const char *)rec, len, &v) < 0)
        die("offload-shim: shadow: bad spawn record\n");
    if (!files_match((const char *)rec, len, &v) || v.n_maps > JOB_MAPS_MAX ||
        !(j = job_region(&v)))
        die("offload-shim: shadow: cannot resume here\n");
    shim_copy(&j->ctx, v.ctx, sizeof j->ctx);
    j->n = v.n_maps;
    shim_copy(j->maps, v.maps, v.n_maps * sizeof(struct rec_map));
    sys2(SYS_munmap, rec, pgup(len));
    win_fake_reserve(off, pgup(len) / PAGE);
    shim_marked = 1;
    shim_resumed = 1;
    shim_job_lo = (uint64_t)j;
    shim_job_hi = (uint64_t)j + JOB_SIZE;
    shim_offloaded = !shim_win.fake; /* fake: no home to forward to, run as marked */
    shim_on_stack((char *)j + JOB_SIZE, shadow_finish, j);
    return -1;
}

/* ---- offloaded routing ---- */

/* home_lost: the home is gone or refuses us: the thread cannot go on (decision 7). stderr
 * is at home, so the message goes to the kernel log. */
static void home_lost(long err)
{
    (void)err;
    shim_say_kmsg("offload-shim: shadow: home unreachable, killing the shadow\n");
    sys2(SYS_kill, sys0(SYS_getpid), SIGKILL);
}

/* forward_raw: nr(a) run by executor tid at home; the ioctl's error in *err. */
static long forward_raw(long tid, long nr, const long *a, long *err)
{
    struct offload_syscall s = {.node = home_node, .tid = (uint32_t)tid, .nr = (uint64_t)nr};
    shim_copy(s.args, a, sizeof s.args);
    *err = sys3(SYS_ioctl, shim_win.fd, OFFLOAD_IOC_SYSCALL, &s);
    return s.ret;
}

/* forward_to: the same; no answer means the home is lost. */
static long forward_to(long tid, long nr, const long *a)
{
    long err, r = forward_raw(tid, nr, a, &err);
    if (err < 0)
        home_lost(err);
    return r;
}

/* forward: by this thread's executor. */
static long forward(long nr, const long *a)
{
    return forward_to(shim_self.home_tid, nr, a);
}

/* shadow_newexec: a new thread's executor at home (its TLS is tls): its tid or -errno. */
long shadow_newexec(long tls)
{
    long a[6] = {tls, 0, 0, 0, 0, 0};
    return forward(OFFLOAD_SYS_NEWEXEC, a);
}

/* shadow_end_exec: the thread that executor tid was made for never started: end it. */
long shadow_end_exec(long tid)
{
    long a[6] = {0, 0, 0, 0, 0, 0};
    return forward_to(tid, SYS_exit, a);
}

/* shadow_fork_home: fork, vfork, or a clone that is not a thread, by a thread running
 * here: the child is made at home (the process's children, fds, pids are there). The
 * thread's context goes below its stack's red zone (window memory: the executor and the
 * child read it there); flags keep the exit signal and the tid words; sp: the child's
 * stack if it gets one (posix_spawn's). Returns the child's pid, or -errno. */
long shadow_fork_home(const ucontext_t *uc, long flags, long ptid, long ctid, long sp)
{
    uint64_t at = ((uint64_t)uc->uc_mcontext.gregs[REG_RSP] - 128 - sizeof(struct rec_ctx)) &
                  ~(uint64_t)63;
    struct rec_ctx *c = (struct rec_ctx *)at;
    long a[6] = {(long)at, flags, ptid, ctid, 0, 0};
    if (!layout_is_window(at) || !layout_is_window(at + sizeof *c - 1))
        return -12; /* ENOMEM: no window stack below the thread's (documented) */
    migrate_capture(c, uc);
    if (sp)
        c->gregs[REG_RSP] = (uint64_t)sp;
    return forward(OFFLOAD_SYS_FORK, a);
}

/* shadow_thread_exit: the executor ends too, and clears and wakes the thread's
 * CLONE_CHILD_CLEARTID word at home, where its joiners wait. Nothing of the thread's
 * memory (TLS, stack) is touched once the exit is forwarded: the joiner may free it. */
long shadow_thread_exit(const long *a)
{
    int slot = shim_self.slot;
    shadow_tid_drop(shim_self.home_tid);
    forward(SYS_exit, a);
    shadow_threads_add(-1);
    return thread_exit_as(a[0], slot, 0);
}

/* replay_gap: [lo, hi) holds no window memory at home after call q->nr: an mprotect
 * changed the protection of what is there (a file mapping of the identical image); after
 * any other call nothing is there. */
static void replay_gap(const struct layout_req *q, uint64_t lo, uint64_t hi)
{
    if (q->nr == SYS_mprotect || q->nr == SYS_pkey_mprotect)
        sys3(SYS_mprotect, lo, hi - lo, q->args[2]);
    else
        sys2(SYS_munmap, lo, hi - lo);
}

/* layout_replay: make [lo, hi) here what the home says it is (an executor's reply, or a
 * change pushed to the agent, push.c). */
void layout_replay(const struct layout_req *q)
{
    uint64_t saved, x = q->lo;
    layout_lock(&saved);
    tab_cut(q->lo, q->hi);
    for (uint32_t i = 0; i < q->n; i++) {
        const struct wmap *e = &q->e[i];
        if (e->addr > x)
            replay_gap(q, x, e->addr);
        if (e->kind == WM_WIN)
            win_map(e->addr, e->len, (int)e->prot, e->off, MAP_FIXED);
        else
            shim_sys6(SYS_mmap, (long)e->addr, (long)e->len, e->prot,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
        tab_add(e->addr, e->len, e->off, (int)e->prot, (int)e->kind);
        x = e->addr + e->len;
    }
    if (!q->more && x < q->hi)
        replay_gap(q, x, q->hi);
    layout_unlock(&saved);
}

/* layout_range: the range a LAYOUT call changes (an mmap's: set by the executor). */
static void layout_range(long nr, const long *a, struct layout_req *q)
{
    q->lo = (uint64_t)a[0];
    q->hi = q->lo + pgup((uint64_t)a[1]);
    if (nr == SYS_mremap) {
        q->hi = q->lo + pgup((uint64_t)(a[2] > a[1] ? a[2] : a[1]));
    } else if (nr == SYS_brk) {
        q->lo = shim_brk.lo;
        q->hi = shim_brk.hi;
    }
}

/* forward_layout: run at home, then replay here. The request lives in the thread's TLS
 * (window memory: the executor reads and writes it in place). */
static __thread struct layout_req layout_q __attribute__((tls_model("initial-exec")));

static long forward_layout(long nr, const long *a)
{
    struct layout_req *q = &layout_q;
    long fa[6] = {nr, (long)q, 0, 0, 0, 0}, r;
    q->nr = nr;
    shim_copy(q->args, a, sizeof q->args);
    layout_range(nr, a, q);
    q->pushed = 0;
    r = forward(OFFLOAD_SYS_LAYOUT, fa); /* the executor sets lo/hi of an mmap */
    if (!q->pushed) /* else the agent applied it before the call returned */
        layout_replay(q);
    return r;
}

/* offloaded_call: the routing of a thread running away from home; *handled = 0 leaves
 * the call to the ordinary (local) dispatch. */
long offloaded_call(long nr, const long *a, ucontext_t *uc, int *handled)
{
    (void)uc;
    *handled = 1;
    switch (nr) {
    case SYS_exit:
        return shadow_thread_exit(a);
    case SYS_exit_group: {
        long err; /* the home exits (no answer comes: its executor is gone); we too */
        forward_raw(shim_self.home_tid, nr, a, &err);
        return sys1(SYS_exit_group, a[0]);
    }
    case SYS_clone:
    case SYS_clone3:
    case SYS_fork:
    case SYS_vfork:
        *handled = 0; /* clone.c: the executor at home first, or the fork at home */
        return 0;
    case SYS_rt_sigprocmask:
        /* The mask lives in two places: here (signals raised on this node) and in the
         * executor at home, where signals sent to the process arrive: set both. */
        forward(nr, a);
        *handled = 0;
        return 0;
    case SYS_sigaltstack:
    case SYS_rt_sigreturn:
        *handled = 0; /* the thread's own mask and stacks: here */
        return 0;
    }
    switch (offload_route(nr)) {
    case OFFLOAD_LOCAL:
        *handled = 0;
        return 0;
    case OFFLOAD_LAYOUT:
        return forward_layout(nr, a);
    default:
        return forward(nr, a);
    }
}
