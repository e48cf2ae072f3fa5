/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * offload_abi.h: the user-space ABI of offload.ko, the /dev/offload ioctls and their
 * argument structs (docs/offload-device.md, "Guest interface"). Mirrored field by field in
 * guest-shim/src/abi.rs, whose unit tests check the sizes and ioctl numbers below.
 * Usable from user space (only <linux/types.h> and <linux/ioctl.h>).
 *
 * Magic 'O', numbers 0x40-0x50: 'O' 0x00-0x06 belongs to UBI (ioctl-number.rst), so the
 * range above it is free and the letter stays mnemonic.
 *
 * The memory window (0x43-0x45 and mmap) is described in guest-shim/README.md: window
 * offsets are byte offsets from the window's base, page aligned where they name a page.
 * Forwarded system calls (0x46-0x48): the calling side (SYSCALL) and the home side's
 * executors (EXEC_WAIT, EXEC_DONE), docs/offload-threads.md section 4.
 * Shadows (0x49-0x4c): SPAWN (home side), SHADOW_ATTACH (shadow side), PS and THREADS, the
 * interfaces of docs/offload-threads.md "Interfaces for migration and shadows (v1)".
 * Pushes to shadows (0x4d-0x4f): PUSH (home side), PUSH_WAIT and PUSH_DONE (the shadow's
 * agent thread): layout changes and signals, docs/offload-threads.md "Pushes to every
 * shadow"; SIGNAL (0x50) raises a
 * pushed signal in the shadow. Only the shim (C) uses these four, so abi.rs does not
 * mirror them.
 */
#ifndef OFFLOAD_ABI_H
#define OFFLOAD_ABI_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define OFFLOAD_IOC_MAGIC 'O'

#define OFFLOAD_NAME_LEN 16
#define OFFLOAD_MAX_PEERS 16
#define OFFLOAD_PING_MAX 256

/* Peer states, as the device reports them (offload_peer.state). */
#define OFFLOAD_PEER_DOWN 0
#define OFFLOAD_PEER_UP 1
#define OFFLOAD_PEER_LOST 2

/* OFFLOAD_IOC_NODE_INFO (out): this node. 24 bytes. */
struct offload_node_info {
	__u32 index;
	__u32 num_nodes;
	char name[OFFLOAD_NAME_LEN]; /* NUL-padded; not terminated when 16 long */
};

/* One other node. 32 bytes. */
struct offload_peer {
	__u32 index;
	__u32 state; /* OFFLOAD_PEER_* */
	char name[OFFLOAD_NAME_LEN];
	__u64 reserved;
};

/* OFFLOAD_IOC_PEERS (out): the other nodes, the first `count` entries valid. 520 bytes. */
struct offload_peers {
	__u32 count;
	__u32 pad;
	struct offload_peer peers[OFFLOAD_MAX_PEERS];
};

/*
 * OFFLOAD_IOC_PING (in/out): node and data[0..len) in; on success len and data hold the
 * echoed bytes and rtt_ns the round trip measured in the guest kernel. 272 bytes.
 */
struct offload_ping {
	__u32 node;
	__u32 len; /* <= OFFLOAD_PING_MAX */
	__u64 rtt_ns;
	__u8 data[OFFLOAD_PING_MAX];
};

/* OFFLOAD_IOC_WINDOW_INFO (out): the coherent memory window and this node's slice. 40 bytes. */
struct offload_window_info {
	__u64 base;		/* guest-physical address of window offset 0 */
	__u64 size;		/* bytes, a multiple of page_size */
	__u64 slice_offset;	/* window offset of the pages this node manages (ALLOC) */
	__u64 slice_len;	/* bytes */
	__u32 page_size;	/* 4096 */
	__u32 node_index;	/* this node */
};

/*
 * OFFLOAD_IOC_ALLOC (in/out): pages in; out: the window offset of `pages` contiguous pages of
 * this node's slice, zero-filled, owned by the open file (freed when it is released). 16 bytes.
 */
struct offload_alloc {
	__u64 pages;
	__u64 offset;
};

/* OFFLOAD_IOC_FREE (in): pages of one run this file allocated (all of it or a part). 16 bytes. */
struct offload_free {
	__u64 offset;
	__u64 pages;
};

/* Arguments of a system call (x86_64: rdi, rsi, rdx, r10, r8, r9). */
#define OFFLOAD_SYSCALL_ARGS 6

/*
 * OFFLOAD_IOC_SYSCALL (in/out): run system call `nr` with `args` at node `node`, in the
 * context of its executor thread `tid`; out on success: `ret`, the call's return value there
 * (-errno as Linux returns it). The ioctl's own errors say why the call did not run. 72 bytes.
 */
struct offload_syscall {
	__u32 node;
	__u32 tid;
	__u64 nr;
	__u64 args[OFFLOAD_SYSCALL_ARGS];
	__s64 ret;
};

