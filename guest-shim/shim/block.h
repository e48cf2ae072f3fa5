/*
 * block.h: layout of the two records that gate.S shares with clone.c, as byte offsets
 * usable from both C and assembly (clone.c checks them against the C structs).
 *  - clone_call: the syscall number and arguments of a trapped clone, plus the child block;
 *  - child_block: what a new thread needs to resume the program after the clone: the
 *    trap-time registers (rax = 0, rsp = its new stack), the x87/SSE state, its altstack.
 *    It lives at the top of the child's own altstack region, so the child can read it
 *    after the parent has left the SIGSYS handler (the parent's frame is then gone).
 */
#ifndef OFFLOAD_SHIM_BLOCK_H
#define OFFLOAD_SHIM_BLOCK_H

#define CC_NR 0
#define CC_ARGS 8    /* six longs */
#define CC_BLOCK 56  /* struct child_block *, NULL for a fork-like child */

#define CB_GREGS 0   /* 23 longs, glibc's REG_* order */
#define CB_FX 192    /* 512-byte fxsave image, 16-byte aligned */
#define CB_HAS_FX 704
#define CB_SIZE 768

/* glibc REG_* indices (sys/ucontext.h), times 8 */
#define G_R8 0
#define G_R9 8
#define G_R10 16
#define G_R11 24
#define G_R12 32
#define G_R13 40
#define G_R14 48
#define G_R15 56
#define G_RDI 64
#define G_RSI 72
#define G_RBP 80
#define G_RBX 88
#define G_RDX 96
#define G_RAX 104
#define G_RCX 112
#define G_RSP 120
#define G_RIP 128
#define G_EFL 136

#endif
