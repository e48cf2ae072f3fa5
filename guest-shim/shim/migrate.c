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
 *    the driver for a shadow (OFFLOAD_IOC_SPAWN) and becomes the executor (executor.c):
 *    EXEC_WAIT -> run the call here -> EXEC_DONE. The thread's own code never runs here
 *    again.
 *  - --place (OFFLOAD_PLACE=K=NODE,...): the K-th thread the process creates (counted
 *    here, at home, also those created by offloaded threads) starts on NODE: its first
 *    instruction is captured in the new thread (migrate_new_thread), which gets a shadow
 *    process of its own there and becomes its executor. Threads created by an offloaded
 *    thread start where their creator runs (counted, not placed).
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


/* capture: the trap-time context; rax = 0 is what the migrate call returns over there. */
/* frame_fp_size: bytes of FPU state in a signal frame: the xsave image (extended_size of
 * fx_sw_reserved) only when the kernel says it wrote one (UC_FP_XSTATE: without XSAVE, e.g.
 * under an emulated CPU, the frame holds the 512-byte fxsave image alone, and its top may
 * be the end of the signal stack); else 512. */
uint32_t frame_fp_size(const ucontext_t *uc)
{
    const uint8_t *fp = (const uint8_t *)uc->uc_mcontext.fpregs;
    uint32_t magic = 0, ext = 512;
    if (!fp || !(uc->uc_flags & 1 /* UC_FP_XSTATE */))
        return 512;
    shim_copy(&magic, fp + 464, 4); /* fx_sw_reserved: magic1, extended_size */
    if (magic == 0x46505853U)
        shim_copy(&ext, fp + 468, 4);
    return ext < 512 ? 512 : ext;
}

