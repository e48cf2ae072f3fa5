/*
 * procmaps.c: /proc/self/maps, read and parsed without libc. Used by the constructor
 * (which mappings move into the window), the stats line (private writable mappings left)
 * and the spawn record (file mappings the shadow must have at the same places).
 * One static buffer: the result is valid until the next procmaps_read; callers are the
 * constructor and paths that hold the layout lock, so there is no concurrent use.
 */
#include "shim.h"
#include <fcntl.h>
#include <sys/mman.h>

static char buf[256 * 1024];

static const char *hex(const char *p, uint64_t *v)
{
    uint64_t x = 0;
    for (;; p++) {
        int d = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
        if (d < 0)
            break;
        x = x * 16 + (uint64_t)d;
    }
    *v = x;
    return p;
}

static const char *skip_field(const char *p)
{
    while (*p && *p != ' ')
        p++;
    while (*p == ' ')
        p++;
    return p;
}

/* parse_line: "lo-hi perms off dev inode   path" (path may be empty). */
static void parse_line(char *line, struct pmap *m)
{
    const char *p = hex(line, &m->lo);
    uint64_t dummy;
    p = hex(p + 1, &m->hi);
    p++;
    m->prot = (p[0] == 'r' ? PROT_READ : 0) | (p[1] == 'w' ? PROT_WRITE : 0) |
              (p[2] == 'x' ? PROT_EXEC : 0);
    m->priv = p[3] == 'p';
    p = hex(skip_field(p), &m->off);
    p = skip_field(skip_field(p)); /* dev */
    (void)dummy;
    p = hex(p, &m->inode);
    while (*p == ' ')
        p++;
    m->path = p;
}

static long read_all(void)
{
    long fd = sys4(SYS_openat, AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC, 0);
    long n = 0, r;
    if (fd < 0)
        return fd;
    while (n < (long)sizeof buf - 1 && (r = sys3(SYS_read, fd, buf + n, sizeof buf - 1 - n)) > 0)
        n += r;
    sys1(SYS_close, fd);
    buf[n] = 0;
    return n;
}

/* procmaps_read: up to max entries into m; returns the count or -errno. */
int procmaps_read(struct pmap *m, int max)
{
    long n = read_all();
    char *line = buf;
    int count = 0;
    if (n < 0)
        return (int)n;
    while (*line && count < max) {
        char *nl = line;
        while (*nl && *nl != '\n')
            nl++;
        if (*nl)
            *nl++ = 0;
        parse_line(line, &m[count++]);
        line = nl;
    }
    return count;
}

int path_is(const char *path, const char *name)
{
    while (*name && *path == *name)
        path++, name++;
    return !*name && !*path;
}
