/*
 * route.c: the routing table of trapped system calls (x86_64 numbers). Only the LOCAL,
 * LAYOUT and SPECIAL entries are listed; HOME is the default for everything else, unknown
 * numbers included, because running a call at home is always correct (only slower).
 * The reason for each entry is in docs/syscall-routing.md; keep the two in step.
 */
#include <sys/syscall.h>
#include "route.h"

#define NR_TABLE 512

/* Designated initialisers: zero (OFFLOAD_HOME) wherever nothing is said. */
static const unsigned char route_table[NR_TABLE] = {
    /* LOCAL: the thread's own CPU, clock and signal-return context; nothing of the home */
    [SYS_sched_yield] = OFFLOAD_LOCAL,
    [SYS_nanosleep] = OFFLOAD_LOCAL,
    [SYS_clock_nanosleep] = OFFLOAD_LOCAL,
    [SYS_clock_gettime] = OFFLOAD_LOCAL,
    [SYS_clock_getres] = OFFLOAD_LOCAL,
    [SYS_gettimeofday] = OFFLOAD_LOCAL,
    [SYS_time] = OFFLOAD_LOCAL,
    [SYS_getcpu] = OFFLOAD_LOCAL,
    [SYS_getrandom] = OFFLOAD_LOCAL,
    [SYS_rt_sigreturn] = OFFLOAD_LOCAL,
    [SYS_arch_prctl] = OFFLOAD_LOCAL,
    [SYS_rseq] = OFFLOAD_LOCAL,

    /* LAYOUT: change the address space that every node must see identically */
    [SYS_mmap] = OFFLOAD_LAYOUT,
    [SYS_munmap] = OFFLOAD_LAYOUT,
    [SYS_mremap] = OFFLOAD_LAYOUT,
    [SYS_mprotect] = OFFLOAD_LAYOUT,
    [SYS_pkey_mprotect] = OFFLOAD_LAYOUT,
    [SYS_brk] = OFFLOAD_LAYOUT,

    /* SPECIAL: the shim has a protocol for these */
    [SYS_clone] = OFFLOAD_SPECIAL,
    [SYS_clone3] = OFFLOAD_SPECIAL,
    [SYS_fork] = OFFLOAD_SPECIAL,
    [SYS_vfork] = OFFLOAD_SPECIAL,
    [SYS_exit] = OFFLOAD_SPECIAL,
    [SYS_exit_group] = OFFLOAD_SPECIAL,
    [SYS_execve] = OFFLOAD_SPECIAL,
    [SYS_execveat] = OFFLOAD_SPECIAL,
    [SYS_rt_sigaction] = OFFLOAD_SPECIAL,
    [SYS_rt_sigprocmask] = OFFLOAD_SPECIAL,
    [SYS_sigaltstack] = OFFLOAD_SPECIAL,
    [SYS_prctl] = OFFLOAD_SPECIAL,
};

int offload_route(long nr)
{
    if (nr < 0 || nr >= NR_TABLE)
        return OFFLOAD_HOME;
    return route_table[nr];
}

const char *offload_class_name(int cls)
{
    switch (cls) {
    case OFFLOAD_LOCAL: return "LOCAL";
    case OFFLOAD_LAYOUT: return "LAYOUT";
    case OFFLOAD_SPECIAL: return "SPECIAL";
    default: return "HOME";
    }
}
