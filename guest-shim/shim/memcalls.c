/*
 * memcalls.c: the address-space calls of a marked process, emulated so that every private
 * writable byte lives in the window (docs/offload-threads.md section 1; docs/syscall-
 * routing.md "Marked mode"):
 *  - mmap: the kernel chooses (and checks) the address; a private writable result is then
 *    replaced by a window run at that address (copied first for a file mapping); a private
 *    anonymous one that is not writable is remembered as PENDING;
 *  - mprotect: applied, then PENDING parts made writable become window runs;
 *  - munmap, and mmap MAP_FIXED over window memory: the runs are freed;
 *  - mremap of window memory: shrink, or grow in place with a new run; a move is refused
 *    with ENOMEM (glibc's realloc then copies), because moving a device mapping is not
 *    something the driver promises;
 *  - brk: emulated on a window reservation (move.c sets it up);
 *  - madvise(MADV_DONTNEED) on window memory: the bytes become zero, as for private memory
 *    (the kernel refuses DONTNEED on the device's PFN mappings);
 *  - futex on window memory: made private (shared futexes need struct page, which window
 *    pages do not have).
 */
#include "shim.h"
#include <sys/mman.h>

struct brk_state shim_brk;


/* copy_nonzero: copy len bytes (page multiple) from src to dst, skipping all-zero pages so
 * the destination stays sparse (fresh window pages and fresh private pages read zero). */
void copy_nonzero(char *dst, const char *src, uint64_t len)
{
    for (uint64_t p = 0; p < len; p += PAGE) {
        const uint64_t *s = (const uint64_t *)(src + p);
        int zero = 1;
        for (int i = 0; i < PAGE / 8 && zero; i++)
            zero = s[i] == 0;
        if (!zero)
            shim_copy_fast(dst + p, src + p, PAGE);
    }
}

/* adopt: replace [addr, addr+len) by a fresh window run mapped with prot; with copy, the
 * current bytes are carried over first (through a temporary mapping of the run). */
long adopt(uint64_t addr, uint64_t len, int prot, int copy)
{
    long off = win_alloc(len / PAGE), m;
    if (off < 0)
        return -12;
    if (copy) {
        long tmp = win_map(0, len, PROT_READ | PROT_WRITE, (uint64_t)off, 0);
        if (is_err(tmp)) {
            win_free((uint64_t)off, len / PAGE);
            return tmp;
        }
        copy_nonzero((char *)tmp, (const char *)addr, len);
        sys2(SYS_munmap, tmp, len);
    }
    m = win_map(addr, len, prot, (uint64_t)off, MAP_FIXED);
    if (is_err(m) || tab_add(addr, len, (uint64_t)off, prot, WM_WIN) < 0) {
        win_free((uint64_t)off, len / PAGE);
        return is_err(m) ? m : -12;
    }
    return 0;
}


