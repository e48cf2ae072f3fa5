/*
 * tests/guest/threads.c: e2e program for threads sharing memory across nodes (issue 5, item 6).
 *
 * T threads (default 4) run R rounds over two shared arrays: in each round every thread adds,
 * under one mutex, a value computed from the previous round's array to every element of the
 * next one; then all meet at a barrier built from a mutex and a condition variable, whose last
 * arrival makes the next array the current one. Additions commute, so the final checksum
 * depends only on T, R and N, never on scheduling or placement: a run with threads on other
 * nodes must print the same line as a local run.
 *
 * Usage: ot-threads [-t T] [-r R] [-n N]   Output: "threads: t=T r=R n=N sum=S check=C".
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int nthreads = 4, rounds = 20, nelems = 1024;
static unsigned long *cur, *next;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn = PTHREAD_COND_INITIALIZER;
static int arrived;
static unsigned long generation;

/* Waits until every thread has called it for this round (mutex + condition variable). */
static void barrier(void)
{
	pthread_mutex_lock(&lock);
	unsigned long gen = generation;
	if (++arrived == nthreads) {
		unsigned long *t = cur;
		cur = next;
		next = t;
		for (int i = 0; i < nelems; i++)
			next[i] = cur[i];
		arrived = 0;
		generation++;
		pthread_cond_broadcast(&turn);
	} else {
		while (gen == generation)
			pthread_cond_wait(&turn, &lock);
	}
	pthread_mutex_unlock(&lock);
}

static void *worker(void *arg)
{
	unsigned long id = (unsigned long)arg;

	for (int r = 0; r < rounds; r++) {
		pthread_mutex_lock(&lock);
		for (int i = 0; i < nelems; i++)
			next[i] += (cur[(i + id) % nelems] & 0xffff) * (id + 1) + r;
		pthread_mutex_unlock(&lock);
		barrier();
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t tids[64];
	unsigned long sum = 0, check = 0;
	int opt;

	while ((opt = getopt(argc, argv, "t:r:n:")) != -1) {
		int v = atoi(optarg);
		if (opt == 't' && v > 0 && v <= 64)
			nthreads = v;
		else if (opt == 'r' && v > 0)
			rounds = v;
		else if (opt == 'n' && v > 0)
			nelems = v;
		else
			return 2;
	}
	cur = calloc(nelems, sizeof(*cur));
	next = calloc(nelems, sizeof(*next));
	if (!cur || !next)
		return 1;
	for (int i = 0; i < nelems; i++)
		cur[i] = next[i] = i;
	for (long t = 0; t < nthreads; t++)
		if (pthread_create(&tids[t], NULL, worker, (void *)t))
			return 1;
	for (int t = 0; t < nthreads; t++)
		pthread_join(tids[t], NULL);
	for (int i = 0; i < nelems; i++) {
		sum += cur[i];
		check = check * 31 + cur[i];
	}
	printf("threads: t=%d r=%d n=%d sum=%lu check=%lu\n", nthreads, rounds, nelems, sum, check);
	return 0;
}