void migrate_capture(struct rec_ctx *c, const ucontext_t *uc)
{
    const uint8_t *fp = (const uint8_t *)uc->uc_mcontext.fpregs;
    uint32_t ext = frame_fp_size(uc);
    shim_zero(c, sizeof *c);
    c->magic = REC_CTX_MAGIC;
    shim_copy(c->gregs, uc->uc_mcontext.gregs, sizeof c->gregs);
    c->gregs[REG_RAX] = 0;
    sys2(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, &c->fs_base);
    shim_copy(&c->sigmask, &uc->uc_sigmask, 8);
    if (fp) {
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

/* write_record: the record of c in fresh window pages; *off, *len. Lock held. */
static long write_record(struct rec_ctx *c, uint64_t *off, uint64_t *len)
{
    struct rec_view v = {.exe = exe, .n_env = count_env(shim_envp),
                         .env = (const char *const *)shim_envp, .maps = rmaps,
                         .paths = rpaths, .ctx = c};
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


static char shadow_var[128];
static char *new_env[1024];

static long exec_self(uint64_t off, uint64_t len)
{
    char *p = shadow_var;
    uint32_t n = 0;
    const char *pre = "OFFLOAD_SHADOW=";
    while (*pre)
        *p++ = *pre++;
    p = shim_put_num(p, shim_win.node);
    *p++ = ':';
    p = shim_put_num(p, (uint64_t)sys0(SYS_getpid));
    *p++ = ':';
    p = shim_put_num(p, (uint64_t)sys0(SYS_gettid));
    *p++ = ':';
    p = shim_put_num(p, off);
    *p++ = ':';
    p = shim_put_num(p, len);
    *p = 0;
    for (char **e = shim_envp; e && *e && n < 1022; e++)
        new_env[n++] = *e;
    new_env[n++] = shadow_var;
    new_env[n] = 0;
    return sys3(SYS_execve, "/proc/self/exe", shim_argv, new_env);
}

/* ---- the executor's share: LAYOUT replies (executor.c serves the rest) ---- */

/* exec_layout: a LAYOUT call of the remote thread, run here (the home decides addresses
 * and window runs), then the table entries of the affected range for it to replay. */
long exec_layout(struct layout_req *q, ucontext_t *uc)
{
    long r = shim_dispatch(q->nr, q->args, uc);
    uint64_t saved, lo = q->lo, hi = q->hi;
    if (q->nr == SYS_mmap && !is_err(r)) { /* the address is the home's choice */
        lo = (uint64_t)r;
        hi = lo + pgup((uint64_t)q->args[1]);
    }
    layout_lock(&saved);
    layout_describe(q, lo, hi);
    layout_unlock(&saved);
    q->pushed = (uint32_t)shim_pushing; /* push.c applied it in every shadow already */
    return r;
}

/* spawn_and_serve: register as executor, SPAWN a shadow on node, serve. Returns only on
 * failure. The file stays open for the process's life once it SPAWNed (its release KILLs
 * the process's shadows on that node). Called with the push lock held since the record's
 * snapshot (saved: the mask it keeps); the SPAWN returns once the shadow attached, so
 * every later layout change is pushed to it (push.c). */
static long spawn_and_serve(long node, uint64_t off, uint64_t len, int slot, ucontext_t *uc,
                            const uint64_t *saved)
{
    struct offload_spawn s = {.node = (__u32)node, .rec_off = off, .rec_len = len};
    long fd = executor_open(1), r = fd;
    if (fd >= 0)
        r = sys3(SYS_ioctl, fd, OFFLOAD_IOC_SPAWN, &s);
    if (r >= 0)
        shim_pushing = 1;
    push_unlock(saved);
    if (r < 0) {
        if (fd >= 0) {
            fd_guard_drop((int)fd);
            sys1(SYS_close, fd);
        }
        return r;
    }
    executor_serve((int)fd, slot, uc);
    return 0;
}

/* record_for: the spawn record of context c in fresh window pages (*off, *len). */
static long record_for(struct rec_ctx *c, uint64_t *off, uint64_t *len)
{
    uint64_t saved;
    long r, n;
    layout_lock(&saved); /* also serialises the static buffers of this file */
    n = sys4(SYS_readlinkat, AT_FDCWD, "/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    r = write_record(c, off, len);
    layout_unlock(&saved);
    return r;
}

long migrate_trap(const long *a, ucontext_t *uc)
{
    uint64_t off = 0, len = 0, saved;
    int slot = shim_self.slot; /* ours: the shadow writes its own into the shared TLS */
    long r;
    (void)a;
    if (!shim_marked || target_node < 0)
        return -22;
    shim_self.home_tid = sys0(SYS_gettid);
    migrate_capture(&ctx, uc);
    push_lock(&saved);
    r = record_for(&ctx, &off, &len);
    if (r < 0 || shim_getenv(shim_envp, "OFFLOAD_SHIM_MIGRATE_TEST")) {
        push_unlock(&saved);
        return r < 0 ? r : exec_self(off, len);
    }
    return spawn_and_serve(target_node, off, len, slot, uc, &saved);
}

/* migrate_new_thread: --place: a thread just created here (shim_child_start, on its
 * altstack, SUD armed) starts on another node instead: its clone-time context (the child's
 * registers, x87/SSE, FS base, mask) goes into a record and a shadow of its own resumes it
 * there; this thread becomes its executor. Returns only if that failed: the thread then
 * runs here. */
void migrate_new_thread(const greg_t *gregs, const void *fx, int node)
{
    struct rec_ctx c;
    uint64_t off = 0, len = 0, saved;
    shim_zero(&c, sizeof c);
    c.magic = REC_CTX_MAGIC;
    shim_copy(c.gregs, gregs, sizeof c.gregs);
    sys2(SYS_arch_prctl, 0x1003 /* ARCH_GET_FS */, &c.fs_base);
    sys4(SYS_rt_sigprocmask, SIG_BLOCK, 0, &c.sigmask, KSIGSET_SIZE);
    if (fx) {
        c.fp_size = 512;
        shim_copy(c.fp, fx, 512);
    }
    c.brk_lo = shim_brk.lo;
    c.brk_hi = shim_brk.hi;
    c.brk_cur = shim_brk.cur;
    shim_self.home_tid = sys0(SYS_gettid);
    push_lock(&saved);
    if (record_for(&c, &off, &len) == 0)
        spawn_and_serve(node, off, len, shim_self.slot, 0, &saved);
    else
        push_unlock(&saved);
    shim_say("offload-shim: --place: could not start a thread on its node; it runs at home\n");
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

/* ---- --place K=NODE (OFFLOAD_PLACE=K=INDEX,...) ---- */

#define PLACE_MAX 64
static struct { uint32_t k; int node; } places[PLACE_MAX];
static int n_places;
static uint32_t threads_created; /* threads this process created, counted here at home */

/* parse_place: K=NODE[,K=NODE...] (NODE an index or a name); malformed entries are
 * skipped with a message. */
static void parse_place(const char *p)
{
    char name[OFFLOAD_NAME_LEN + 1];
    while (*p && n_places < PLACE_MAX) {
        uint32_t k = 0;
        int i = 0;
        long node;
        while (*p >= '0' && *p <= '9')
            k = k * 10 + (uint32_t)(*p++ - '0');
        if (*p == '=')
            p++;
        while (*p && *p != ',' && i < OFFLOAD_NAME_LEN)
            name[i++] = *p++;
        name[i] = 0;
        while (*p && *p != ',')
            p++;
        if (*p == ',')
            p++;
        node = k && name[0] ? node_index(name) : -1;
        if (node < 0 || node == (long)shim_win.node)
            shim_say("offload-shim: OFFLOAD_PLACE: entry ignored (bad, or this node)\n");
        else
            places[n_places++] = (typeof(places[0])){.k = k, .node = (int)node};
    }
}

/* place_of_next_thread: one more thread created; the node it is to start on, or -1. */
int place_of_next_thread(void)
{
    uint32_t k = __atomic_add_fetch(&threads_created, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < n_places; i++)
        if (places[i].k == k)
            return places[i].node;
    return -1;
}

/* migrate_main_thread: the constructor's step 4 (and OFFLOAD_PLACE is read here). Returns
 * in the shadow (rax = 0) or, if the move failed, at home with a message: the program then
 * simply runs at home. */
void migrate_main_thread(char **envp)
{
    const char *on = shim_getenv(envp, "OFFLOAD_ON"), *place = shim_getenv(envp, "OFFLOAD_PLACE");
    long r;
    if (!shim_marked)
        return;
    if (place && !shim_win.fake)
        parse_place(place);
    shim_push_possible = n_places > 0 || (on && on[0]);
    if (!on || !on[0])
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
