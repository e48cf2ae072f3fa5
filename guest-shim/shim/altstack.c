/*
 * altstack.c: the shim's per-thread signal stacks. Each thread's SIGSYS handler (and any
 * program handler that runs while a trapped call is in progress) runs on a private
 * ALT_SIZE mmap'd region, never on the program's stack or on an altstack of the program.
 *
 * A thread cannot unmap the stack it runs its own exit on, so regions are recycled instead:
 * a slot says who owns a region; at `exit` the owner marks it EXITING; a later allocation
 * reuses an EXITING region once tgkill(owner, 0) says that thread is gone. Lock-free (slot
 * states change by compare-and-swap) because allocation happens inside the SIGSYS handler.
 */
#include <sys/mman.h>
#include "shim.h"

#define NSLOTS 1024
enum { SLOT_EMPTY, SLOT_INUSE, SLOT_EXITING, SLOT_BUSY };

struct slot {
    int state;
    int tgid, tid;
    char *base;
};
static struct slot slots[NSLOTS];

static int cas(int *p, int old, int new)
{
    return __atomic_compare_exchange_n(p, &old, new, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static char *map_region(void)
{
    long p = shim_sys6(SYS_mmap, 0, ALT_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return (p < 0 && p > -4096) ? 0 : (char *)p;
}

/* owner_gone: the thread that marked slot s EXITING no longer runs (ESRCH). */
static int owner_gone(const struct slot *s)
{
    if (s->tid <= 0)
        return 1;
    return sys3(SYS_tgkill, s->tgid, s->tid, 0) == -3 /* ESRCH */;
}

/* try_reuse: claim an EXITING slot whose owner is gone. */
static int try_reuse(char **base)
{
    for (int i = 0; i < NSLOTS; i++) {
        struct slot *s = &slots[i];
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != SLOT_EXITING)
            continue;
        if (!cas(&s->state, SLOT_EXITING, SLOT_BUSY))
            continue;
        if (owner_gone(s)) {
            *base = s->base;
            __atomic_store_n(&s->state, SLOT_INUSE, __ATOMIC_RELEASE);
            return i + 1;
        }
        __atomic_store_n(&s->state, SLOT_EXITING, __ATOMIC_RELEASE);
    }
    return 0;
}

/* altstack_alloc: a region for a new thread; *base = NULL when out of memory. Returns
 * slot+1, or 0 when the pool is full (the region is then simply never recycled). */
int altstack_alloc(char **base)
{
    int got = try_reuse(base);
    if (got)
        return got;
    *base = map_region();
    if (!*base)
        return 0;
    for (int i = 0; i < NSLOTS; i++) {
        if (cas(&slots[i].state, SLOT_EMPTY, SLOT_BUSY)) {
            slots[i].base = *base;
            __atomic_store_n(&slots[i].state, SLOT_INUSE, __ATOMIC_RELEASE);
            return i + 1;
        }
    }
    return 0;
}

void altstack_set_owner(int slot, int tgid, int tid)
{
    if (slot <= 0)
        return;
    slots[slot - 1].tgid = tgid;
    slots[slot - 1].tid = tid;
}

/* altstack_exiting: only the owner gives its region up (a CLONE_VM child without its own
 * TLS sees its parent's slot number and must not hand the parent's region out). */
void altstack_exiting(int slot, int tid)
{
    if (slot > 0 && slots[slot - 1].tid == tid)
        __atomic_store_n(&slots[slot - 1].state, SLOT_EXITING, __ATOMIC_RELEASE);
}

/* altstack_release: the region's user is certainly gone (a vfork child that exec'd or
 * exited, or a clone that failed): keep the mapping for the next thread. */
void altstack_release(int slot, char *base)
{
    if (slot <= 0) {
        if (base)
            sys2(SYS_munmap, base, ALT_SIZE);
        return;
    }
    slots[slot - 1].tid = 0; /* no owner: reusable at once */
    __atomic_store_n(&slots[slot - 1].state, SLOT_EXITING, __ATOMIC_RELEASE);
}

/* altstack_after_fork: in a fork child only the forking thread exists; every other
 * in-use region belonged to a parent thread and becomes reusable (the parent's tids are
 * not threads of the child, so tgkill(child, tid) says ESRCH). */
void altstack_after_fork(int keep_slot, int pid)
{
    for (int i = 0; i < NSLOTS; i++) {
        if (i + 1 == keep_slot) {
            slots[i].tgid = pid;
            slots[i].tid = pid;
        } else if (slots[i].state != SLOT_EMPTY) {
            /* a parent thread's region (BUSY: caught mid-update by the fork) */
            slots[i].tgid = pid;
            slots[i].state = slots[i].base ? SLOT_EXITING : SLOT_EMPTY;
        }
    }
}

int altstack_owns(uint64_t addr)
{
    for (int i = 0; i < NSLOTS; i++) {
        uint64_t b = (uint64_t)slots[i].base;
        if (slots[i].state != SLOT_EMPTY && b && addr >= b && addr < b + ALT_SIZE)
            return 1;
    }
    return 0;
}

int altstack_install(char *base)
{
    stack_t ss = {.ss_sp = base, .ss_flags = 0, .ss_size = ALT_SIZE};
    return (int)sys2(SYS_sigaltstack, &ss, 0);
}
