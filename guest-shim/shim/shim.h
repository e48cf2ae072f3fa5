/*
 * shim.h: internal declarations shared by the files of shim.so (the syscall shim of
 * docs/offload-threads.md: mode B, every trapped call runs locally; marked mode, all
 * writable memory in the window; migration and shadows).
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
    long clear_tid;  /* marked mode: CLONE_CHILD_CLEARTID done by the shim at exit */
    long home_tid;   /* offloaded: the tid of this thread's executor at home (the tid the
                      * program sees); the TLS is window memory, shared with the executor */
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
long thread_exit_as(long code, int slot, long clear) HIDDEN; /* never returns */
long clone_fork_for(long flags, long ptid, long ctid, int slot) HIDDEN; /* executor's fork */
/* gate.S: a raw clone(flags, stack, tls) whose child calls fn(arg) on that stack */
long shim_thread_start(long flags, void *stack, long tls, void (*fn)(void *), void *arg) HIDDEN;

/* ---- util (init.c) ---- */
void shim_copy(void *dst, const void *src, size_t n) HIDDEN;
void shim_zero(void *dst, size_t n) HIDDEN;
void shim_copy_fast(void *dst, const void *src, size_t n) HIDDEN; /* 8-byte aligned, n%8==0 */
void shim_zero_fast(void *dst, size_t n) HIDDEN;                  /* same */
size_t shim_strlen(const char *s) HIDDEN;
char *shim_put_num(char *p, uint64_t v) HIDDEN; /* decimal, not terminated; returns the end */
int shim_readable(const void *p, size_t n) HIDDEN;
const char *shim_getenv(char **envp, const char *name) HIDDEN;
void shim_say(const char *msg) HIDDEN; /* to stderr */
extern char **shim_envp HIDDEN;        /* the environment the process started with */

/* ---- marked mode: all private writable memory in the window (window.c, layout.c,
 * memcalls.c, move.c, procmaps.c; docs/offload-threads.md section 1) ---- */
#define PAGE 4096
static inline int is_err(long r) { return r < 0 && r > -4096; } /* a raw call's -errno */
static inline uint64_t pgup(uint64_t x) { return (x + PAGE - 1) & ~(uint64_t)(PAGE - 1); }
#define O_CLOEXEC_ 02000000
extern int shim_marked HIDDEN; /* 1: this process's writable memory is in the window */

struct win_info {
    int fd; /* -1: no window */
    int fake; /* a memfd standing in for /dev/offload (OFFLOAD_SHIM_FAKE_WINDOW) */
    uint64_t size, slice_off, slice_len;
    uint32_t node;
};
extern struct win_info shim_win HIDDEN;
int win_open(char **envp) HIDDEN;
uint64_t shim_parse_size(const char *s) HIDDEN; /* "32M" -> bytes, 0 if malformed */
void win_adopt_fd(int fd, int fake, uint64_t size) HIDDEN;
void win_close(void) HIDDEN;
long win_alloc(uint64_t pages) HIDDEN; /* window offset, or -errno */
void win_free(uint64_t off, uint64_t pages) HIDDEN;
long win_map(uint64_t addr, uint64_t len, int prot, uint64_t off, int fixed) HIDDEN;
void win_discard(void *addr, uint64_t off, uint64_t len) HIDDEN;
int win_next_data(uint64_t off, uint64_t end, uint64_t *lo, uint64_t *hi) HIDDEN;

/* the table of window mappings (layout.c); sorted by addr, disjoint */
enum { WM_NONE = 0, WM_WIN = 1, WM_PENDING = 2 };
struct wmap {
    uint64_t addr, len, off; /* off: window offset (WIN only) */
    uint32_t prot, kind;
};
#define TAB_MAX 8192
extern struct wmap shim_tab[TAB_MAX] HIDDEN;
extern int shim_ntab HIDDEN;
void layout_lock(uint64_t *saved_mask) HIDDEN;
void layout_unlock(const uint64_t *saved_mask) HIDDEN;
void layout_reset_lock(void) HIDDEN;
int layout_is_window(uint64_t addr) HIDDEN;
int layout_index(uint64_t addr) HIDDEN;
struct wmap *layout_find(uint64_t addr) HIDDEN;
int tab_add(uint64_t addr, uint64_t len, uint64_t off, int prot, int kind) HIDDEN;
int tab_cut(uint64_t lo, uint64_t hi) HIDDEN;
int tab_range(uint64_t lo, uint64_t hi, int *first, int *end) HIDDEN;
int tab_uncovered(uint64_t *lo, uint64_t hi, uint64_t *gap_end) HIDDEN;
void layout_clear(void) HIDDEN;

