/* t_threads.c: 4 pthreads sum slices of arrays, handing work out under a mutex and
 * meeting at a condition-variable barrier each round; three generations of threads (so
 * the shim's per-thread stacks are recycled); every thread also makes system calls. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define NT 4
#define N (1 << 16)
#define ROUNDS 8

static long data[N];
static long total;
static int arrived, round_no;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void barrier(void)
{
    pthread_mutex_lock(&mu);
    int r = round_no;
    if (++arrived == NT) {
        arrived = 0;
        round_no++;
        pthread_cond_broadcast(&cv);
    } else {
        while (r == round_no)
            pthread_cond_wait(&cv, &mu);
    }
    pthread_mutex_unlock(&mu);
}

static void *worker(void *arg)
{
    long id = (long)arg, sum = 0;
    for (int r = 0; r < ROUNDS; r++) {
        for (long i = id; i < N; i += NT)
            sum += data[i] * (r + 1);
        struct timespec ts = {0, 100000};
        nanosleep(&ts, 0);
        if (close(-1) != -1 || errno != EBADF) /* errno is per thread and must survive */
            abort();
        barrier();
    }
    pthread_mutex_lock(&mu);
    total += sum;
    pthread_mutex_unlock(&mu);
    return (void *)sum;
}

int main(void)
{
    long expect = 0;
    for (long i = 0; i < N; i++)
        data[i] = (i * 7919) % 1000;
    for (long i = 0; i < N; i++)
        for (int r = 0; r < ROUNDS; r++)
            expect += data[i] * (r + 1);
    for (int gen = 0; gen < 3; gen++) {
        pthread_t t[NT];
        long part = 0;
        total = 0;
        for (long i = 0; i < NT; i++)
            if (pthread_create(&t[i], 0, worker, (void *)i))
                return 1;
        for (int i = 0; i < NT; i++) {
            void *r;
            pthread_join(t[i], &r);
            part += (long)r;
        }
        printf("gen %d total=%ld parts=%ld expect=%ld %s\n", gen, total, part, expect,
               total == expect && part == expect ? "ok" : "MISMATCH");
    }
    return 0;
}
