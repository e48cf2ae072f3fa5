/* t_fileio.c: single-thread file I/O in a temp dir (argv[1]): mkdir, open/write/read/close,
 * symlink/readlink, getdents64 (sorted), stat, errors (errno must match), unlink, rmdir. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* CALL: evaluate the call, then errno (printf's argument order is unspecified). */
#define CALL(label, expr)                                                      \
    do {                                                                       \
        long r_ = (long)(expr);                                                \
        int e_ = errno;                                                        \
        printf("%s %ld errno=%s\n", label, r_, r_ < 0 ? strerrorname_np(e_) : "-"); \
    } while (0)

static int cmp(const void *a, const void *b) { return strcmp(*(char **)a, *(char **)b); }

static void list_dir(const char *path)
{
    char buf[4096], *names[64];
    int fd = open(path, O_RDONLY | O_DIRECTORY), n = 0;
    long got;
    while ((got = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
        for (long off = 0; off < got;) {
            struct dirent64 *d = (void *)(buf + off);
            if (n < 64)
                names[n++] = strdup(d->d_name);
            off += d->d_reclen;
        }
    }
    close(fd);
    qsort(names, n, sizeof *names, cmp);
    printf("dir %s:", strrchr(path, '/') + 1);
    for (int i = 0; i < n; i++)
        printf(" %s", names[i]), free(names[i]);
    printf("\n");
}

int main(int argc, char **argv)
{
    char d[512], f[600], l[600], got[64] = {0};
    struct stat st;
    if (argc < 2)
        return 2;
    snprintf(d, sizeof d, "%s/sub", argv[1]);
    snprintf(f, sizeof f, "%s/file.txt", d);
    snprintf(l, sizeof l, "%s/link", d);
    CALL("mkdir", mkdir(d, 0755));
    CALL("mkdir again", mkdir(d, 0755));
    int fd = open(f, O_CREAT | O_RDWR | O_TRUNC, 0644);
    printf("open ok=%d\n", fd >= 0);
    CALL("write", write(fd, "hello shim\n", 11));
    CALL("lseek", lseek(fd, 0, SEEK_SET));
    CALL("read", read(fd, got, sizeof got - 1));
    printf("read got '%.10s'\n", got);
    CALL("close", close(fd));
    CALL("close bad", close(fd));
    CALL("symlink", symlink("file.txt", l));
    memset(got, 0, sizeof got);
    CALL("readlink", readlink(l, got, sizeof got - 1));
    printf("readlink got %s\n", got);
    CALL("stat", stat(l, &st));
    printf("stat size=%ld\n", (long)st.st_size);
    CALL("open missing", open("/nonexistent/x", O_RDONLY));
    list_dir(d);
    FILE *fp = fopen(f, "a"); /* stdio on top */
    fprintf(fp, "line %d\n", 2);
    fclose(fp);
    stat(f, &st);
    printf("appended size=%ld\n", (long)st.st_size);
    CALL("rmdir nonempty", rmdir(d));
    CALL("unlink link", unlink(l));
    CALL("unlink file", unlink(f));
    CALL("unlink again", unlink(f));
    list_dir(d);
    CALL("rmdir", rmdir(d));
    return 0;
}