/* memcalls.c */
struct brk_state {
    uint64_t lo, hi, cur; /* the break moves inside [lo, hi] */
    int on;
};
extern struct brk_state shim_brk HIDDEN;
void copy_nonzero(char *dst, const char *src, uint64_t len) HIDDEN;
long adopt(uint64_t addr, uint64_t len, int prot, int copy) HIDDEN;
long mem_mmap(const long *a) HIDDEN;
long mem_munmap(const long *a) HIDDEN;
long mem_mprotect(long nr, const long *a) HIDDEN;
long mem_mremap(const long *a) HIDDEN;
long mem_madvise(const long *a) HIDDEN;
long mem_brk(const long *a) HIDDEN;
long mem_futex(const long *a) HIDDEN;
long mem_fd_guard(long nr, const long *a) HIDDEN;
void fd_guard_add(int fd) HIDDEN;  /* an fd of the shim's own (an executor's file) */
void fd_guard_drop(int fd) HIDDEN; /* ... about to be closed by the shim */

/* procmaps.c */
struct pmap {
    uint64_t lo, hi, off, inode;
    uint32_t prot;
    int priv;
    const char *path; /* "" for anonymous; points into procmaps.c's buffer */
};
int procmaps_read(struct pmap *m, int max) HIDDEN;
int path_is(const char *path, const char *name) HIDDEN;

/* move.c */
struct fork_job {
    long flags, ctid;
    int pipe[2];
    uint64_t saved;
    int slot; /* the forking thread's altstack slot (0: shim_self.slot) */
};
long move_into_window(uint64_t brk_res) HIDDEN;
void shim_rw_range(uint64_t *lo, uint64_t *hi) HIDDEN; /* the shim's own data+bss */
long fork_prepare(struct fork_job *f, long *flags, long ctid) HIDDEN;
void fork_parent(struct fork_job *f, long r) HIDDEN;
void fork_unmark_child(const struct fork_job *f) HIDDEN;
void shim_on_stack(void *top, void (*fn)(void *), void *arg) HIDDEN; /* onstack.S */

/* ---- migration (migrate.c: home side; shadow.c: shadow side; record.h) ---- */
#define OFFLOAD_SYS_MIGRATE 0x4f4c0001L /* trapped: capture this context, move the thread */
#define OFFLOAD_SYS_RESUME 0x4f4c0002L  /* trapped in the shadow: restore the context */
#define OFFLOAD_SYS_LAYOUT 0x4f4c0003L  /* forwarded to the executor: a LAYOUT call + reply */
#define OFFLOAD_SYS_NEWEXEC 0x4f4c0004L /* forwarded: a new executor thread (arg: its TLS) */
#define OFFLOAD_SYS_FORK 0x4f4c0005L    /* forwarded: fork at home, the child resumes ctx */
long shim_trap(long nr, long arg) HIDDEN; /* onstack.S */
long shim_dispatch(long nr, const long *a, ucontext_t *uc) HIDDEN; /* handler.c */
extern char **shim_argv HIDDEN;
void win_fake_reserve(uint64_t off, uint64_t pages) HIDDEN;
long migrate_trap(const long *a, ucontext_t *uc) HIDDEN;   /* home: never returns on success */
void migrate_main_thread(char **envp) HIDDEN;              /* constructor, OFFLOAD_ON */
int shadow_start(char **envp) HIDDEN;                      /* constructor, OFFLOAD_SHADOW */
void shadow_resume(ucontext_t *uc, const long *a) HIDDEN;   /* the RESUME trap (a[0]: ctx) */
struct rec_ctx;
void migrate_capture(struct rec_ctx *c, const ucontext_t *uc) HIDDEN;
uint32_t frame_fp_size(const ucontext_t *uc) HIDDEN; /* FPU bytes in a signal frame */
void migrate_new_thread(const greg_t *gregs, const void *fx, int node) HIDDEN; /* --place */
long executor_open(int nonblock) HIDDEN;                  /* executor.c */
void executor_serve(int fd, int slot, ucontext_t *uc) HIDDEN; /* never returns */
int place_of_next_thread(void) HIDDEN; /* home: node of the next thread created, or -1 */
long shadow_newexec(long tls) HIDDEN;  /* offloaded clone: the new thread's executor */
long shadow_end_exec(long tid) HIDDEN; /* ... ended again when the local clone failed */
long shadow_fork_home(const ucontext_t *uc, long flags, long ptid, long ctid, long sp) HIDDEN;
long shadow_thread_exit(const long *a) HIDDEN;
void shim_say_kmsg(const char *msg) HIDDEN; /* stderr and /dev/kmsg (a shadow's stderr is null) */
extern int shim_offloaded HIDDEN; /* this thread runs away from home: forward */
extern int shim_resumed HIDDEN;
extern uint64_t shim_job_lo HIDDEN, shim_job_hi HIDDEN;
long offloaded_call(long nr, const long *a, ucontext_t *uc, int *handled) HIDDEN;

