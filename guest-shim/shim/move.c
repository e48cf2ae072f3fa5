/*
 * move.c: moving a marked process's memory into the window at load, and out of it again
 * in a fork child (docs/offload-threads.md section 1, "Moving memory into the window").
 *  - move_into_window (constructor, one thread): every private writable mapping of
 *    /proc/self/maps becomes a window run at the same address (data/bss of every object,
 *    anonymous ones such as ld.so's TLS block) except the shim's own data and bss,
 *    which are per-node state (shim_rw_range); [heap] plus a reservation becomes the
 *    emulated brk (memcalls.c); [stack] gets its whole RLIMIT_STACK of window at once (a
 *    shared mapping cannot grow down), moved while we run on a temporary stack.
 *  - fork: a fork child must own a private copy, but window runs are MAP_SHARED with the
 *    parent. The parent forks with the layout lock held and waits (pipe) while the child
 *    copies every run into private anonymous memory (mremap over the same address) before
 *    it writes anything; the child is then an ordinary, unmarked process (brk stays
 *    emulated on its private copy). The kernel's CLONE_CHILD_SETTID/CLEARTID would write
 *    the child's tid into memory still shared with the parent, so the shim strips them and
 *    does their work in the child after the copy.
 */
#include "shim.h"
#include <sys/mman.h>
#include <sys/resource.h>
#include <sched.h>
#include <elf.h>

#define PM_MAX 2048
static struct pmap pm[PM_MAX];
static int npm;
static char temp_stack[64 * 1024] __attribute__((aligned(16)));


/* next_lo: start of the first mapping at or above addr (end of address space if none). */
static uint64_t next_lo(uint64_t addr)
{
    uint64_t best = 0x800000000000UL;
    for (int i = 0; i < npm; i++)
        if (pm[i].lo >= addr && pm[i].lo < best)
            best = pm[i].lo;
    return best;
}

/* prev_hi: end of the last mapping at or below addr. */
static uint64_t prev_hi(uint64_t addr)
{
    uint64_t best = 0;
    for (int i = 0; i < npm; i++)
        if (pm[i].hi <= addr && pm[i].hi > best)
            best = pm[i].hi;
    return best;
}

/* reserve: a zero-filled window run at [lo, hi), which must be free. */
static long reserve(uint64_t lo, uint64_t hi)
{
    long off, m;
    if (hi <= lo)
        return 0;
    off = win_alloc((hi - lo) / PAGE);
    if (off < 0)
        return off;
    m = win_map(lo, hi - lo, PROT_READ | PROT_WRITE, (uint64_t)off, MAP_FIXED_NOREPLACE);
    if (is_err(m) || tab_add(lo, hi - lo, (uint64_t)off, PROT_READ | PROT_WRITE, WM_WIN)) {
        win_free((uint64_t)off, (hi - lo) / PAGE);
        return is_err(m) ? m : -12;
    }
    return 0;
}

/* move_heap: [heap] (if any) and OFFLOAD_BRK bytes of reservation above the break. */
static long move_heap(const struct pmap *heap, uint64_t brk_res)
{
    uint64_t cur = (uint64_t)sys1(SYS_brk, 0);
    uint64_t lo = heap ? heap->lo : pgup(cur), hi = heap ? heap->hi : pgup(cur);
    uint64_t top = pgup(cur) + brk_res, limit = next_lo(hi);
    long e;
    if (top > limit)
        top = limit;
    if (heap && (e = adopt(lo, hi - lo, PROT_READ | PROT_WRITE, 1)))
        return e;
    if ((e = reserve(hi, top)))
        return e;
    shim_brk = (struct brk_state){.lo = lo, .hi = top, .cur = cur, .on = 1};
    return 0;
}

struct stack_job {
    uint64_t lo, hi, new_lo;
    long err;
};

/* stack_move: runs on temp_stack (shim_on_stack), so nothing writes the old stack
 * between the copy and the mapping that replaces it. */
static void stack_move(void *arg)
{
    struct stack_job *j = arg;
    uint64_t len = j->hi - j->new_lo;
    long off = win_alloc(len / PAGE), tmp;
    if (off < 0) {
        j->err = off;
        return;
    }
    tmp = win_map(0, len, PROT_READ | PROT_WRITE, (uint64_t)off, 0);
    if (is_err(tmp)) {
        j->err = tmp;
        return;
    }
    copy_nonzero((char *)tmp + (j->lo - j->new_lo), (const char *)j->lo, j->hi - j->lo);
    sys2(SYS_munmap, tmp, len);
    j->err = win_map(j->new_lo, len, PROT_READ | PROT_WRITE, (uint64_t)off, MAP_FIXED);
    if (!is_err(j->err))
        j->err = tab_add(j->new_lo, len, (uint64_t)off, PROT_READ | PROT_WRITE, WM_WIN);
}

