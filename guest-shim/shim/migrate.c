/*
 * migrate.c: moving a thread away from home, home side (docs/offload-threads.md section 3
 * and "Interfaces for migration and shadows (v1)").
 *  - The constructor of a process started with OFFLOAD_ON=NODE (after its memory is in the
 *    window) issues the private, always-trapped call OFFLOAD_SYS_MIGRATE: the SIGSYS
 *    ucontext then holds the thread's whole user state.
 *  - migrate_trap (in the handler, on the thread's private altstack) captures it (general
 *    registers with rax = 0, FS base, signal mask, the FPU state as the kernel saved it,
 *    xsave area included), writes the spawn record (record.h) into fresh window pages,
 *    registers the thread as the executor of its tid (EXEC_WAIT with O_NONBLOCK), asks
 *    the driver for a shadow (OFFLOAD_IOC_SPAWN) and becomes the executor: EXEC_WAIT ->
 *    run the call here -> EXEC_DONE, for ever. The thread's own code never runs here again.
 *  - Test mode (OFFLOAD_SHIM_MIGRATE_TEST=1 with a fake window file): instead of SPAWN the
 *    process execs itself with OFFLOAD_SHADOW set, i.e. "migrates to itself": the exec'd
 *    image restores the context (shadow.c). This is the native end-to-end test of capture,
 *    record and restore (tests/run-tests.sh, t_migrate).
 */
#include "shim.h"
#include <fcntl.h>
#include <sys/mman.h>
#include "record.h"
#include "route.h"
#include "../kmod/offload_abi.h"


#define REC_MAPS_MAX 4096
static struct rec_map rmaps[REC_MAPS_MAX];
static const char *rpaths[REC_MAPS_MAX];
static struct pmap rpm[2048];
static char exe[4096];
static struct rec_ctx ctx;
static long target_node = -1;

static int is_err(long r) { return r < 0 && r > -4096; }
static uint64_t pgup(uint64_t x) { return (x + PAGE - 1) & ~(uint64_t)(PAGE - 1); }

/* capture: the trap-time context; rax = 0 is what the migrate call returns over there. */
static void capture(struct rec_ctx *c, const ucontext_t *uc)
{
    const uint8_t *fp = (const uint8_t *)uc->uc_mcontext.fpregs;
    uint32_t magic = 0, ext = 512;
    shim_zero(c, sizeof *c);
    c->magic = REC_CTX_MAGIC;
    shim_copy(c->gregs, uc->uc_mcontext.gregs, sizeof c->gregs);
    c->gregs[REG_RAX] = 0;
    sys2(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, &c->fs_base);
    shim_copy(&c->sigmask, &uc->uc_sigmask, 8);
    if (fp) {
        shim_copy(&magic, fp + 464, 4); /* fx_sw_reserved: magic1, extended_size */
        if (magic == 0x46505853U)
            shim_copy(&ext, fp + 468, 4);
        c->fp_size = ext > REC_FP_MAX ? 512 : ext;
        shim_copy(c->fp, fp, c->fp_size);
    }
    c->brk_lo = shim_brk.lo;
    c->brk_hi = shim_brk.hi;
    c->brk_cur = shim_brk.cur;
}

static int in_table(uint64_t lo, uint64_t hi)
{
    for (int i = 0; i < shim_ntab; i++)
        if (shim_tab[i].addr < hi && shim_tab[i].addr + shim_tab[i].len > lo)
            return 1;
    return 0;
}

/* collect_maps: the table (WIN, PENDING), then every file mapping outside it (FILE: the
 * shadow must have it at the same place, from its identical image). Lock held. */
static uint32_t collect_maps(void)
{
    uint32_t n = 0;
    int np;
    for (int i = 0; i < shim_ntab && n < REC_MAPS_MAX; i++, n++)
        rmaps[n] = (struct rec_map){.addr = shim_tab[i].addr, .len = shim_tab[i].len,
                                    .off = shim_tab[i].off, .prot = shim_tab[i].prot,
                                    .kind = shim_tab[i].kind == WM_WIN ? REC_WIN : REC_PENDING};
    np = procmaps_read(rpm, 2048);
    for (int i = 0; i < np && n < REC_MAPS_MAX; i++) {
        if (rpm[i].path[0] != '/' || in_table(rpm[i].lo, rpm[i].hi))
            continue;
        rmaps[n] = (struct rec_map){.addr = rpm[i].lo, .len = rpm[i].hi - rpm[i].lo,
                                    .off = rpm[i].off, .prot = rpm[i].prot,
                                    .kind = REC_FILE, .inode = rpm[i].inode};
        rpaths[n++] = rpm[i].path;
    }
    return n;
}