/* The layout reply an executor writes for a forwarded LAYOUT call (window memory of the
 * calling thread: its TLS): the table entries covering the affected range afterwards. */
#define LAYOUT_REPLY_MAX 16
struct layout_req {
    long nr, args[6];
    uint64_t lo, hi; /* range the reply describes */
    uint32_t n, more; /* entries; more: the range had more than LAYOUT_REPLY_MAX */
    uint32_t pushed, reserved; /* pushed: every shadow (the caller's too) has it already */
    struct wmap e[LAYOUT_REPLY_MAX];
};
long exec_layout(struct layout_req *q, ucontext_t *uc) HIDDEN; /* migrate.c, executor side */
void layout_replay(const struct layout_req *q) HIDDEN;          /* shadow.c */
void shadow_threads_add(int n) HIDDEN; /* shadow.c: program threads here (0: exit_group) */

/* push.c: layout changes at home pushed to every shadow; the shadow's agent */
extern int shim_pushing HIDDEN, shim_push_possible HIDDEN;
void push_lock(uint64_t *saved) HIDDEN;
void push_unlock(const uint64_t *saved) HIDDEN;
void push_after_fork(void) HIDDEN;
void layout_describe(struct layout_req *q, uint64_t lo, uint64_t hi) HIDDEN;
long home_layout_call(long nr, const long *a) HIDDEN;
int push_agent_start(char *stack_lo, char *stack_hi) HIDDEN;
long shim_map_file(const char *path, uint64_t addr, uint64_t len, uint32_t prot, uint64_t off,
                   int noreplace) HIDDEN;
/* A signal for a thread of the process that runs on another node, pushed to its shadows
 * (the bytes of an OFFLOAD_IOC_PUSH, told apart from a layout_req by mark). */
#define SIG_PUSH_MARK 0x4f4c5349474e414cL /* "LANGISLO" */
struct sig_push {
    long mark;
    uint32_t home_tid, signo;
    struct ksigaction act; /* the handler as installed at home */
    uint8_t info[48];      /* the start of its siginfo_t (EXEC_WAIT's record) */
};
void push_signal(const struct sig_push *p) HIDDEN;
void shadow_tid_add(long home_tid, long tid) HIDDEN; /* shadow.c: home tid -> local tid */
void shadow_tid_drop(long home_tid) HIDDEN;
long shadow_tid_of(long home_tid) HIDDEN;

/* stats.c: counters of marked mode */
struct shim_mstats {
    unsigned long futex_private; /* futex ops made private (window address) */
    unsigned long moved_bytes;   /* bytes moved into the window at load */
};
extern struct shim_mstats shim_stats HIDDEN;
int altstack_owns(uint64_t addr) HIDDEN; /* altstack.c: addr is in one of our altstacks */

#endif