long mem_mmap(const long *a)
{
    uint64_t saved, len = pgup((uint64_t)a[1]);
    int prot = (int)a[2], flags = (int)a[3];
    int priv = (flags & MAP_TYPE) == MAP_PRIVATE, anon = flags & MAP_ANONYMOUS;
    long r, e = 0;

    layout_lock(&saved);
    r = shim_sys6(SYS_mmap, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (!is_err(r)) {
        tab_cut((uint64_t)r, (uint64_t)r + len); /* MAP_FIXED may have replaced ours */
        if (priv && !(flags & MAP_HUGETLB) && (prot & PROT_WRITE))
            e = adopt((uint64_t)r, len, prot, !anon);
        else if (priv && anon && !(flags & MAP_HUGETLB))
            e = tab_add((uint64_t)r, len, 0, prot, WM_PENDING);
        if (e) {
            sys2(SYS_munmap, r, len);
            r = e;
        }
    }
    layout_unlock(&saved);
    return r;
}

long mem_munmap(const long *a)
{
    uint64_t saved;
    long r;
    layout_lock(&saved);
    r = sys2(SYS_munmap, a[0], a[1]);
    if (r == 0)
        tab_cut((uint64_t)a[0], (uint64_t)a[0] + pgup((uint64_t)a[1]));
    layout_unlock(&saved);
    return r;
}

/* next_pending: index of the first PENDING entry inside [lo, hi), or -1. */
static int next_pending(uint64_t lo, uint64_t hi)
{
    for (int i = layout_index(lo); i < shim_ntab && shim_tab[i].addr < hi; i++)
        if (shim_tab[i].kind == WM_PENDING)
            return i;
    return -1;
}

/* make_writable: PENDING entries of [lo, hi) become zero-filled window runs with prot
 * (their bytes are zero: a private anonymous mapping never writable holds nothing). */
static long make_writable(uint64_t lo, uint64_t hi, int prot)
{
    int i, end;
    long e = tab_range(lo, hi, &i, &end);
    while (!e && (i = next_pending(lo, hi)) >= 0) {
        struct wmap p = shim_tab[i];
        tab_cut(p.addr, p.addr + p.len);
        e = adopt(p.addr, p.len, prot, 0);
        if (e) { /* out of window: leave it as it was before the mprotect */
            sys3(SYS_mprotect, p.addr, p.len, p.prot);
            tab_add(p.addr, p.len, 0, (int)p.prot, WM_PENDING);
        }
    }
    return e;
}

long mem_mprotect(long nr, const long *a)
{
    uint64_t saved, lo = (uint64_t)a[0], hi = lo + pgup((uint64_t)a[1]);
    int i, end;
    long r;

    layout_lock(&saved);
    r = shim_sys6(nr, a[0], a[1], a[2], a[3], 0, 0);
    if (r == 0 && (a[2] & PROT_WRITE))
        r = make_writable(lo, hi, (int)a[2]);
    if (r == 0 && !tab_range(lo, hi, &i, &end))
        for (; i < end; i++)
            shim_tab[i].prot = (uint32_t)a[2];
    layout_unlock(&saved);
    return r;
}

/* covered: [lo, hi) is window memory, every byte. */
static int covered(uint64_t lo, uint64_t hi)
{
    while (lo < hi) {
        struct wmap *e = layout_find(lo);
        if (!e)
            return 0;
        lo = e->addr + e->len;
    }
    return 1;
}

static int any_window(uint64_t lo, uint64_t hi)
{
    for (int i = 0; i < shim_ntab; i++)
        if (shim_tab[i].kind == WM_WIN && shim_tab[i].addr < hi &&
            shim_tab[i].addr + shim_tab[i].len > lo)
            return 1;
    return 0;
}

/* remap_window: mremap of window memory without moving it. */
static long remap_window(uint64_t old, uint64_t olen, uint64_t nlen, long flags)
{
    struct wmap *last;
    long off, m;
    if (flags & ~MREMAP_MAYMOVE)
        return -12; /* MREMAP_FIXED / DONTUNMAP would move: refused (see header) */
    if (!covered(old, old + olen))
        return -14; /* EFAULT, as for a range spanning several mappings */
    if (nlen <= olen) {
        if (nlen < olen) {
            sys2(SYS_munmap, old + nlen, olen - nlen);
            tab_cut(old + nlen, old + olen);
        }
        return (long)old;
    }
    last = layout_find(old + olen - 1);
    off = win_alloc((nlen - olen) / PAGE);
    if (off < 0)
        return -12;
    m = win_map(old + olen, nlen - olen, (int)last->prot, (uint64_t)off, MAP_FIXED_NOREPLACE);
    if (is_err(m) || tab_add(old + olen, nlen - olen, (uint64_t)off, (int)last->prot,
                             WM_WIN) < 0) {
        if (!is_err(m))
            sys2(SYS_munmap, m, nlen - olen);
        win_free((uint64_t)off, (nlen - olen) / PAGE);
        return -12; /* the neighbour is taken: moving would be needed */
    }
    return (long)old;
}

long mem_mremap(const long *a)
{
    uint64_t saved, old = (uint64_t)a[0], olen = pgup((uint64_t)a[1]);
    uint64_t nlen = pgup((uint64_t)a[2]);
    long r;

    if (old & (PAGE - 1) || !nlen)
        return -22;
    layout_lock(&saved);
    if (olen && any_window(old, old + olen)) {
        r = remap_window(old, olen, nlen, a[3]);
    } else {
        r = shim_sys6(SYS_mremap, a[0], a[1], a[2], a[3], a[4], 0);
        if (!is_err(r)) { /* a PENDING reservation that moved or shrank is forgotten */
            tab_cut(old, old + olen);
            tab_cut((uint64_t)r, (uint64_t)r + nlen);
        }
    }
    layout_unlock(&saved);
    return r;
}

/* discard: [lo, hi) reads zero afterwards; window parts through the backend, the rest
 * (a fork child's private copy) through MADV_DONTNEED. */
static void discard(uint64_t lo, uint64_t hi)
{
    while (lo < hi) {
        struct wmap *e = layout_find(lo);
        uint64_t end;
        if (!e) {
            sys3(SYS_madvise, lo, hi - lo, MADV_DONTNEED);
            return;
        }
        end = e->addr + e->len < hi ? e->addr + e->len : hi;
        win_discard((void *)lo, e->off + (lo - e->addr), end - lo);
        lo = end;
    }
}

long mem_madvise(const long *a)
{
    uint64_t saved, lo = (uint64_t)a[0], hi = lo + pgup((uint64_t)a[1]);
    long r = 0;
    layout_lock(&saved);
    if (!any_window(lo, hi)) {
        r = sys3(SYS_madvise, a[0], a[1], a[2]);
    } else if (a[2] == MADV_DONTNEED) {
        if (covered(lo, hi))
            discard(lo, hi);
        else
            r = -22;
    } else if (a[2] != MADV_FREE) { /* MADV_FREE: keeping the bytes is allowed */
        r = sys3(SYS_madvise, a[0], a[1], a[2]);
        if (r == -22)
            r = 0; /* advice the device's mappings do not take is only advice */
    }
    layout_unlock(&saved);
    return r;
}

/* mem_brk: the emulated break, inside [lo, hi) of window memory set up by move.c. Out of
 * range: the old break, as the kernel answers when it cannot move it. */
long mem_brk(const long *a)
{
    uint64_t saved, want = (uint64_t)a[0];
    long r;
    layout_lock(&saved);
    if (want >= shim_brk.lo && want <= shim_brk.hi) {
        if (want < shim_brk.cur && pgup(want) < pgup(shim_brk.cur))
            discard(pgup(want), pgup(shim_brk.cur));
        shim_brk.cur = want;
    }
    r = (long)shim_brk.cur;
    layout_unlock(&saved);
    return r;
}

#define K_FUTEX_PRIVATE 128
#define K_FUTEX_CMD_MASK 127

long mem_futex(const long *a)
{
    long op = a[1];
    if (!(op & K_FUTEX_PRIVATE) && layout_is_window((uint64_t)a[0]))
        op |= K_FUTEX_PRIVATE;
    shim_stats.futex_private += op != a[1];
    return shim_sys6(SYS_futex, a[0], op, a[2], a[3], a[4], a[5]);
}

/* ---- the shim's fds (the window's, the executors' files) are not the program's: it may
 * not close or replace them (a close_range of "every fd" would otherwise end the
 * executors, and with the window fd the process's memory) ---- */

#define GUARD_MAX 256
static int guard_fds[GUARD_MAX]; /* fd + 1; 0: free */

void fd_guard_add(int fd)
{
    for (int i = 0; i < GUARD_MAX; i++) {
        int free_ = 0;
        if (__atomic_compare_exchange_n(&guard_fds[i], &free_, fd + 1, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST))
            return;
    }
}

void fd_guard_drop(int fd)
{
    for (int i = 0; i < GUARD_MAX; i++)
        if (__atomic_load_n(&guard_fds[i], __ATOMIC_SEQ_CST) == fd + 1)
            __atomic_store_n(&guard_fds[i], 0, __ATOMIC_SEQ_CST);
}

static int guarded(unsigned long fd)
{
    if (shim_win.fd >= 0 && fd == (unsigned long)shim_win.fd)
        return 1;
    for (int i = 0; i < GUARD_MAX; i++)
        if ((unsigned long)__atomic_load_n(&guard_fds[i], __ATOMIC_SEQ_CST) == fd + 1)
            return 1;
    return 0;
}

/* next_guarded: the smallest guarded fd in [lo, hi], or hi + 1 (hi < ~0UL). */
static unsigned long next_guarded(unsigned long lo, unsigned long hi)
{
    unsigned long best = hi + 1;
    if (shim_win.fd >= 0 && (unsigned long)shim_win.fd >= lo &&
        (unsigned long)shim_win.fd < best)
        best = (unsigned long)shim_win.fd;
    for (int i = 0; i < GUARD_MAX; i++) {
        unsigned long f = (unsigned long)__atomic_load_n(&guard_fds[i], __ATOMIC_SEQ_CST);
        if (f && f - 1 >= lo && f - 1 < best)
            best = f - 1;
    }
    return best;
}

/* close_range_around: close_range(lo, hi, flags) on every fd but the guarded ones. */
static long close_range_around(unsigned long lo, unsigned long hi, long flags)
{
    long r = 0;
    if (hi == ~0UL)
        hi = ~0U; /* the kernel's maximum: fds are unsigned int */
    while (r == 0 && lo <= hi) {
        unsigned long g = next_guarded(lo, hi);
        if (g > lo)
            r = shim_sys6(SYS_close_range, (long)lo, (long)(g - 1), flags, 0, 0, 0);
        lo = g + 1;
    }
    return r;
}

long mem_fd_guard(long nr, const long *a)
{
    switch (nr) {
    case SYS_close:
        if (guarded((unsigned long)a[0]))
            return -9; /* EBADF: as if it were not open */
        break;
    case SYS_dup2:
    case SYS_dup3:
        if (guarded((unsigned long)a[1]))
            return -16; /* EBUSY, which Linux's dup2 may return */
        break;
    case SYS_close_range:
        if ((unsigned long)a[0] <= (unsigned long)a[1])
            return close_range_around((unsigned long)a[0], (unsigned long)a[1], a[2]);
        break;
    }
    return shim_sys6(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}
