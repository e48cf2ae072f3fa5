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
 * stale values or dies of SIGSEGV.
 *
 * Usage: ot-layout [-r ROUNDS]   Output: "layout: rounds=R sum=S ok" (or "... BAD round=K").
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGES 16
#define WORDS (PAGES * 4096 / sizeof(unsigned long))

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static unsigned long *region; /* published by main; NULL with stop set: the end */
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
		unsigned long *p = region, sum = 0;
		pthread_mutex_unlock(&lock);
		for (unsigned long i = 0; i < WORDS; i++)
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

int main(int argc, char **argv)
{
	int rounds = 20, opt, bad = -1;
	unsigned long total = 0;
	pthread_t t;

	while ((opt = getopt(argc, argv, "r:")) != -1)
		rounds = opt == 'r' ? atoi(optarg) : rounds;
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
		pthread_mutex_lock(&lock);
		region = p;
		published = round;
		pthread_cond_broadcast(&changed);
		while (answered != round)
			pthread_cond_wait(&changed, &lock);
		if (answer != want && bad < 0)
			bad = round;
		total += answer;
		pthread_mutex_unlock(&lock);
		munmap(p, PAGES * 4096);
	}
	pthread_mutex_lock(&lock);
	stop = 1;
	pthread_cond_broadcast(&changed);
	pthread_mutex_unlock(&lock);
	pthread_join(t, NULL);
	if (bad >= 0)
		printf("layout: rounds=%d sum=%lu BAD round=%d\n", rounds, total, bad);
	else
		printf("layout: rounds=%d sum=%lu ok\n", rounds, total);
	return bad >= 0;
}