/*
 * OFFLOAD_IOC_EXEC_WAIT (in: flags; out: the rest): the next call forwarded to the calling
 * thread (its tid in the initial pid namespace), which the ioctl registers as the executor
 * of that tid for the life of the open file. `token` names the call for EXEC_DONE;
 * `src_node` is the caller's node; node, tid, nr and args are the caller's record. 80 bytes.
 * With OFFLOAD_EXEC_SIGNALS in flags, a signal that interrupts the wait and that the
 * executor would run a handler for (not blocked, a handler installed; never SIGKILL, SIGSYS
 * or a stop signal) is taken off the queue instead and handed out as a record of nr
 * OFFLOAD_EXEC_SIGNAL (token 0, no EXEC_DONE): args hold the first 48 bytes of its siginfo
 * (signo, errno, code and the fields of kill, sigqueue, timers and SIGCHLD), for the shim
 * to raise it in the thread on its node (docs/offload-threads.md section 5).
 */
#define OFFLOAD_EXEC_SIGNALS 1u
#define OFFLOAD_EXEC_SIGNAL 0x4f4c0100ULL

struct offload_exec_call {
	__u64 token;
	__u32 src_node;
	__u32 flags;
	__u32 node;
	__u32 tid;
	__u64 nr;
	__u64 args[OFFLOAD_SYSCALL_ARGS];
};

/* OFFLOAD_IOC_EXEC_DONE (in): the result of a call this file's EXEC_WAIT handed out. 16 bytes. */
struct offload_exec_done {
	__u64 token;
	__s64 ret;
};

/*
 * OFFLOAD_IOC_SPAWN (in/out): start a shadow of the calling process on `node` from the
 * spawn record at window offset `rec_off` (page aligned, `rec_len` bytes). The driver
 * sends the guest message SPAWN with the caller's pid, tid, uid and gid and returns the
 * peer's answer (0 once `offload shadow` runs there). reserved must be 0. 24 bytes.
 */
struct offload_spawn {
	__u32 node;
	__u32 reserved;
	__u64 rec_off;
	__u64 rec_len;
};

/*
 * OFFLOAD_IOC_SHADOW_ATTACH (in): the calling process is the shadow of (home_node,
 * home_pid), as long as this open file lives (it survives exec when the fd is inherited).
 * A KILL from that node, or its loss, reaches the process. reserved must be 0. 16 bytes.
 */
struct offload_shadow_attach {
	__u32 home_node;
	__u32 home_pid;
	__u32 home_tid;
	__u32 reserved;
};

/* Roles in offload_ps_entry.role. */
#define OFFLOAD_ROLE_HOME 1	/* spawned shadows on other nodes (SPAWN) */
#define OFFLOAD_ROLE_SHADOW 2	/* hosts threads of a process of another node (SHADOW_ATTACH) */

/* Entries of struct offload_ps. */
#define OFFLOAD_PS_MAX 32

/*
 * One marked open file of /dev/offload (a home process or a shadow) and its counters.
 * 64 bytes.
 */
struct offload_ps_entry {
	__u32 pid;		/* the process that spawned or attached (this VM's pid) */
	__u32 role;		/* OFFLOAD_ROLE_* */
	__u32 home_node;	/* home: this node; shadow: its home */
	__u32 home_pid;		/* home: pid; shadow: the process's pid at home */
	__u64 nodes;		/* home: bit N set = spawned on node N (nodes 0-63) */
	__u32 executors;	/* executors registered through the file */
	__u32 reserved;
	__u64 forwarded;	/* SYSCALLs through the file that came back with a result */
	__u64 served;		/* EXEC_DONE answers sent through the file */
	__u64 faults;		/* window page faults in the file's mappings, in this VM */
	__u64 reserved2;
};

/*
 * OFFLOAD_IOC_PS (out): the marked files of this VM; the first `count` entries are valid,
 * `total` says how many there are (more than OFFLOAD_PS_MAX: the rest is left out).
 * 2056 bytes.
 */
struct offload_ps {
	__u32 count;
	__u32 total;
	struct offload_ps_entry procs[OFFLOAD_PS_MAX];
};

/* Entries of struct offload_threads. */
#define OFFLOAD_THREADS_MAX 128

/*
 * One executor of this VM: the home side of a thread that runs on another node. Its tid is
 * the tid the program sees; node is where the calls it served came from (the thread's node).
 * 24 bytes.
 */
struct offload_thread_entry {
	__u32 tid;		/* the executor's (and the program's) tid */
	__u32 pid;		/* its process (0: the thread is gone) */
	__u32 node;		/* the node its calls come from; OFFLOAD_NODE_UNKNOWN before one */
	__u32 reserved;
	__u64 calls;		/* calls queued for it */
};

