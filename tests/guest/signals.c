/*
 * tests/guest/signals.c: e2e program for signals to an offloaded thread (issue 5, item 5).
 *
 * Five checks, each printing one "signals: NAME=ok" line or "signals: NAME=FAIL ..." (exit 1):
 *  - eintr: a SIGALRM handler without SA_RESTART; alarm(1); a read on an empty pipe must
 *    return -1 with EINTR after the handler ran once;
 *  - restart: the same with SA_RESTART, the handler writes one byte into the pipe: the read
 *    is restarted and returns that byte;
 *  - kill: SIGUSR1 sent to the process (kill(getpid())) runs its handler before kill returns
 *    to the caller's next call;
 *  - mask: SIGUSR2 blocked, sent, seen in sigpending, delivered when unblocked;
 *  - compute: a child sends SIGUSR1 while the thread computes (no system call): the handler
 *    interrupts the thread itself, on its own stack (within 1 MiB of main's frame), with
 *    the sender's pid in si_pid. For a thread on b this means the handler runs on b.
 * The output is the same wherever the thread runs (unmarked, marked at home, `--on b`).
 *
 * Usage: ot-signals      Output: the five lines, then "signals: done handled=N".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int pipefd[2];
static volatile sig_atomic_t handled, wrote;

static void on_alarm(int sig)
{
	(void)sig;
	handled++;
}

static void on_alarm_write(int sig)
{
	(void)sig;
	handled++;
	if (write(pipefd[1], "x", 1) == 1)
		wrote = 1;
}

static int fail(const char *name, const char *why)
{
	printf("signals: %s=FAIL %s (errno %s)\n", name, why, strerror(errno));
	return 1;
}

static int catch(int sig, void (*fn)(int), int flags)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	return sigaction(sig, &sa, NULL);
}

static int check_eintr(void)
{
	char c;
	int before = handled;

	if (catch(SIGALRM, on_alarm, 0))
		return fail("eintr", "sigaction");
	alarm(1);
	if (read(pipefd[0], &c, 1) != -1 || errno != EINTR)
		return fail("eintr", "read did not fail with EINTR");
	if (handled != before + 1)
		return fail("eintr", "handler did not run once");
	printf("signals: eintr=ok\n");
	return 0;
}

static int check_restart(void)
{
	char c = 0;
	int before = handled;

	if (catch(SIGALRM, on_alarm_write, SA_RESTART))
		return fail("restart", "sigaction");
	alarm(1);
	if (read(pipefd[0], &c, 1) != 1 || c != 'x')
		return fail("restart", "read was not restarted");
	if (handled != before + 1 || !wrote)
		return fail("restart", "handler did not run once");
	printf("signals: restart=ok\n");
	return 0;
}

static int check_kill(void)
{
	int before = handled, i;

	if (catch(SIGUSR1, on_alarm, 0))
		return fail("kill", "sigaction");
	if (kill(getpid(), SIGUSR1))
		return fail("kill", "kill");
	/* Delivery is asynchronous when the thread runs elsewhere: wait up to 5 s. */
	for (i = 0; i < 500 && handled == before; i++)
		usleep(10000);
	if (handled != before + 1)
		return fail("kill", "handler did not run once");
	printf("signals: kill=ok\n");
	return 0;
}

static int check_mask(void)
{
	sigset_t set, pending;
	int before = handled, i;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	if (catch(SIGUSR2, on_alarm, 0) || sigprocmask(SIG_BLOCK, &set, NULL))
		return fail("mask", "sigaction/sigprocmask");
	if (kill(getpid(), SIGUSR2))
		return fail("mask", "kill");
	for (i = 0; i < 500; i++) {
		if (sigpending(&pending))
			return fail("mask", "sigpending");
		if (sigismember(&pending, SIGUSR2))
			break;
		usleep(10000);
	}
	if (i == 500 || handled != before)
		return fail("mask", "not pending while blocked");
	if (sigprocmask(SIG_UNBLOCK, &set, NULL))
		return fail("mask", "unblock");
	for (i = 0; i < 500 && handled == before; i++)
		usleep(10000);
	if (handled != before + 1)
		return fail("mask", "not delivered once unblocked");
	printf("signals: mask=ok\n");
	return 0;
}

static volatile sig_atomic_t computed_by;
static volatile unsigned long handler_frame;

static void on_usr1_info(int sig, siginfo_t *si, void *uc)
{
	char here;
	(void)sig;
	(void)uc;
	handler_frame = (unsigned long)&here;
	computed_by = si->si_pid;
	handled++;
}

static int check_compute(void)
{
	struct sigaction sa;
	char here;
	unsigned long spins = 0, dist;
	pid_t child;
	int status;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_usr1_info;
	sa.sa_flags = SA_SIGINFO;
	if (sigaction(SIGUSR1, &sa, NULL))
		return fail("compute", "sigaction");
	child = fork();
	if (child < 0)
		return fail("compute", "fork");
	if (child == 0) {
		usleep(300000);
		kill(getppid(), SIGUSR1);
		_exit(0);
	}
	while (!computed_by && spins < (1UL << 40))
		spins++;
	if (waitpid(child, &status, 0) != child)
		return fail("compute", "waitpid");
	if (computed_by != child)
		return fail("compute", "si_pid is not the sender's");
	dist = handler_frame > (unsigned long)&here ? handler_frame - (unsigned long)&here
						    : (unsigned long)&here - handler_frame;
	if (dist > (1UL << 20))
		return fail("compute", "the handler did not interrupt the computing thread");
	printf("signals: compute=ok\n");
	return 0;
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	if (pipe(pipefd))
		return fail("pipe", "pipe");
	if (check_eintr() || check_restart() || check_kill() || check_mask() || check_compute())
		return 1;
	printf("signals: done handled=%d\n", (int)handled);
	return 0;
}
