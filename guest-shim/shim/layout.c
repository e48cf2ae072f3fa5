/*
 * layout.c: the table of a marked process's window mappings and the lock that guards it
 * (docs/offload-threads.md section 1, "Moving memory into the window"). Each entry is
 * (addr, len, window offset, prot, kind): WIN = window pages mapped MAP_SHARED at addr;
 * PENDING = a private anonymous mapping that is not writable yet (PROT_NONE reservations
 * of malloc arenas and thread stacks): it becomes window pages when mprotect makes it
 * writable, so reservations cost no slice space. The WIN entries are the spawn record's
 * `maps` (record.c).
 *
 * Writers take a spinlock with every signal blocked: a program handler running on top of
 * a writer in the same thread could otherwise trap an mmap and spin for ever. Readers
 * (futex, on every call) never block: a sequence counter tells them to retry.
 */
#include "shim.h"

struct wmap shim_tab[TAB_MAX];
int shim_ntab;
static unsigned tab_seq;
static int tab_lock_word;

/* ---- the lock ---- */

void layout_lock(uint64_t *saved)
{
    uint64_t all = ~0UL;
    sys4(SYS_rt_sigprocmask, SIG_SETMASK, &all, saved, KSIGSET_SIZE);
    while (__atomic_exchange_n(&tab_lock_word, 1, __ATOMIC_ACQUIRE))
        sys0(SYS_sched_yield);
    __atomic_store_n(&tab_seq, tab_seq + 1, __ATOMIC_RELEASE); /* odd: readers wait */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

void layout_unlock(const uint64_t *saved)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(&tab_seq, tab_seq + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&tab_lock_word, 0, __ATOMIC_RELEASE);
    sys4(SYS_rt_sigprocmask, SIG_SETMASK, saved, 0, KSIGSET_SIZE);
}

/* layout_reset_lock: a fork child inherits the parent's lock state; it is alone now. */
void layout_reset_lock(void)
{
    tab_lock_word = 0;
    tab_seq = 0;
}

/* ---- lookups ---- */

/* first entry whose end is above addr (binary search: entries are sorted, disjoint) */
static int tab_at(uint64_t addr)
{
    int lo = 0, hi = shim_ntab;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (shim_tab[mid].addr + shim_tab[mid].len <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int layout_index(uint64_t addr)
{
    return tab_at(addr);
}

static int kind_at(uint64_t addr)
{
    int i = tab_at(addr);
    if (i < shim_ntab && shim_tab[i].addr <= addr)
        return (int)shim_tab[i].kind;
    return 0;
}

/* layout_is_window: is addr in window memory? Lock-free (futex path). */
int layout_is_window(uint64_t addr)
{
    unsigned s;
    int k;
    do {
        while ((s = __atomic_load_n(&tab_seq, __ATOMIC_ACQUIRE)) & 1)
            ;
        k = kind_at(addr);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
    } while (__atomic_load_n(&tab_seq, __ATOMIC_RELAXED) != s);
    return k == WM_WIN;
}

/* layout_find: the WIN entry holding addr (lock held), or NULL. */
struct wmap *layout_find(uint64_t addr)
{
    int i = tab_at(addr);
    if (i < shim_ntab && shim_tab[i].addr <= addr && shim_tab[i].kind == WM_WIN)
        return &shim_tab[i];
    return 0;
}

/* ---- edits (lock held) ---- */

static void tab_move(int to, int from)
{
    int n = shim_ntab - from;
    if (to < from)
        for (int i = 0; i < n; i++)
            shim_tab[to + i] = shim_tab[from + i];
    else
        for (int i = n - 1; i >= 0; i--)
            shim_tab[to + i] = shim_tab[from + i];
    shim_ntab += to - from;
}

/* tab_split: make x an entry boundary (an entry strictly containing x becomes two). */
static int tab_split(uint64_t x)
{
    int i = tab_at(x);
    struct wmap *e = &shim_tab[i];
    uint64_t head;
    if (i >= shim_ntab || e->addr >= x)
        return 0;
    if (shim_ntab == TAB_MAX)
        return -12;
    tab_move(i + 1, i);
    head = x - e->addr;
    shim_tab[i].len = head;
    shim_tab[i + 1].addr = x;
    shim_tab[i + 1].len -= head;
    if (shim_tab[i + 1].kind == WM_WIN)
        shim_tab[i + 1].off += head;
    return 0;
}

static int mergeable(const struct wmap *a, const struct wmap *b)
{
    return a->addr + a->len == b->addr && a->prot == b->prot && a->kind == b->kind &&
           (a->kind != WM_WIN || a->off + a->len == b->off);
}

/* tab_add: insert [addr, addr+len) (not overlapping any entry), merged with neighbours
 * that continue it (same kind, prot and, for WIN, consecutive window offsets). */
int tab_add(uint64_t addr, uint64_t len, uint64_t off, int prot, int kind)
{
    struct wmap e = {.addr = addr, .len = len, .off = off, .prot = (uint32_t)prot,
                     .kind = (uint32_t)kind};
    int i = tab_at(addr);
    if (i > 0 && mergeable(&shim_tab[i - 1], &e)) {
        shim_tab[i - 1].len += len;
        if (i < shim_ntab && mergeable(&shim_tab[i - 1], &shim_tab[i])) {
            shim_tab[i - 1].len += shim_tab[i].len;
            tab_move(i, i + 1);
        }
        return 0;
    }
    if (i < shim_ntab && mergeable(&e, &shim_tab[i])) {
        shim_tab[i].addr = addr;
        shim_tab[i].len += len;
        shim_tab[i].off = off;
        return 0;
    }
    if (shim_ntab == TAB_MAX)
        return -12;
    tab_move(i + 1, i);
    shim_tab[i] = e;
    return 0;
}

/* tab_cut: forget [lo, hi); window runs in it go back to the allocator. */
int tab_cut(uint64_t lo, uint64_t hi)
{
    int i, j;
    if (tab_split(lo) || tab_split(hi))
        return -12;
    i = tab_at(lo);
    for (j = i; j < shim_ntab && shim_tab[j].addr < hi; j++)
        if (shim_tab[j].kind == WM_WIN)
            win_free(shim_tab[j].off, shim_tab[j].len / PAGE);
    tab_move(i, j);
    return 0;
}

/* tab_range: split at lo and hi; *first..*end are then the entries inside [lo, hi). */
int tab_range(uint64_t lo, uint64_t hi, int *first, int *end)
{
    int j;
    if (tab_split(lo) || tab_split(hi))
        return -12;
    *first = tab_at(lo);
    for (j = *first; j < shim_ntab && shim_tab[j].addr < hi; j++)
        ;
    *end = j;
    return 0;
}

/* tab_uncovered: the first gap of [*lo, hi) not covered by any entry, as [*lo, *gap_end);
 * 0 when [*lo, hi) is fully covered. */
int tab_uncovered(uint64_t *lo, uint64_t hi, uint64_t *gap_end)
{
    while (*lo < hi) {
        int i = tab_at(*lo);
        if (i >= shim_ntab || shim_tab[i].addr >= hi) {
            *gap_end = hi;
            return 1;
        }
        if (shim_tab[i].addr > *lo) {
            *gap_end = shim_tab[i].addr;
            return 1;
        }
        *lo = shim_tab[i].addr + shim_tab[i].len;
    }
    return 0;
}

void layout_clear(void)
{
    shim_ntab = 0;
}
