/*
 * route.h: the routing classes of a trapped x86_64 system call (docs/syscall-routing.md,
 * docs/offload-threads.md section 2) and offload_route(), the lookup the forwarding code
 * will use. In mode B (nothing offloaded) the class only feeds the shim's counters.
 */
#ifndef OFFLOAD_ROUTE_H
#define OFFLOAD_ROUTE_H

enum offload_class {
    OFFLOAD_HOME = 0,    /* run at home by the thread's executor: the default */
    OFFLOAD_LOCAL = 1,   /* run in the trapping thread, on its node: touches no home resource */
    OFFLOAD_LAYOUT = 2,  /* decided at home, replayed on every node hosting a thread of P */
    OFFLOAD_SPECIAL = 3, /* a protocol of its own (clone, exit, signals, execve, ...) */
};
#define OFFLOAD_NCLASSES 4

/* Class of syscall number nr; any number not in the table (also negative or unknown
 * numbers) is OFFLOAD_HOME. */
int offload_route(long nr) __attribute__((visibility("default")));

/* "HOME", "LOCAL", ... for the stats file. */
const char *offload_class_name(int cls) __attribute__((visibility("hidden")));

#endif