static uint64_t stack_limit(void)
{
    struct rlimit rl;
    if (sys4(SYS_prlimit64, 0, RLIMIT_STACK, 0, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur > (256UL << 20))
        return 8UL << 20;
    return pgup(rl.rlim_cur);
}

/* move_stack: [stack] and RLIMIT_STACK of window below its top (bounded by the mapping
 * below, one guard page away). */
static long move_stack(const struct pmap *st)
{
    struct stack_job j = {.lo = st->lo, .hi = st->hi};
    uint64_t floor = prev_hi(st->lo) + PAGE, want = stack_limit();
    j.new_lo = st->hi - (want > st->hi - st->lo ? want : st->hi - st->lo);
    if (j.new_lo < floor)
        j.new_lo = floor > st->lo ? st->lo : floor;
    shim_on_stack(temp_stack + sizeof temp_stack, stack_move, &j);
    return is_err(j.err) ? j.err : 0;
}

extern const Elf64_Ehdr __ehdr_start HIDDEN;

/* shim_rw_range: the shim's own writable segment (data, bss). It stays private memory on
 * purpose: it is per-node state (the window fd, this table, the altstack pool, counters),
 * which a shadow must not share with its home through the window. */
void shim_rw_range(uint64_t *lo, uint64_t *hi)
{
    const char *base = (const char *)&__ehdr_start;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(base + __ehdr_start.e_phoff);
    *lo = *hi = 0;
    for (int i = 0; i < __ehdr_start.e_phnum; i++)
        if (ph[i].p_type == PT_LOAD && (ph[i].p_flags & PF_W)) {
            *lo = (uint64_t)base + (ph[i].p_vaddr & ~(uint64_t)(PAGE - 1));
            *hi = pgup((uint64_t)base + ph[i].p_vaddr + ph[i].p_memsz);
        }
}

/* adopt_outside: adopt [lo, hi) except the part inside the shim's own [slo, shi). */
static long adopt_outside(uint64_t lo, uint64_t hi, int prot, uint64_t slo, uint64_t shi)
{
    long e = 0;
    if (lo < slo)
        e = adopt(lo, (hi < slo ? hi : slo) - lo, prot, 1);
    if (!e && hi > shi)
        e = adopt(lo > shi ? lo : shi, hi - (lo > shi ? lo : shi), prot, 1);
    return e;
}

static int skipped(const struct pmap *m)
{
    return !m->priv || !(m->prot & PROT_WRITE) || path_is(m->path, "[vsyscall]") ||
           path_is(m->path, "[vvar]") || path_is(m->path, "[vdso]");
}

/* move_into_window: the whole move; 0 or -errno (the process is then half moved, which
 * is still correct at home: window memory is memory). */
long move_into_window(uint64_t brk_res)
{
    struct pmap *heap = 0, *stack = 0;
    uint64_t saved, slo, shi;
    long e = 0;

    shim_rw_range(&slo, &shi);
    layout_lock(&saved);
    npm = procmaps_read(pm, PM_MAX);
    for (int i = 0; i < npm && !e; i++) {
        if (skipped(&pm[i]))
            continue;
        if (path_is(pm[i].path, "[heap]"))
            heap = &pm[i];
        else if (path_is(pm[i].path, "[stack]"))
            stack = &pm[i];
        else
            e = adopt_outside(pm[i].lo, pm[i].hi, (int)pm[i].prot, slo, shi);
    }
    if (!e)
        e = move_heap(heap, brk_res);
    if (!e && stack)
        e = move_stack(stack);
    layout_unlock(&saved);
    return e;
}

/* ---- fork ---- */

/* copy_out: the window run of e becomes private anonymous memory with the same bytes. */
static void copy_out(const struct wmap *e)
{
    uint64_t lo, hi, off = e->off;
    long tmp = shim_sys6(SYS_mmap, 0, (long)e->len, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (is_err(tmp))
        return; /* out of memory: the child keeps sharing this run (documented) */
    if (!(e->prot & PROT_READ))
        sys3(SYS_mprotect, e->addr, e->len, PROT_READ);
    while (win_next_data(off, e->off + e->len, &lo, &hi)) {
        copy_nonzero((char *)tmp + (lo - e->off), (const char *)e->addr + (lo - e->off),
                     pgup(hi) - lo);
        off = pgup(hi);
    }
    sys3(SYS_mprotect, tmp, e->len, e->prot);
    shim_sys6(SYS_mremap, tmp, (long)e->len, (long)e->len, MREMAP_MAYMOVE | MREMAP_FIXED,
              (long)e->addr, 0);
}

/* fork_unmark_child: in the child, before it writes anything (its memory is still the
 * parent's): copy every run out, then become unmarked. Returns nothing; the child goes on
 * as an ordinary process whose brk stays emulated on the private copy. */
void fork_unmark_child(const struct fork_job *f)
{
    for (int i = 0; i < shim_ntab; i++)
        if (shim_tab[i].kind == WM_WIN)
            copy_out(&shim_tab[i]);
    /* from here on every byte is the child's own */
    layout_clear();
    layout_reset_lock();
    push_after_fork();
    win_close();
    shim_marked = 0;
    if (f->ctid && (f->flags & CLONE_CHILD_SETTID))
        *(int *)f->ctid = (int)sys0(SYS_gettid);
    if (f->ctid && (f->flags & CLONE_CHILD_CLEARTID))
        sys1(SYS_set_tid_address, f->ctid);
    sys3(SYS_write, f->pipe[1], "", 1);
    sys1(SYS_close, f->pipe[0]);
    sys1(SYS_close, f->pipe[1]);
}

/* fork_prepare: strip the flags that would write into shared memory in the child, take
 * the lock (the table must not change under the child's copy) and open the pipe. */
long fork_prepare(struct fork_job *f, long *flags, long ctid)
{
    f->flags = *flags;
    f->ctid = ctid;
    f->slot = 0;
    *flags &= ~(long)(CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID);
    layout_lock(&f->saved);
    if (sys2(SYS_pipe2, f->pipe, O_CLOEXEC_) < 0) {
        layout_unlock(&f->saved);
        return -24; /* EMFILE */
    }
    return 0;
}

/* fork_parent: wait until the child has its copy (or is gone: EOF), then let go. */
void fork_parent(struct fork_job *f, long r)
{
    char c;
    sys1(SYS_close, f->pipe[1]);
    if (r > 0)
        while (sys3(SYS_read, f->pipe[0], &c, 1) == -4 /* EINTR */)
            ;
    sys1(SYS_close, f->pipe[0]);
    layout_unlock(&f->saved);
}
