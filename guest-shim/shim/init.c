/*
 * init.c: shim.so's constructor (reads OFFLOAD_SHIM / OFFLOAD_SHIM_STATS, installs the
 * SIGSYS handler, arms the main thread; in a marked process it first moves memory into
 * the window, move.c), the per-thread arming with Syscall User Dispatch, and the few
 * memory and environment helpers the rest uses instead of libc.
 */
#include "shim.h"

__thread struct shim_thread shim_self __attribute__((tls_model("initial-exec")));
char **shim_envp;
char **shim_argv;
int shim_marked;

void shim_copy(void *dst, const void *src, size_t n)
{
    volatile char *d = dst; /* volatile: keep gcc from turning the loop into memcpy() */
    const char *s = src;
    while (n--)
        *d++ = *s++;
}

void shim_zero(void *dst, size_t n)
{
    volatile char *d = dst;
    while (n--)
        *d++ = 0;
}

/* word-wise versions for page-sized work (moving memory): the byte loops above are kept
 * for small unaligned records */
void shim_copy_fast(void *dst, const void *src, size_t n)
{
    uint64_t *d = dst;
    const uint64_t *s = src;
    for (n /= 8; n; n--)
        *d++ = *s++;
}

void shim_zero_fast(void *dst, size_t n)
{
    volatile uint64_t *d = dst;
    for (n /= 8; n; n--)
        *d++ = 0;
}

/* shim_put_num: v in decimal at p (not terminated); returns the end. */
char *shim_put_num(char *p, uint64_t v)
{
    char d[24];
    int n = 0;
    do
        d[n++] = (char)('0' + v % 10);
    while ((v /= 10));
    while (n)
        *p++ = d[--n];
    return p;
}

size_t shim_strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

/* probe_word: does the kernel see 4 readable bytes at p? FUTEX_WAIT with a zero timeout
 * reads the word and returns at once: -EAGAIN (value differs) or -ETIMEDOUT (equal) if it
 * is readable, -EFAULT if not. No side effect. The word is the aligned one holding p. */
static int probe_word(const char *p)
{
    struct timespec zero = {0, 0};
    long r = sys4(SYS_futex, (long)p & ~3L, 128 /* FUTEX_WAIT_PRIVATE */, 0, &zero);
    return r != -14 /* EFAULT */;
}

/* shim_readable: can the shim read n bytes at p without faulting, as the kernel's
 * copy_from_user would have? Lets emulated calls return -EFAULT like the real ones.
 * Checks the first and last word: enough for the small (< 1 page) records we read. */
int shim_readable(const void *p, size_t n)
{
    const char *c = p;
    if (!p)
        return 0;
    return probe_word(c) && probe_word(c + n - 1);
}

static int env_is(const char *e, const char *name, const char **val)
{
    size_t i = 0;
    while (name[i] && e[i] == name[i])
        i++;
    if (name[i] || e[i] != '=')
        return 0;
    *val = e + i + 1;
    return 1;
}

const char *shim_getenv(char **envp, const char *name)
{
    const char *v;
    for (; envp && *envp; envp++)
        if (env_is(*envp, name, &v))
            return v;
    return 0;
}

static int shim_disabled(char **envp)
{
    const char *v = shim_getenv(envp, "OFFLOAD_SHIM");
    return v && path_is(v, "off");
}

/* is_marked: started by `offload run` (OFFLOAD_MARKED=1, or OFFLOAD_ON=NODE). */
static int is_marked(char **envp)
{
    const char *m = shim_getenv(envp, "OFFLOAD_MARKED"), *on = shim_getenv(envp, "OFFLOAD_ON");
    return (m && path_is(m, "1")) || (on && on[0]);
}

/* shim_arm_thread: selector BLOCK, then SUD on with the gate section as the allowed range.
 * The selector is the calling thread's TLS byte (a clone child without its own TLS shares
 * its parent's, which is harmless: in mode B the byte never changes after arming). */
int shim_arm_thread(void)
{
    long off = (long)__start_shim_gate;
    long len = (long)(__stop_shim_gate - __start_shim_gate);
    shim_self.selector = SUD_BLOCK;
    return (int)sys5(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH_, PR_SYS_DISPATCH_ON_, off, len,
                     &shim_self.selector);
}

void shim_say(const char *msg)
{
    sys3(SYS_write, 2, msg, shim_strlen(msg));
}

/* shim_say_kmsg: stderr and the kernel log (one record per call): a shadow's stderr is
 * /dev/null, so its messages would be lost otherwise. */
void shim_say_kmsg(const char *msg)
{
    long fd = sys4(SYS_openat, -100 /* AT_FDCWD */, "/dev/kmsg", 01 | O_CLOEXEC_, 0);
    shim_say(msg);
    if (fd < 0)
        return;
    sys3(SYS_write, fd, msg, shim_strlen(msg));
    sys1(SYS_close, fd);
}

#define BRK_RESERVE_DEFAULT (32UL << 20)

/* mark: open the window and move every private writable mapping into it. Without a
 * window the process runs unmarked (as mode B), which is correct at home. */
static void mark(char **envp)
{
    const char *b = shim_getenv(envp, "OFFLOAD_BRK");
    uint64_t brk_res = b ? shim_parse_size(b) : BRK_RESERVE_DEFAULT;
    if (win_open(envp) < 0) {
        shim_say("offload-shim: no memory window (/dev/offload); running unmarked\n");
        return;
    }
    shim_marked = 1;
    if (move_into_window(brk_res & ~(uint64_t)(PAGE - 1)) < 0)
        shim_say("offload-shim: could not move all memory into the window\n");
}

/* The dynamic loader calls ELF constructors with (argc, argv, envp); we need envp because
 * shim.so has no libc (no getenv). Runs before the program's own constructors. */
__attribute__((constructor)) static void shim_init(int argc, char **argv, char **envp)
{
    char *alt;
    int slot;

    if (shim_disabled(envp))
        return;
    shim_envp = envp;
    shim_argv = argv;
    stats_init(envp, argc > 0 ? argv[0] : "?");
    if (shim_getenv(envp, "OFFLOAD_SHADOW")) {
        shadow_start(envp); /* resumes the home's thread; returns only on failure */
        return;
    }
    if (is_marked(envp))
        mark(envp); /* before the altstack exists: that must stay private memory */
    sigs_init();
    slot = altstack_alloc(&alt);
    if (!alt || altstack_install(alt) < 0) {
        shim_say("offload-shim: no signal stack; shim not armed\n");
        return;
    }
    shim_self.slot = slot;
    altstack_set_owner(slot, (int)sys0(SYS_getpid), (int)sys0(SYS_gettid));
    if (shim_arm_thread() < 0) {
        shim_say("offload-shim: prctl(PR_SET_SYSCALL_USER_DISPATCH) failed; shim not armed\n");
        return;
    }
    migrate_main_thread(envp); /* OFFLOAD_ON: returns in the shadow (or at home on failure) */
}
