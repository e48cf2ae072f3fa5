/*
 * window.c: the memory-window backend of a marked process (docs/offload-threads.md
 * section 1). Two implementations behind one interface:
 *  - real: /dev/offload (OFFLOAD_IOC_WINDOW_INFO, ALLOC, FREE; mmap MAP_SHARED of window
 *    offsets), the runs owned by the open file;
 *  - fake: OFFLOAD_SHIM_FAKE_WINDOW=SIZE (K/M/G suffixes), a memfd of SIZE bytes with a
 *    first-fit page bitmap here, so the whole of "memory in the window" runs natively
 *    (tests/run-tests.sh) without the driver.
 * Callers serialise allocation (layout.c's lock). The fd is moved to a high number and
 * guarded by the handler (close/dup2 onto it are refused): the program must not be able
 * to close the file that owns its memory.
 */
#include "shim.h"
#include <fcntl.h>
#include <sys/mman.h>
#include "../kmod/offload_abi.h"

struct win_info shim_win = {.fd = -1};

#define FAKE_MAX_PAGES (1UL << 20) /* 4 GiB of fake window */
static uint64_t fake_bits[FAKE_MAX_PAGES / 64]; /* 1 = page allocated */
static uint64_t fake_pages;
static void set_bits(uint64_t p, uint64_t n, int v);

#define K_FALLOC_FL_KEEP_SIZE 1
#define K_FALLOC_FL_PUNCH_HOLE 2
#define K_SEEK_DATA 3
#define K_SEEK_HOLE 4
#define K_F_DUPFD_CLOEXEC 1030

/* parse_size: "256M" -> bytes; 0 on a malformed value. */
uint64_t shim_parse_size(const char *s)
{
    uint64_t v = 0;
    if (*s < '0' || *s > '9')
        return 0;
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (uint64_t)(*s++ - '0');
    switch (*s) {
    case 'k': case 'K': v <<= 10; s++; break;
    case 'm': case 'M': v <<= 20; s++; break;
    case 'g': case 'G': v <<= 30; s++; break;
    }
    return *s ? 0 : v;
}

/* high_fd: keep the window fd out of the range programs use (and away from dup2 targets
 * such as 0-2 and the small numbers shells like). */
static int high_fd(int fd)
{
    long hi = sys3(SYS_fcntl, fd, K_F_DUPFD_CLOEXEC, 900);
    if (hi < 0)
        return fd;
    sys1(SYS_close, fd);
    return (int)hi;
}

/* fake_file: SIZE@PATH names a file PATH.PID (the native migration test shares the window
 * between a process and its exec'd successor that way: exec keeps the pid, while other
 * processes of the test get windows of their own); SIZE alone is an anonymous memfd. */
