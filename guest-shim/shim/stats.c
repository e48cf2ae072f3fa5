/*
 * stats.c: counters of trapped calls (per routing class and per syscall number) and the
 * stats file. With OFFLOAD_SHIM_STATS=PATH, a process appends one line per class to PATH
 * when it calls exit_group (and before an execve, since the new image starts from zero):
 *   offload-shim pid=P comm=NAME at=exit_group class=HOME calls=N top=NR:COUNT,...
 * and, in a marked process (or a fork child of one), one line about the window:
 *   offload-shim pid=P comm=NAME at=exit_group window marked=1 maps=N bytes=B
 *     private_rw=K futex_private=F migrated=M (M=1: it resumed a home's thread)
 * (K: private writable mappings left outside the window, the shim's altstacks not counted).
 * Several processes (fork, exec) may share PATH: O_APPEND, one write() per line.
 * Counters belong to one process: a fork child resets its copy; a child sharing our memory
 * (CLONE_VM without CLONE_THREAD, e.g. posix_spawn's) does not own them and never writes.
 */
#include "shim.h"
#include <fcntl.h>
#include <sys/mman.h>
#include "route.h"

#define NR_SLOTS 512  /* numbers >= 512 (and negative) are counted in the last bucket */
#define TOP_N 8

struct shim_mstats shim_stats;
static unsigned long class_calls[OFFLOAD_NCLASSES];
static unsigned long nr_calls[NR_SLOTS + 1];
static char stats_path[4096];
static char comm[64];
static int owner_pid; /* the process whose calls the counters hold */

static int prefix(const char *e, const char *name)
{
    size_t i = 0;
    while (name[i] && e[i] == name[i])
        i++;
    return name[i] == 0;
}

void stats_init(char **envp, const char *argv0)
{
    const char *base = argv0;
    size_t n;
    for (const char *p = argv0; *p; p++)
        if (*p == '/')
            base = p + 1;
    n = shim_strlen(base);
    shim_copy(comm, base, n < sizeof comm - 1 ? n : sizeof comm - 1);
    for (; envp && *envp; envp++) {
        if (prefix(*envp, "OFFLOAD_SHIM_STATS=")) {
            const char *v = *envp + 19;
            n = shim_strlen(v);
            if (n < sizeof stats_path)
                shim_copy(stats_path, v, n);
        }
    }
    owner_pid = (int)sys0(SYS_getpid);
}

void stats_count(long nr)
{
    long slot = (nr < 0 || nr >= NR_SLOTS) ? NR_SLOTS : nr;
    __atomic_fetch_add(&class_calls[offload_route(nr)], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&nr_calls[slot], 1, __ATOMIC_RELAXED);
}

void stats_reset_in_child(void)
{
    shim_stats.futex_private = 0;
    shim_zero(class_calls, sizeof class_calls);
    shim_zero(nr_calls, sizeof nr_calls);
    owner_pid = (int)sys0(SYS_getpid);
}

/* ---- a tiny line builder (no snprintf: no libc) ---- */
struct line {
    char buf[512];
    size_t len;
};

static void put_s(struct line *l, const char *s)
{
    while (*s && l->len < sizeof l->buf - 1)
        l->buf[l->len++] = *s++;
}

static void put_u(struct line *l, unsigned long v)
{
    char d[24];
    int n = 0;
    do
        d[n++] = (char)('0' + v % 10);
    while ((v /= 10) && n < 24);
    while (n && l->len < sizeof l->buf - 1)
        l->buf[l->len++] = d[--n];
}

