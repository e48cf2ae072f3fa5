/* t_forkexec.c: process creation from a second thread: fork + execv(/bin/echo), vfork +
 * execv, posix_spawn (glibc: clone3 with CLONE_VM|CLONE_VFORK and its own stack), a fork
 * child that computes and exits without exec, and a failing exec. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int status_of(pid_t p)
{
    int st;
    if (waitpid(p, &st, 0) != p)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void *body(void *arg)
{
    (void)arg;
    char *echo[] = {"/bin/echo", "hello", "from", "echo", 0};
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        execv("/bin/echo", echo);
        _exit(99);
    }
    printf("fork+exec status=%d\n", status_of(p));
    fflush(stdout);
    p = vfork();
    if (p == 0) {
        char *e2[] = {"/bin/echo", "vforked", 0};
        execv("/bin/echo", e2);
        _exit(98);
    }
    printf("vfork+exec status=%d\n", status_of(p));
    fflush(stdout);
    char *e3[] = {"/bin/echo", "spawned", 0};
    int rc = posix_spawn(&p, "/bin/echo", 0, 0, e3, environ);
    printf("posix_spawn rc=%d status=%d\n", rc, status_of(p));
    rc = posix_spawn(&p, "/nonexistent", 0, 0, e3, environ);
    printf("posix_spawn missing rc=%s\n", strerrorname_np(rc));
    fflush(stdout);
    p = fork();
    if (p == 0) {
        long s = 0;
        for (int i = 0; i < 1000; i++)
            s += getppid() > 0;
        printf("fork child sum=%ld\n", s);
        exit(s == 1000 ? 7 : 1);
    }
    printf("fork child status=%d\n", status_of(p));
    return 0;
}

int main(void)
{
    pthread_t t;
    pthread_create(&t, 0, body, 0);
    pthread_join(t, 0);
    printf("main done\n");
    return 0;
}