#define OFFLOAD_NODE_UNKNOWN 0xffffffffu

/*
 * OFFLOAD_IOC_THREADS (out): this VM's executors, `count` valid entries of `total`.
 * 3080 bytes.
 */
struct offload_threads {
	__u32 count;
	__u32 total;
	struct offload_thread_entry threads[OFFLOAD_THREADS_MAX];
};

/* Largest push (the shim's layout change or signal: opaque to the driver). */
#define OFFLOAD_PUSH_MAX 1024

/*
 * OFFLOAD_IOC_PUSH (in): data[0..len), for the shadows of the calling (home) process (a
 * layout change it made, a signal for one of its threads): the driver sends it to every
 * node the process has shadows on and returns once each node's shadows took it (0), or
 * the first error (the process is then SIGKILLed: a shadow may map memory the home no
 * longer does). id, home_node, home_pid,
 * flags must be 0.
 * OFFLOAD_IOC_PUSH_WAIT (in: flags, which must be 0; out: the rest): on a shadow's file,
 * the next push from its home (home_node, home_pid), named by id for PUSH_DONE. Waits
 * interruptibly (-EINTR). 1048 bytes.
 */
struct offload_push {
	__u64 id;
	__u32 home_node;
	__u32 home_pid;
	__u32 len;
	__u32 flags;
	__u8 data[OFFLOAD_PUSH_MAX];
};

/* OFFLOAD_IOC_PUSH_DONE (in): push id taken (status 0) or refused (-errno). 16 bytes. */
struct offload_push_done {
	__u64 id;
	__s32 status;
	__u32 reserved;
};

/*
 * OFFLOAD_IOC_SIGNAL (in): raise signo in thread tid of the calling process with the
 * given siginfo (its first 48 bytes: what EXEC_WAIT hands out), as the kernel would for a
 * signal sent to that thread: a shadow's agent raises there a signal that the home sent
 * to the thread (a process cannot send a kill()-style siginfo to another of its threads
 * from user space). Errors: -EINVAL (bad signal, SIGKILL/SIGSTOP/SIGSYS), -ESRCH (no
 * such thread in this process). 56 bytes.
 */
struct offload_signal {
	__u32 tid;
	__u32 signo;
	__u8 info[48];
};

#define OFFLOAD_IOC_NODE_INFO _IOR(OFFLOAD_IOC_MAGIC, 0x40, struct offload_node_info)
#define OFFLOAD_IOC_PEERS _IOR(OFFLOAD_IOC_MAGIC, 0x41, struct offload_peers)
#define OFFLOAD_IOC_PING _IOWR(OFFLOAD_IOC_MAGIC, 0x42, struct offload_ping)
#define OFFLOAD_IOC_WINDOW_INFO _IOR(OFFLOAD_IOC_MAGIC, 0x43, struct offload_window_info)
#define OFFLOAD_IOC_ALLOC _IOWR(OFFLOAD_IOC_MAGIC, 0x44, struct offload_alloc)
#define OFFLOAD_IOC_FREE _IOW(OFFLOAD_IOC_MAGIC, 0x45, struct offload_free)
#define OFFLOAD_IOC_SYSCALL _IOWR(OFFLOAD_IOC_MAGIC, 0x46, struct offload_syscall)
#define OFFLOAD_IOC_EXEC_WAIT _IOR(OFFLOAD_IOC_MAGIC, 0x47, struct offload_exec_call)
#define OFFLOAD_IOC_EXEC_DONE _IOW(OFFLOAD_IOC_MAGIC, 0x48, struct offload_exec_done)
#define OFFLOAD_IOC_SPAWN _IOWR(OFFLOAD_IOC_MAGIC, 0x49, struct offload_spawn)
#define OFFLOAD_IOC_SHADOW_ATTACH _IOW(OFFLOAD_IOC_MAGIC, 0x4a, struct offload_shadow_attach)
#define OFFLOAD_IOC_PS _IOR(OFFLOAD_IOC_MAGIC, 0x4b, struct offload_ps)
#define OFFLOAD_IOC_THREADS _IOR(OFFLOAD_IOC_MAGIC, 0x4c, struct offload_threads)
#define OFFLOAD_IOC_PUSH _IOW(OFFLOAD_IOC_MAGIC, 0x4d, struct offload_push)
#define OFFLOAD_IOC_PUSH_WAIT _IOWR(OFFLOAD_IOC_MAGIC, 0x4e, struct offload_push)
#define OFFLOAD_IOC_PUSH_DONE _IOW(OFFLOAD_IOC_MAGIC, 0x4f, struct offload_push_done)
#define OFFLOAD_IOC_SIGNAL _IOW(OFFLOAD_IOC_MAGIC, 0x50, struct offload_signal)

#endif /* OFFLOAD_ABI_H */
