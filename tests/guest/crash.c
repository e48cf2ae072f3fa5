/*
 * tests/guest/crash.c: e2e program for a thread that dies on another node (issue 5, item 5:
 * "exit/exit_group anywhere ends the process correctly everywhere"). Run as
 * `offload run --on b -- ot-crash`: the main thread, on b, prints a line (written at home)
 * and then reads address 8. On one machine the process dies of SIGSEGV (shell status 139);
 * with the thread on b, b's kernel kills the shadow, b's driver tells the home (GONE), and
 * the home process must die of SIGSEGV too instead of waiting for a thread that is gone.
 *
 * Usage: ot-crash     Output: "crash: faulting now", then the process dies of SIGSEGV.
 */
#include <stdint.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	volatile int *bad = (volatile int *)(uintptr_t)(argc * 8); /* 8, unknown to gcc */

	(void)argv;
	printf("crash: faulting now\n");
	fflush(stdout);
	return *bad;
}