/* top_of_class: append "nr:count,..." for the TOP_N busiest numbers of class cls. */
static void top_of_class(struct line *l, int cls)
{
    char used[NR_SLOTS + 1];
    shim_zero(used, sizeof used);
    for (int k = 0; k < TOP_N; k++) {
        long best = -1;
        for (long nr = 0; nr <= NR_SLOTS; nr++) {
            long real = nr == NR_SLOTS ? -1 : nr;
            if (used[nr] || !nr_calls[nr] || offload_route(real) != cls)
                continue;
            if (best < 0 || nr_calls[nr] > nr_calls[best])
                best = nr;
        }
        if (best < 0)
            return;
        used[best] = 1;
        if (k)
            put_s(l, ",");
        if (best == NR_SLOTS)
            put_s(l, "other");
        else
            put_u(l, (unsigned long)best);
        put_s(l, ":");
        put_u(l, nr_calls[best]);
    }
}

static void write_class(int fd, const char *at, int pid, int cls)
{
    struct line l;
    l.len = 0;
    put_s(&l, "offload-shim pid=");
    put_u(&l, (unsigned long)pid);
    put_s(&l, " comm=");
    put_s(&l, comm[0] ? comm : "?");
    put_s(&l, " at=");
    put_s(&l, at);
    put_s(&l, " class=");
    put_s(&l, offload_class_name(cls));
    put_s(&l, " calls=");
    put_u(&l, class_calls[cls]);
    put_s(&l, " top=");
    top_of_class(&l, cls);
    put_s(&l, "\n");
    sys3(SYS_write, fd, l.buf, l.len);
}

#define STAT_MAPS 2048

/* private_rw: private writable mappings that are not the shim's own (altstacks, its
 * data and bss). In a
 * marked process this must be 0: every such byte belongs in the window. */
static unsigned long private_rw(void)
{
    static struct pmap m[STAT_MAPS];
    int n = procmaps_read(m, STAT_MAPS);
    unsigned long k = 0;
    uint64_t slo, shi;
    shim_rw_range(&slo, &shi);
    for (int i = 0; i < n; i++)
        if (m[i].priv && (m[i].prot & PROT_WRITE) && !altstack_owns(m[i].lo) &&
            !(m[i].lo >= slo && m[i].hi <= shi) &&
            !(m[i].lo >= shim_job_lo && m[i].hi <= shim_job_hi))
            k++;
    return k;
}

static unsigned long window_bytes(void)
{
    unsigned long b = 0;
    for (int i = 0; i < shim_ntab; i++)
        if (shim_tab[i].kind == WM_WIN)
            b += shim_tab[i].len;
    return b;
}

/* write_window: "... window marked=1 maps=N bytes=B private_rw=K futex_private=F" */
static void write_window(int fd, const char *at, int pid)
{
    struct line l;
    l.len = 0;
    put_s(&l, "offload-shim pid=");
    put_u(&l, (unsigned long)pid);
    put_s(&l, " comm=");
    put_s(&l, comm[0] ? comm : "?");
    put_s(&l, " at=");
    put_s(&l, at);
    put_s(&l, " window marked=");
    put_u(&l, (unsigned long)shim_marked);
    put_s(&l, " maps=");
    put_u(&l, (unsigned long)shim_ntab);
    put_s(&l, " bytes=");
    put_u(&l, window_bytes());
    put_s(&l, " private_rw=");
    put_u(&l, private_rw());
    put_s(&l, " futex_private=");
    put_u(&l, shim_stats.futex_private);
    put_s(&l, " migrated=");
    put_u(&l, (unsigned long)shim_resumed);
    put_s(&l, "\n");
    sys3(SYS_write, fd, l.buf, l.len);
}

/* stats_owner: the calling process owns the counters (it is not a CLONE_VM child). */
int stats_owner(void)
{
    return (int)sys0(SYS_getpid) == owner_pid;
}

/* stats_write: one line per class, if a path was given and we own the counters. */
void stats_write(const char *at)
{
    int pid = owner_pid;
    long fd;
    if (!stats_path[0] || !stats_owner())
        return;
    fd = sys4(SYS_openat, AT_FDCWD, stats_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    for (int cls = 0; cls < OFFLOAD_NCLASSES; cls++)
        write_class((int)fd, at, pid, cls);
    if (shim_marked || shim_brk.on)
        write_window((int)fd, at, pid);
    sys1(SYS_close, fd);
}