static uint32_t count_env(char **envp)
{
    uint32_t n = 0;
    while (envp && envp[n])
        n++;
    return n;
}

/* write_record: the record in fresh window pages; *off, *len. Lock held. */
static long write_record(uint64_t *off, uint64_t *len)
{
    struct rec_view v = {.exe = exe, .n_env = count_env(shim_envp),
                         .env = (const char *const *)shim_envp, .maps = rmaps,
                         .paths = rpaths, .ctx = &ctx};
    long o, tmp, r;
    v.n_maps = collect_maps();
    *len = rec_size(&v);
    o = win_alloc(pgup(*len) / PAGE);
    if (o < 0)
        return o;
    tmp = win_map(0, pgup(*len), PROT_READ | PROT_WRITE, (uint64_t)o, 0);
    if (is_err(tmp))
        return tmp;
    r = rec_encode((char *)tmp, pgup(*len), &v) ? 0 : -12;
    sys2(SYS_munmap, tmp, pgup(*len));
    *off = (uint64_t)o;
    return r;
}

/* ---- test mode: migrate to ourselves through exec ---- */

static char *put_num(char *p, uint64_t v)
{
    char d[24];
    int n = 0;
    do
        d[n++] = (char)('0' + v % 10);
    while ((v /= 10));
    while (n)
        *p++ = d[--n];
    return p;
}

static char shadow_var[128];
static char *new_env[1024];

static long exec_self(uint64_t off, uint64_t len)
{
    char *p = shadow_var;
    uint32_t n = 0;
    const char *pre = "OFFLOAD_SHADOW=";
    while (*pre)
        *p++ = *pre++;
    p = put_num(p, shim_win.node);
    *p++ = ':';
    p = put_num(p, (uint64_t)sys0(SYS_getpid));
    *p++ = ':';
    p = put_num(p, (uint64_t)sys0(SYS_gettid));
    *p++ = ':';
    p = put_num(p, off);
    *p++ = ':';
    p = put_num(p, len);
    *p = 0;
    for (char **e = shim_envp; e && *e && n < 1022; e++)
        new_env[n++] = *e;
    new_env[n++] = shadow_var;
    new_env[n] = 0;
    return sys3(SYS_execve, "/proc/self/exe", shim_argv, new_env);
}

/* ---- the executor ---- */

/* layout_replay: a LAYOUT call of the remote thread, run here (the home decides
 * addresses and window runs), then the table entries of the affected range for it to
 * replay. */
