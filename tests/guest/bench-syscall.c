/*
 * tests/guest/bench-syscall.c: the syscall benchmark's guest program (issue 5, item 7).
 *
 * Times batches of file-system calls on a directory five levels deep: open+close (create),
 * unlink, mkdir, rmdir, symlink and unlink of the links, N calls each, and prints one line per
 * call kind with the mean time per call. The same binary runs in the three modes of the
 * benchmark (unmarked, marked at home, thread offloaded); the caller compares the lines.
 * Every call must succeed and the directory must be empty at the end, else exit status 1:
 * a mode whose results differ fails the benchmark instead of producing a number.
 *
 * Usage: ot-bench-syscall [-n N] [-d BASE] [-p]   (defaults: 200, /tmp/ot-bench)
 * Output, after the last batch: "bench call=NAME n=N ns_per_call=X" lines, then
 * "bench result calls=C left=0".
 * With -p, "bench phase NAME" is printed (and flushed) one second before each batch and
 * "bench phase end" after the last, so a host script can take monitor statistics between
 * batches; a first phase "idle" (one second, no calls) measures what that second alone
 * costs, to subtract.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char dir[512];
static long calls;

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what, const char *path)
{
	printf("bench error: %s %s: %s\n", what, path, strerror(errno));
	exit(1);
}

/* Creates BASE/l1/.../l5 (existing levels are fine) and leaves its path in `dir`. */
static void make_deep_dir(const char *base)
{
	int n = snprintf(dir, sizeof(dir), "%s", base);

	if (mkdir(dir, 0755) && errno != EEXIST)
		die("mkdir", dir);
	for (int level = 1; level <= 5; level++) {
		n += snprintf(dir + n, sizeof(dir) - n, "/l%d", level);
		if (mkdir(dir, 0755) && errno != EEXIST)
			die("mkdir", dir);
	}
}

static void name(char *out, size_t len, char kind, int i)
{
	snprintf(out, len, "%s/%c%d", dir, kind, i);
}

/* One call of kind `op` on item `i`; dies on failure. */
static void one_call(const char *op, int i)
{
	char path[600];

	if (!strcmp(op, "open_close")) {
		name(path, sizeof(path), 'f', i);
		int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
		if (fd < 0 || close(fd))
			die("open/close", path);
	} else if (!strcmp(op, "unlink")) {
		name(path, sizeof(path), 'f', i);
		if (unlink(path))
			die("unlink", path);
	} else if (!strcmp(op, "mkdir")) {
		name(path, sizeof(path), 'd', i);
		if (mkdir(path, 0755))
			die("mkdir", path);
	} else if (!strcmp(op, "rmdir")) {
		name(path, sizeof(path), 'd', i);
		if (rmdir(path))
			die("rmdir", path);
	} else if (!strcmp(op, "symlink")) {
		name(path, sizeof(path), 's', i);
		if (symlink("target-of-the-link", path))
			die("symlink", path);
	} else {
		name(path, sizeof(path), 's', i);
		if (unlink(path))
			die("unlink", path);
	}
	calls++;
}

/* Entries left in `dir` besides . and .. */
static int entries_left(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (!d)
		die("opendir", dir);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* Announces the next batch and leaves the host a second to take its statistics. */
static void mark(const char *phase)
{
	printf("bench phase %s\n", phase);
	fflush(stdout);
	sleep(1);
}

int main(int argc, char **argv)
{
	static const char *const ops[] = { "open_close", "unlink", "mkdir", "rmdir",
					   "symlink", "unlink_symlink" };
	const char *base = "/tmp/ot-bench";
	int n = 200, opt, phases = 0;

	while ((opt = getopt(argc, argv, "n:d:p")) != -1) {
		if (opt == 'n')
			n = atoi(optarg);
		else if (opt == 'd')
			base = optarg;
		else if (opt == 'p')
			phases = 1;
		else
			return 2;
	}
	if (n <= 0) {
		fprintf(stderr, "usage: ot-bench-syscall [-n N>0] [-d BASE]\n");
		return 2;
	}
	make_deep_dir(base);
	if (phases)
		mark("idle");
	/* Results are printed after the last batch: a batch then costs exactly what the idle
	 * second costs besides its calls (one marker line on the console). */
	long long per_call[sizeof(ops) / sizeof(ops[0])];
	for (size_t k = 0; k < sizeof(ops) / sizeof(ops[0]); k++) {
		if (phases)
			mark(ops[k]);
		long long t0 = now_ns();
		for (int i = 0; i < n; i++)
			one_call(ops[k], i);
		per_call[k] = (now_ns() - t0) / n;
	}
	if (phases)
		mark("end");
	for (size_t k = 0; k < sizeof(ops) / sizeof(ops[0]); k++)
		printf("bench call=%s n=%d ns_per_call=%lld\n", ops[k], n, per_call[k]);
	printf("bench result calls=%ld left=%d\n", calls, entries_left());
	return entries_left() ? 1 : 0;
}