static long fake_file(const char *spec, char *size, size_t cap)
{
    char path[4096];
    size_t i = 0, n = 0;
    uint64_t pid = (uint64_t)sys0(SYS_getpid), div = 1;
    while (spec[i] && spec[i] != '@' && i < cap - 1) {
        size[i] = spec[i];
        i++;
    }
    size[i] = 0;
    if (spec[i] != '@')
        return sys2(SYS_memfd_create, "offload-window", MFD_CLOEXEC);
    for (const char *p = spec + i + 1; *p && n < sizeof path - 24; p++)
        path[n++] = *p;
    path[n++] = '.';
    while (div * 10 <= pid)
        div *= 10;
    for (; div; div /= 10)
        path[n++] = (char)('0' + pid / div % 10);
    path[n] = 0;
    return sys4(SYS_openat, AT_FDCWD, path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
}

static int open_fake(const char *spec)
{
    char size[32];
    long fd = fake_file(spec, size, sizeof size);
    uint64_t n = shim_parse_size(size) & ~4095UL;
    if (fd >= 0 && (!n || n / 4096 > FAKE_MAX_PAGES)) {
        sys1(SYS_close, fd);
        return -22;
    }
    if (fd < 0)
        return (int)fd;
    if (sys2(SYS_ftruncate, fd, n) < 0) {
        sys1(SYS_close, fd);
        return -12;
    }
    shim_win = (struct win_info){.fd = high_fd((int)fd), .fake = 1, .size = n,
                                 .slice_off = 0, .slice_len = n, .node = 0};
    fake_pages = n / 4096;
    return 0;
}

static int open_real(void)
{
    struct offload_window_info wi;
    long fd = sys4(SYS_openat, AT_FDCWD, "/dev/offload", O_RDWR | O_CLOEXEC, 0);
    long r;
    if (fd < 0)
        return (int)fd;
    r = sys3(SYS_ioctl, fd, OFFLOAD_IOC_WINDOW_INFO, &wi);
    if (r < 0) {
        sys1(SYS_close, fd);
        return (int)r;
    }
    shim_win = (struct win_info){.fd = high_fd((int)fd), .fake = 0, .size = wi.size,
                                 .slice_off = wi.slice_offset, .slice_len = wi.slice_len,
                                 .node = wi.node_index};
    return 0;
}

/* win_open: the fake window if OFFLOAD_SHIM_FAKE_WINDOW is set, else /dev/offload. */
int win_open(char **envp)
{
    const char *fake = shim_getenv(envp, "OFFLOAD_SHIM_FAKE_WINDOW");
    return fake ? open_fake(fake) : open_real();
}

/* win_fake_reserve: pages another process allocated in a shared fake window (the
 * migration test's shadow takes over its home's allocations). */
void win_fake_reserve(uint64_t off, uint64_t pages)
{
    if (shim_win.fake && off / 4096 + pages <= fake_pages)
        set_bits(off / 4096, pages, 1);
}

/* win_adopt_fd: a window file handed over by someone else (the shadow's inherited fd,
 * or the fake memfd of a migration test); size is the window's size. */
void win_adopt_fd(int fd, int fake, uint64_t size)
{
    shim_win = (struct win_info){.fd = fd, .fake = fake, .size = size, .slice_off = 0,
                                 .slice_len = size, .node = 0};
    fake_pages = size / 4096;
}

void win_close(void)
{
    if (shim_win.fd >= 0)
        sys1(SYS_close, shim_win.fd);
    shim_win.fd = -1;
}

static int bit(uint64_t p) { return (int)(fake_bits[p / 64] >> (p % 64)) & 1; }

static void set_bits(uint64_t p, uint64_t n, int v)
{
    for (; n; n--, p++) {
        if (v)
            fake_bits[p / 64] |= 1UL << (p % 64);
        else
            fake_bits[p / 64] &= ~(1UL << (p % 64));
    }
}

/* fake_alloc: first fit over the bitmap; whole allocated words are skipped at once. */
static long fake_alloc(uint64_t n)
{
    uint64_t p = 0, run = 0;
    while (p < fake_pages) {
        if (!run && p % 64 == 0 && fake_bits[p / 64] == ~0UL) {
            p += 64;
            continue;
        }
        run = bit(p) ? 0 : run + 1;
        p++;
        if (run == n) {
            set_bits(p - n, n, 1);
            return (long)((p - n) * 4096);
        }
    }
    return -12;
}

long win_alloc(uint64_t pages)
{
    struct offload_alloc a = {.pages = pages};
    long r;
    if (!pages)
        return -22;
    if (shim_win.fake)
        return fake_alloc(pages);
    r = sys3(SYS_ioctl, shim_win.fd, OFFLOAD_IOC_ALLOC, &a);
    return r < 0 ? r : (long)a.offset;
}

/* win_free: give pages back. The fake punches a hole, so the pages read as zero when the
 * allocator hands them out again (ALLOC's contract: zero-filled). */
void win_free(uint64_t off, uint64_t pages)
{
    struct offload_free f = {.offset = off, .pages = pages};
    if (!pages)
        return;
    if (!shim_win.fake) {
        sys3(SYS_ioctl, shim_win.fd, OFFLOAD_IOC_FREE, &f);
        return;
    }
    sys4(SYS_fallocate, shim_win.fd, K_FALLOC_FL_PUNCH_HOLE | K_FALLOC_FL_KEEP_SIZE, off,
         pages * 4096);
    set_bits(off / 4096, pages, 0);
}

/* win_map: mmap window bytes [off, off+len) at addr (fixed: MAP_FIXED or
 * MAP_FIXED_NOREPLACE, or 0 to let the kernel choose). */
long win_map(uint64_t addr, uint64_t len, int prot, uint64_t off, int fixed)
{
    return shim_sys6(SYS_mmap, (long)addr, (long)len, prot, MAP_SHARED | fixed, shim_win.fd,
                     (long)off);
}

/* win_discard: the window bytes [off, off+len), mapped at addr, become zero (what
 * MADV_DONTNEED and a shrinking brk promise). The fake frees the memory too; the real
 * window has no "drop" operation, so the bytes are cleared through the mapping. */
void win_discard(void *addr, uint64_t off, uint64_t len)
{
    if (shim_win.fake)
        sys4(SYS_fallocate, shim_win.fd, K_FALLOC_FL_PUNCH_HOLE | K_FALLOC_FL_KEEP_SIZE, off,
             len);
    else
        shim_zero_fast(addr, len);
}

/* win_next_data: the first stretch [*lo, *hi) of [off, end) that may hold non-zero bytes
 * (the fake knows its holes; the real window says "all of it"). 0 when there is none. */
int win_next_data(uint64_t off, uint64_t end, uint64_t *lo, uint64_t *hi)
{
    long d, h;
    if (off >= end)
        return 0;
    if (!shim_win.fake) {
        *lo = off;
        *hi = end;
        return 1;
    }
    d = sys3(SYS_lseek, shim_win.fd, off, K_SEEK_DATA);
    if (d < 0 || (uint64_t)d >= end)
        return 0;
    h = sys3(SYS_lseek, shim_win.fd, d, K_SEEK_HOLE);
    *lo = (uint64_t)d;
    *hi = (h < 0 || (uint64_t)h > end) ? end : (uint64_t)h;
    return 1;
}
