/*
 * tests/guest/layout.c: e2e program for layout changes made at home while a thread of the
 * process runs on another node (issue 5, item 2: "later mmap/munmap/mremap/mprotect calls
 * are applied on every node that hosts a thread of the process").
 *
 * Run as `offload run --place 1=b -- ot-layout`: the main thread stays at home, the worker
 * (thread 1) starts on b. Every round the main thread maps a fresh 16-page region, unmaps
 * its upper half, grows it back with mremap, fills it with values of the round, makes it
 * read-only with mprotect and publishes its address; the worker sums the region and hands
 * the sum back; the main thread checks it and unmaps the region (the next round's mmap
 * usually gets the same address: a node that missed the munmap and the mmap would still
 * show the old round's values there). Without the changes reaching b the worker reads
 * stale values or dies of SIGSEGV. After the first round the main thread closes every fd
 * above stderr with close_range, as daemons do: the shim's own files (the window's, the
 * worker's executor's) must survive it. Last, the worker sums two read-only mappings of
 * the program file (file mappings, not window memory: each node maps its identical copy):
 * one the main thread made before the worker existed (it travels in the spawn record), one
 * made at the end (it is pushed).
 *
 * With -m PATH the main thread also maps PATH before the worker exists: a file that exists
 * only at home makes the worker's shadow fail to start on b, and the process must then end
 * at home (SIGKILL, the driver says why) instead of waiting for the worker.
 *
 * Usage: ot-layout [-r ROUNDS] [-m PATH]
 * Output: "layout: rounds=R sum=S file=same ok" (or "... BAD round=K", "file=differs").
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGES 16
#define WORDS (PAGES * 4096 / sizeof(unsigned long))

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static unsigned long *region; /* published by main */
static unsigned long region_words;
static int published, answered, stop;
static unsigned long answer;

static unsigned long value(int round, unsigned long i)
{
	return (unsigned long)round * 1000003UL + i * 7UL + 1;
}

static void *worker(void *arg)
{
	int seen = 0;
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&lock);
		while (published == seen && !stop)
			pthread_cond_wait(&changed, &lock);
		if (stop) {
			pthread_mutex_unlock(&lock);
			return NULL;
		}
		seen = published;
		unsigned long *p = region, n = region_words, sum = 0;
		pthread_mutex_unlock(&lock);
		for (unsigned long i = 0; i < n; i++)
			sum += p[i];
		pthread_mutex_lock(&lock);
		answer = sum;
		answered = seen;
		pthread_cond_broadcast(&changed);
		pthread_mutex_unlock(&lock);
	}
}

/* map_round: the region of a round, made with mmap, munmap, mremap and mprotect. */
static unsigned long *map_round(int round)
{
	size_t half = PAGES / 2 * 4096, all = PAGES * 4096;
	unsigned long *p = mmap(NULL, all, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				-1, 0);
	if (p == MAP_FAILED || munmap((char *)p + half, half))
		return NULL;
	if (mremap(p, half, all, MREMAP_MAYMOVE) != p)
		return NULL;
	for (unsigned long i = 0; i < WORDS; i++)
		p[i] = value(round, i);
	if (mprotect(p, all, PROT_READ))
		return NULL;
	return p;
}

/* hand: publish p (n words) as round, wait for the worker's sum. */
static unsigned long hand(unsigned long *p, unsigned long n, int round)
{
	unsigned long sum;
	pthread_mutex_lock(&lock);
	region = p;
	region_words = n;
	published = round;
	pthread_cond_broadcast(&changed);
	while (answered != round)
		pthread_cond_wait(&changed, &lock);
	sum = answer;
	pthread_mutex_unlock(&lock);
	return sum;
}

/* map_path: the first page of path mapped read-only, kept for the process's life. */
static int map_path(const char *path)
{
	int fd = open(path, O_RDONLY);
	void *p = fd < 0 ? MAP_FAILED : mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
	if (fd >= 0)
		close(fd);
	if (p == MAP_FAILED) {
		perror("layout: -m");
		return -1;
	}
	return 0;
}

/* map_exe: the program file mapped read-only (*words long), or NULL. */
static unsigned long *map_exe(unsigned long *words)
{
	struct stat st;
	int fd = open("/proc/self/exe", O_RDONLY);
	unsigned long *p, n;
	if (fd < 0 || fstat(fd, &st) || st.st_size < 4096)
		return NULL;
	n = (unsigned long)st.st_size / 4096 * 4096;
	p = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	*words = n / sizeof(unsigned long);
	return p == MAP_FAILED ? NULL : p;
}

/* file_round: file mapping p (n words) summed here and by the worker; -1 without one. */
static int file_round(unsigned long *p, unsigned long n, int round)
{
	unsigned long want = 0;
	if (!p)
		return -1;
	for (unsigned long i = 0; i < n; i++)
		want += p[i];
	return hand(p, n, round) == want;
}

int main(int argc, char **argv)
{
	int rounds = 20, opt, bad = -1, file, late;
	unsigned long total = 0, got, early_n = 0, late_n = 0, *early, *late_p;
	pthread_t t;

	while ((opt = getopt(argc, argv, "r:m:")) != -1) {
		if (opt == 'r')
			rounds = atoi(optarg);
		else if (opt == 'm' && map_path(optarg))
			return 5;
	}
	early = map_exe(&early_n);
	if (pthread_create(&t, NULL, worker, NULL))
		return 2;
	for (int round = 1; round <= rounds; round++) {
		unsigned long *p = map_round(round), want = 0;
		if (!p) {
			perror("layout: map");
			return 3;
		}
		for (unsigned long i = 0; i < WORDS; i++)
			want += value(round, i);
		got = hand(p, WORDS, round);
		if (got != want && bad < 0)
			bad = round;
		total += got;
		munmap(p, PAGES * 4096);
		if (round == 1 && syscall(SYS_close_range, 3, ~0U, 0)) {
			perror("layout: close_range");
			return 4;
		}
	}
	file = file_round(early, early_n, rounds + 1);
	late_p = map_exe(&late_n);
	late = file_round(late_p, late_n, rounds + 2);
	if (file == 1 && late != 1)
		file = late;
	pthread_mutex_lock(&lock);
	stop = 1;
	pthread_cond_broadcast(&changed);
	pthread_mutex_unlock(&lock);
	pthread_join(t, NULL);
	printf("layout: rounds=%d sum=%lu file=%s", rounds, total,
	       file < 0 ? "unmappable" : file ? "same" : "differs");
	if (bad >= 0)
		printf(" BAD round=%d\n", bad);
	else
		printf("%s\n", file == 1 ? " ok" : "");
	return bad >= 0 || file != 1;
}
