/*
 * shim.h: internal declarations shared by the files of shim.so (the syscall shim of
 * docs/offload-threads.md section 2, "mode B": every trapped call runs locally).
 * Nothing here is called from the program; the only exported symbol is offload_route()
 * (route.h). Everything on the SIGSYS path uses the raw syscall gate of gate.S, never libc:
 * shim.so links against nothing (-nostdlib), so a libc call could not even be linked.
 */
#ifndef OFFLOAD_SHIM_H
#define OFFLOAD_SHIM_H

#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <ucontext.h>
#include <sys/syscall.h>

#define HIDDEN __attribute__((visibility("hidden")))

/* Kernel ABI constants we need (spelled out: linux/prctl.h clashes with glibc's headers). */
#define PR_SET_SYSCALL_USER_DISPATCH_ 59
#define PR_SYS_DISPATCH_ON_ 1
#define SUD_ALLOW 0
#define SUD_BLOCK 1
#define SI_SYS_USER_DISPATCH 2
#define K_SA_RESTORER 0x04000000
#define K_SS_AUTODISARM (1U << 31)
#define K_MINSIGSTKSZ 2048UL /* the kernel's; glibc's MINSIGSTKSZ may call sysconf() */
#define KSIGSET_SIZE 8 /* the kernel's sigset_t on x86_64: one 64-bit word */
#define SIGBIT(s) (1UL << ((s) - 1))

/* ---- gate.S: the only code that executes `syscall` (the SUD allowed range) ---- */
long shim_sys6(long nr, long a1, long a2, long a3, long a4, long a5, long a6) HIDDEN;
void shim_restorer(void) HIDDEN;                                  /* rt_sigreturn */
__attribute__((noreturn)) void shim_sigreturn_at(long sp) HIDDEN; /* rt_sigreturn, rsp=sp */
extern const char __start_shim_gate[] HIDDEN;
extern const char __stop_shim_gate[] HIDDEN;

#define sys0(n) shim_sys6((n), 0, 0, 0, 0, 0, 0)
#define sys1(n, a) shim_sys6((n), (long)(a), 0, 0, 0, 0, 0)
#define sys2(n, a, b) shim_sys6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define sys3(n, a, b, c) shim_sys6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define sys4(n, a, b, c, d) shim_sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define sys5(n, a, b, c, d, e) \
    shim_sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

/* The kernel's struct sigaction layout on x86_64 (not glibc's). */
struct ksigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

/* ---- per-thread state (static TLS: shim.so is loaded at startup by LD_PRELOAD) ---- */
struct shim_thread {
    char selector;   /* SUD selector byte: SUD_BLOCK once armed, never flipped in mode B */
    int slot;        /* altstack pool slot + 1 (0: none, e.g. a thread without its own TLS) */
    int prog_ss_set; /* the program called sigaltstack: prog_ss is its (virtual) wish */
    stack_t prog_ss;
};
extern __thread struct shim_thread shim_self HIDDEN __attribute__((tls_model("initial-exec")));

/* ---- init.c ---- */
int shim_arm_thread(void) HIDDEN; /* prctl SUD on for the calling thread */

/* ---- altstack.c: per-thread signal stacks, mmap'd, recycled after the thread died ---- */
#define ALT_SIZE (256 * 1024)
int altstack_alloc(char **base) HIDDEN;       /* returns slot+1 (0 when untracked) */
void altstack_set_owner(int slot, int tgid, int tid) HIDDEN;
void altstack_exiting(int slot, int tid) HIDDEN; /* owner is about to exit */
void altstack_release(int slot, char *base) HIDDEN; /* never used / owner gone: free now */
void altstack_after_fork(int keep_slot, int pid) HIDDEN;
int altstack_install(char *base) HIDDEN;      /* sigaltstack() for the calling thread */

/* ---- stats.c ---- */
void stats_init(char **envp, const char *argv0) HIDDEN;
void stats_count(long nr) HIDDEN;
void stats_reset_in_child(void) HIDDEN;
int stats_owner(void) HIDDEN;
void stats_write(const char *at) HIDDEN;

/* ---- sigs.c: signal interposition ---- */
void sigs_init(void) HIDDEN;
long sigs_rt_sigaction(const long *a) HIDDEN;
long sigs_sigaltstack(const long *a) HIDDEN;
long sigs_rt_sigprocmask(const long *a, ucontext_t *uc) HIDDEN;
long sigs_masked_call(long nr, const long *a) HIDDEN;
void sigs_foreign_sigsys(int sig, siginfo_t *si, void *ctx) HIDDEN;
void shim_on_sigsys(int sig, siginfo_t *si, void *ctx) HIDDEN;

/* ---- clone.c ---- */
long clone_trap(long nr, const long *a, ucontext_t *uc) HIDDEN;
long thread_exit_trap(const long *a) HIDDEN;

/* ---- util (init.c) ---- */
void shim_copy(void *dst, const void *src, size_t n) HIDDEN;
void shim_zero(void *dst, size_t n) HIDDEN;
size_t shim_strlen(const char *s) HIDDEN;
int shim_readable(const void *p, size_t n) HIDDEN;

#endif