static long layout_replay(struct layout_req *q, ucontext_t *uc)
{
    long r = shim_dispatch(q->nr, q->args, uc);
    uint64_t saved;
    if (q->nr == SYS_mmap && !is_err(r)) { /* the address is the home's choice */
        q->lo = (uint64_t)r;
        q->hi = q->lo + pgup((uint64_t)q->args[1]);
    }
    layout_lock(&saved);
    q->n = 0;
    q->more = 0;
    for (int i = layout_index(q->lo); i < shim_ntab && shim_tab[i].addr < q->hi; i++) {
        if (q->n == LAYOUT_REPLY_MAX) {
            q->more = 1;
            break;
        }
        q->e[q->n++] = shim_tab[i];
    }
    layout_unlock(&saved);
    return r;
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

/* exec_one: one forwarded call. exit and exit_group end the executor the way they end the
 * remote thread (the caller has returned from EXEC_DONE by then, or never needs it). */
static long exec_one(int fd, const struct offload_exec_call *c, ucontext_t *uc)
{
    long a[6];
    shim_copy(a, c->args, sizeof a);
    switch ((long)c->nr) {
    case SYS_exit: {
        struct offload_exec_done d = {.token = c->token, .ret = 0};
        sys3(SYS_ioctl, fd, OFFLOAD_IOC_EXEC_DONE, &d);
        return thread_exit_trap(a);
    }
    case SYS_exit_group:
        stats_write("exit_group");
        return sys1(SYS_exit_group, a[0]);
    case OFFLOAD_SYS_LAYOUT:
        return layout_replay((struct layout_req *)a[1], uc);
    case SYS_rt_sigprocmask:
        return exec_sigprocmask(a);
    case SYS_clone:
    case SYS_clone3:
    case SYS_fork:
    case SYS_vfork:
        return -38; /* ENOSYS: new threads/processes of an offloaded thread: not yet */
    }
    return shim_dispatch((long)c->nr, a, uc);
}

static void executor_loop(int fd, ucontext_t *uc)
{
    struct offload_exec_call c;
    for (;;) {
        long r = sys3(SYS_ioctl, fd, OFFLOAD_IOC_EXEC_WAIT, &c);
        struct offload_exec_done d;
        if (r == -4)
            continue;
        if (r < 0) {
            shim_say("offload-shim: executor: EXEC_WAIT failed; exiting\n");
            sys1(SYS_exit_group, 1);
        }
        d = (struct offload_exec_done){.token = c.token, .ret = exec_one(fd, &c, uc)};
        sys3(SYS_ioctl, fd, OFFLOAD_IOC_EXEC_DONE, &d);
    }
}

/* spawn_and_serve: register as executor, SPAWN, serve. Returns only on failure. */
static long spawn_and_serve(uint64_t off, uint64_t len, ucontext_t *uc)
{
    struct offload_exec_call c;
    struct offload_spawn s = {.node = (__u32)target_node, .rec_off = off, .rec_len = len};
    long fd = sys4(SYS_openat, AT_FDCWD, "/dev/offload", O_RDWR | O_CLOEXEC | O_NONBLOCK, 0);
    long r;
    if (fd < 0)
        return fd;
    r = sys3(SYS_ioctl, fd, OFFLOAD_IOC_EXEC_WAIT, &c); /* registers; -EAGAIN expected */
    if (r != -11 && r < 0)
        return r;
    r = sys3(SYS_ioctl, fd, OFFLOAD_IOC_SPAWN, &s);
    if (r < 0)
        return r;
    sys3(SYS_fcntl, fd, F_SETFL, O_RDWR); /* blocking EXEC_WAIT from now on */
    executor_loop((int)fd, uc);
    return 0;
}

long migrate_trap(const long *a, ucontext_t *uc)
{
    uint64_t saved, off = 0, len = 0;
    long r, n;
    (void)a;
    if (!shim_marked || target_node < 0)
        return -22;
    capture(&ctx, uc);
    n = sys4(SYS_readlinkat, AT_FDCWD, "/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    layout_lock(&saved);
    r = write_record(&off, &len);
    layout_unlock(&saved);
    if (r < 0)
        return r;
    if (shim_getenv(shim_envp, "OFFLOAD_SHIM_MIGRATE_TEST"))
        return exec_self(off, len);
    return spawn_and_serve(off, len, uc);
}

/* node_index: OFFLOAD_ON is a node index or a node name (OFFLOAD_IOC_PEERS). */
static long node_index(const char *on)
{
    struct offload_peers peers;
    long v = 0;
    const char *p = on;
    while (*p >= '0' && *p <= '9')
        v = v * 10 + (*p++ - '0');
    if (!*p && p != on)
        return v;
    if (shim_win.fake || sys3(SYS_ioctl, shim_win.fd, OFFLOAD_IOC_PEERS, &peers) < 0)
        return -1;
    for (uint32_t i = 0; i < peers.count && i < OFFLOAD_MAX_PEERS; i++) {
        int k = 0;
        while (k < OFFLOAD_NAME_LEN && on[k] && peers.peers[i].name[k] == on[k])
            k++;
        if (!on[k] && (k == OFFLOAD_NAME_LEN || !peers.peers[i].name[k]))
            return peers.peers[i].index;
    }
    return -1;
}

/* migrate_main_thread: the constructor's step 4. Returns in the shadow (rax = 0) or, if
 * the move failed, at home with a message: the program then simply runs at home. */
void migrate_main_thread(char **envp)
{
    const char *on = shim_getenv(envp, "OFFLOAD_ON");
    long r;
    if (!on || !on[0] || !shim_marked)
        return;
    target_node = node_index(on);
    if (target_node < 0) {
        shim_say("offload-shim: OFFLOAD_ON names no known node; running at home\n");
        return;
    }
    r = shim_trap(OFFLOAD_SYS_MIGRATE, 0);
    if (r < 0)
        shim_say("offload-shim: migration failed; running at home\n");
}
