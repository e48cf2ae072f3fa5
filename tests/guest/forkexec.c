/*
 * tests/guest/forkexec.c: e2e program for fork and exec from a (possibly offloaded) thread
 * (issue 5, item 6).
 *
 * A second thread forks; the child execs PROG ARGS (default: /bin/echo forkexec-child-ran);
 * the thread waits for it and the main thread reports the child's exit status. Run under `offload run --on b`, the fork and the exec belong to the
 * home: the child is a process of the home VM and its output is the home's.
 *
 * Usage: ot-forkexec [PROG ARGS...]   Output: the child's output, "forkexec: status=S".
 */
#include <pthread.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static char *const default_argv[] = { "/bin/echo", "forkexec-child-ran", NULL };
static char *const *child_argv = default_argv;
static int child_status = -1;

static void *spawner(void *arg)
{
	(void)arg;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		execv(child_argv[0], child_argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &child_status, 0) != pid)
		child_status = -1;
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t t;

	if (argc > 1)
		child_argv = argv + 1;
	if (pthread_create(&t, NULL, spawner, NULL) || pthread_join(t, NULL))
		return 1;
	if (child_status < 0 || !WIFEXITED(child_status)) {
		printf("forkexec: status=failed\n");
		return 1;
	}
	printf("forkexec: status=%d\n", WEXITSTATUS(child_status));
	return WEXITSTATUS(child_status) ? 1 : 0;
}
