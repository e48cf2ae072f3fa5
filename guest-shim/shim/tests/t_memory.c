/* t_memory.c: the address-space calls a marked process's shim emulates on window memory
 * (docs/offload-threads.md section 1), with results that must equal the native ones:
 * brk growth and shrink (pages given back read zero again), large malloc (mmap path) and
 * realloc (mremap), mprotect and PROT_NONE reservations made writable later, partial
 * munmap, MADV_DONTNEED zeroing, MAP_SHARED anonymous memory shared with a fork child,
 * a fork child's private copy (its writes stay its own), malloc arenas of threads, and
 * memory made after a close_range of every fd above stderr (the shim's fds must stay). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static long global_counter = 41;

static unsigned long sum(const unsigned char *p, size_t n)
{
    unsigned long s = 0;
    for (size_t i = 0; i < n; i++)
        s = s * 31 + p[i];
    return s;
}

static void test_brk(void)
{
    char *base = sbrk(0);
    size_t step = 1 << 20;
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        char *p = sbrk(step);
        if (p == (void *)-1) {
            printf("brk: sbrk failed\n");
            return;
        }
        memset(p, 0x5a, step);
    }
    ok &= (char *)sbrk(0) == base + 4 * step;
    ok &= base[4 * step - 1] == 0x5a;
    sbrk(-(long)(2 * step)); /* give back two MiB */
    char *again = sbrk(step);
    for (size_t i = 0; i < step; i += 4096)
        ok &= again[i] == 0; /* fresh pages after a shrink read zero */
    sbrk(-(long)(3 * step));
    printf("brk: grow, shrink, regrow zero: %s\n", ok ? "ok" : "BAD");
}

static void test_malloc_big(void)
{
    size_t n = 8 << 20;
    unsigned char *p = malloc(n);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 7);
    unsigned long before = sum(p, n), half = sum(p, n / 2);
    p = realloc(p, 3 * n); /* mremap natively; refused on window memory, glibc copies */
    int ok = p && sum(p, n) == before;
    memset(p + n, 1, 2 * n);
    p = realloc(p, n / 2);
    ok &= p && sum(p, n / 2) == half;
    free(p);
    printf("malloc 8 MiB, realloc 24 MiB and back: %s\n", ok ? "ok" : "BAD");
}

static void test_mprotect(void)
{
    size_t pg = 4096, n = 16 * pg;
    char *r = mmap(0, n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    int ok = r != MAP_FAILED;
    ok &= mprotect(r + 4 * pg, 8 * pg, PROT_READ | PROT_WRITE) == 0;
    for (size_t i = 4 * pg; i < 12 * pg; i++)
        ok &= r[i] == 0;
    memset(r + 4 * pg, 3, 8 * pg);
    ok &= mprotect(r + 4 * pg, 2 * pg, PROT_READ) == 0;
    ok &= r[4 * pg] == 3;
    ok &= mprotect(r + 4 * pg, 2 * pg, PROT_READ | PROT_WRITE) == 0;
    r[4 * pg] = 9;
    ok &= munmap(r + 6 * pg, 2 * pg) == 0; /* a hole in the middle */
    ok &= r[8 * pg] == 3 && r[4 * pg] == 9;
    ok &= madvise(r + 8 * pg, 2 * pg, MADV_DONTNEED) == 0;
    ok &= r[8 * pg] == 0 && r[9 * pg + 5] == 0 && r[10 * pg] == 3;
    ok &= munmap(r, n) == 0;
    ok &= mprotect(r, pg, PROT_READ) != 0; /* gone: ENOMEM like natively */
    printf("mprotect reservation, partial munmap, DONTNEED: %s\n", ok ? "ok" : "BAD");
}

static void test_fork(void)
{
    long *shared = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    char *heap = malloc(100000);
    char stackbuf[256];
    memset(heap, 'h', 100000);
    memset(stackbuf, 's', sizeof stackbuf);
    *shared = 0;
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        int ok = heap[99999] == 'h' && stackbuf[255] == 's' && global_counter == 41;
        heap[0] = 'c';
        global_counter = 1000;
        stackbuf[0] = 'c';
        *shared = ok ? 77 : 66; /* MAP_SHARED stays shared with the parent */
        _exit(ok ? 0 : 1);
    }
    int st;
    waitpid(p, &st, 0);
    int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0 && *shared == 77;
    ok &= heap[0] == 'h' && global_counter == 41 && stackbuf[0] == 's'; /* not the child's */
    printf("fork: child saw a copy, its writes stayed its own, shared stayed shared: %s\n",
           ok ? "ok" : "BAD");
    free(heap);
}

static void *arena_user(void *arg)
{
    long id = (long)arg;
    unsigned long s = 0;
    for (int i = 0; i < 200; i++) {
        char *p = malloc(1000 + i * 100);
        memset(p, (int)id, 1000 + i * 100);
        s += (unsigned char)p[999];
        free(p);
    }
    return (void *)s;
}

static void test_arenas(void)
{
    pthread_t t[4];
    long total = 0;
    for (long i = 0; i < 4; i++)
        pthread_create(&t[i], 0, arena_user, (void *)(i + 1));
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        total += (long)r;
    }
    printf("threads with malloc arenas: total=%ld\n", total);
}

static void test_close_range(void)
{
    size_t n = 1 << 20;
    unsigned char *p;
    int ok = syscall(SYS_close_range, 3, ~0U, 0) == 0;
    p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ok = ok && p != MAP_FAILED;
    if (ok) {
        memset(p, 7, n);
        for (size_t i = 0; i < n && ok; i++)
            ok = p[i] == 7;
        ok = ok && munmap(p, n) == 0;
    }
    printf("close_range of every fd, then mmap: %s\n", ok ? "ok" : "BAD");
}

int main(void)
{
    test_brk();
    test_malloc_big();
    test_mprotect();
    test_fork();
    test_arenas();
    test_close_range();
    global_counter++;
    printf("done counter=%ld\n", global_counter);
    return 0;
}
