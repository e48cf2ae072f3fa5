/* t_signals.c: program signal handlers interrupting blocking calls (EINTR vs SA_RESTART),
 * a handler that makes system calls, sigsuspend with almost everything blocked, the
 * signal mask, and a program that installs its own SIGSYS handler and sigaltstack. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t alarms, usr1, usr2, sys_hits, sys_code;
static int pfd[2];
static pthread_t main_thread;

static void on_alarm(int s) { (void)s; alarms++; write(1, "  [alarm handler]\n", 18); }
static void on_usr1(int s) { (void)s; usr1++; }
static void on_usr2(int s) { (void)s; usr2++; }
static void on_sys(int s, siginfo_t *si, void *c) { (void)s; (void)c; sys_hits++; sys_code = si->si_code; }

static void handle(int sig, void (*h)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sa.sa_flags = flags;
    sigfillset(&sa.sa_mask); /* everything blocked in the handler: SIGSYS too, as asked */
    sigaction(sig, &sa, 0);
}

static void ms(long n)
{
    struct timespec ts = {n / 1000, (n % 1000) * 1000000};
    nanosleep(&ts, 0);
}

static void *poker(void *arg)
{
    (void)arg;
    ms(50);
    pthread_kill(main_thread, SIGUSR1); /* interrupts read; SA_RESTART: read goes on */
    ms(50);
    write(pfd[1], "x", 1);
    ms(50);
    pthread_kill(main_thread, SIGUSR1); /* wakes sigsuspend */
    return 0;
}

int main(void)
{
    char c;
    pthread_t t;
    struct itimerval it = {{0, 0}, {0, 50000}};
    main_thread = pthread_self();
    pipe(pfd);
    handle(SIGALRM, on_alarm, 0);
    handle(SIGUSR1, on_usr1, SA_RESTART);
    handle(SIGUSR2, on_usr2, 0);

    setitimer(ITIMER_REAL, &it, 0);
    ssize_t r = read(pfd[0], &c, 1);
    printf("read no-restart: r=%zd errno=%s alarms=%d\n", r, strerrorname_np(errno), alarms);

    pthread_create(&t, 0, poker, 0);
    r = read(pfd[0], &c, 1);
    printf("read restart: r=%zd c=%c usr1=%d\n", r, c, usr1);

    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, SIGUSR1);
    r = sigsuspend(&all);
    printf("sigsuspend: r=%zd errno=%s usr1=%d\n", r, strerrorname_np(errno), usr1);
    pthread_join(t, 0);

    it.it_value.tv_usec = 30000;
    setitimer(ITIMER_REAL, &it, 0);
    struct timespec req = {2, 0}, rem = {0, 0};
    r = nanosleep(&req, &rem);
    printf("nanosleep: r=%zd errno=%s rem>0=%d alarms=%d\n", r, strerrorname_np(errno),
           rem.tv_sec > 0 || rem.tv_nsec > 0, alarms);

    sigset_t b, old, pend;
    sigemptyset(&b);
    sigaddset(&b, SIGUSR2);
    sigprocmask(SIG_BLOCK, &b, &old);
    raise(SIGUSR2);
    sigpending(&pend);
    printf("blocked usr2: pending=%d usr2=%d\n", sigismember(&pend, SIGUSR2), usr2);
    sigprocmask(SIG_SETMASK, &old, 0);
    printf("unblocked usr2: usr2=%d\n", usr2);
    sigprocmask(SIG_BLOCK, 0, &old);
    printf("mask has usr2=%d\n", sigismember(&old, SIGUSR2));

    static char mystack[64 * 1024];
    stack_t ss = {.ss_sp = mystack, .ss_size = sizeof mystack, .ss_flags = 0}, oss;
    printf("sigaltstack set=%d\n", sigaltstack(&ss, 0));
    sigaltstack(0, &oss);
    printf("sigaltstack query same=%d size=%zu\n", oss.ss_sp == mystack, oss.ss_size);
    struct sigaction sa, osa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sys;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSYS, &sa, 0);
    sigaction(SIGSYS, 0, &osa);
    printf("sigaction(SIGSYS) query same=%d\n", osa.sa_sigaction == on_sys);
    raise(SIGSYS);
    printf("own SIGSYS handler: hits=%d code_is_tkill=%d\n", sys_hits, sys_code == SI_TKILL);
    signal(SIGSYS, SIG_IGN);
    raise(SIGSYS);
    printf("SIGSYS ignored: still alive, hits=%d\n", sys_hits);
    return 0;
}
