/*
 * tests/guest/files.c: e2e program for offloaded file-system calls (issue 5, item 6).
 *
 * Under DIR it creates a directory tree, a file with known content and a symlink to it, reads
 * both back, then copies stdin to stdout until end of file. Run with `offload run --on b`,
 * every one of these calls belongs to the home: the tree must appear in the home's file
 * system (and not in b's), and the echo goes through the home's stdin and stdout.
 *
 * Usage: ot-files DIR      Output: "files: ..." lines, the echoed input, "files: done echoed=N".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(const char *what, const char *path)
{
	printf("files: error: %s %s: %s\n", what, path, strerror(errno));
	return 1;
}

/* DIR/tree/a/b, DIR/tree/file ("content-from-the-program\n"), DIR/tree/link -> file. */
static int make_tree(const char *dir)
{
	static const char content[] = "content-from-the-program\n";
	const char *const dirs[] = { "tree", "tree/a", "tree/a/b" };
	char path[512];
	int fd;

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, dirs[i]);
		if (mkdir(path, 0755))
			return fail("mkdir", path);
	}
	snprintf(path, sizeof(path), "%s/tree/file", dir);
	fd = open(path, O_CREAT | O_WRONLY | O_EXCL, 0644);
	if (fd < 0 || write(fd, content, sizeof(content) - 1) != sizeof(content) - 1 || close(fd))
		return fail("create", path);
	snprintf(path, sizeof(path), "%s/tree/link", dir);
	if (symlink("file", path))
		return fail("symlink", path);
	return 0;
}

/* Reads the file through the link and prints it, and the link's target. */
static int read_back(const char *dir)
{
	char path[512], buf[128], target[128];
	ssize_t n, t;
	int fd;

	snprintf(path, sizeof(path), "%s/tree/link", dir);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return fail("open", path);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	t = readlink(path, target, sizeof(target) - 1);
	if (n < 0 || t < 0)
		return fail("read", path);
	buf[n] = 0;
	target[t] = 0;
	printf("files: read-back=%s", buf);
	printf("files: link-target=%s\n", target);
	return 0;
}

int main(int argc, char **argv)
{
	char buf[4096];
	long echoed = 0;
	ssize_t n;

	if (argc != 2) {
		fprintf(stderr, "usage: ot-files DIR\n");
		return 2;
	}
	if (make_tree(argv[1]) || read_back(argv[1]))
		return 1;
	fflush(stdout);
	while ((n = read(0, buf, sizeof(buf))) > 0) {
		if (write(1, buf, n) != n)
			return fail("write", "stdout");
		echoed += n;
	}
	if (n < 0)
		return fail("read", "stdin");
	printf("files: done echoed=%ld\n", echoed);
	return 0;
}
