/* SPDX-License-Identifier: GPL-2.0-only OR MIT */
/*
 * offload.h: what the files of offload.ko share: the device's wire format
 * (docs/offload-device.md), the per-device state, the request record and its lifetime
 * rules, the memory window's state, and the functions each file provides (core.c:
 * probe/remove; request.c: request queue; events.c: event queue and PING_IN answers;
 * chardev.c: /dev/offload and its ioctls; window.c: the window's geometry, ALLOC/FREE and
 * the per-file allocations; winmap.c: mmap of the window and lost pages; syscall.c: the
 * calling side of forwarded system calls; exec.c: their home side, the executors;
 * guestmsg.c: guest-to-guest messages; spawn.c: SPAWN, both sides, and the KILLs a home
 * sends; shadow.c: marked files, SHADOW_ATTACH, KILL, node loss and PS).
 * Locking and lifetimes are described in guest-shim/README.md.
 */
#ifndef OFFLOAD_H
#define OFFLOAD_H

#include <linux/completion.h>
#include <linux/hashtable.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/mutex.h>
#include <linux/refcount.h>
#include <linux/rwsem.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/virtio.h>
#include <linux/virtio_types.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "offload_abi.h"

/* ---- Device identity and wire format (all little endian) ---- */

#define OFFLOAD_DEVICE_ID 0xFF0F
#define OFFLOAD_MAX_PAYLOAD 4096u

#define OFFLOAD_REQ_NODE_INFO 1
#define OFFLOAD_REQ_PEERS 2
#define OFFLOAD_REQ_PING 3
#define OFFLOAD_REQ_PONG 4
#define OFFLOAD_REQ_WINDOW_INFO 5
#define OFFLOAD_REQ_ALLOC 6
#define OFFLOAD_REQ_FREE 7
#define OFFLOAD_REQ_SYSCALL 8
#define OFFLOAD_REQ_SYSCALL_RET 9
#define OFFLOAD_REQ_GUEST_MSG 10
#define OFFLOAD_REQ_GUEST_MSG_RET 11

#define OFFLOAD_EVT_PING_IN 1
#define OFFLOAD_EVT_PEER_STATE 2
#define OFFLOAD_EVT_PAGES_LOST 3
#define OFFLOAD_EVT_SYSCALL_IN 4
#define OFFLOAD_EVT_GUEST_MSG_IN 5

/* Kinds of guest messages (the drivers' business; the monitors carry any kind). */
#define OFFLOAD_MSG_SPAWN 1
#define OFFLOAD_MSG_KILL 2
#define OFFLOAD_MSG_PUSH 3
#define OFFLOAD_MSG_GONE 4
#define OFFLOAD_GONE_FAILED 0	/* GONE's signo: the shadow exited with a failure status */

/* The window's page size (WINDOW_INFO must say so; the driver maps it with PAGE_SIZE pages). */
#define OFFLOAD_WINDOW_PAGE 4096u
/* Most offsets in one PAGES_LOST event (u64 each, in one event payload). */
#define OFFLOAD_MAX_LOST_PER_EVENT (OFFLOAD_MAX_PAYLOAD / 8)

/* Configuration space. */
struct offload_virtio_config {
	__virtio32 node_index;
	__virtio32 num_nodes;
	__u8 node_name[OFFLOAD_NAME_LEN];
} __packed;

/* Request header (device-readable), 24 bytes. */
struct offload_wire_req {
	__le32 type;
	__le32 flags;
	__le64 tag;
	__le32 len;
	__le32 reserved;
} __packed;

/* Response header (device-writable), 16 bytes. */
struct offload_wire_resp {
	__le32 status; /* 0 or a negative errno, as a two's complement u32 */
	__le32 len;
	__le64 tag;
} __packed;

/* Event header (device-writable), 24 bytes, followed by up to 4096 payload bytes. */
struct offload_wire_event {
	__le32 type;
	__le32 src_node;
	__le64 token;
	__le32 len;
	__le32 reserved;
} __packed;

/* NODE_INFO response payload, 24 bytes. */
struct offload_wire_node_info {
	__le32 index;
	__le32 num_nodes;
	__u8 name[OFFLOAD_NAME_LEN];
} __packed;

/* One entry of the PEERS response, 32 bytes. */
struct offload_wire_peer {
	__le32 index;
	__le32 state;
	__u8 name[OFFLOAD_NAME_LEN];
	__le64 reserved;
} __packed;

/* WINDOW_INFO response payload, 40 bytes. */
struct offload_wire_window_info {
	__le64 base;
	__le64 size;
	__le64 slice_offset;
	__le64 slice_len;
	__le32 page_size;
	__le32 node_index;
} __packed;

/* The call record of SYSCALL (request payload) and SYSCALL_IN (event payload), 64 bytes. */
struct offload_wire_call {
	__le32 node;
	__le32 tid;
	__le64 nr;
	__le64 args[OFFLOAD_SYSCALL_ARGS];
} __packed;

/* SYSCALL_RET request payload, 24 bytes. */
struct offload_wire_call_ret {
	__le64 token;
	__le32 status;	/* 0, or -ESRCH / -EBUSY: no executor ran the call */
	__le32 reserved;
	__le64 ret;
} __packed;

/* GUEST_MSG request payload: this header, then the body. */
struct offload_wire_msg {
	__le32 node;
	__le32 kind;
} __packed;

/* GUEST_MSG_IN event payload: this header, then the body. */
struct offload_wire_msg_in {
	__le32 kind;
	__le32 reserved;
} __packed;

/* GUEST_MSG_RET request payload: this header, then the reply body (none for SPAWN, KILL). */
struct offload_wire_msg_ret {
	__le64 token;
	__le32 status;	/* 0 or -errno */
	__le32 reserved;
} __packed;

/* SPAWN body, 32 bytes. */
struct offload_wire_spawn {
	__le32 home_pid;
	__le32 home_tid;
	__le64 rec_off;
	__le64 rec_len;
	__le32 uid;
	__le32 gid;
} __packed;

/* KILL body (and GONE's: the shadow of home_pid died of signal signo, or failed: signo
 * OFFLOAD_GONE_FAILED = 0, a nonzero exit status), 8 bytes. */
struct offload_wire_kill {
	__le32 home_pid;
	__le32 signo;
} __packed;

/* PUSH body: this header, then len bytes for the shadow's shim (push.c). */
struct offload_wire_push {
	__le32 home_pid;
	__le32 len;
} __packed;

/* Largest GUEST_MSG body. */
#define OFFLOAD_MSG_BODY_MAX (OFFLOAD_MAX_PAYLOAD - sizeof(struct offload_wire_msg))

/* ---- Driver limits ---- */

/* Event buffers kept posted (the contract asks for at least 16). */
#define OFFLOAD_EVENT_BUFS 32
#define OFFLOAD_EVENT_BUF_SIZE (sizeof(struct offload_wire_event) + OFFLOAD_MAX_PAYLOAD)
/* Nodes whose state the driver tracks from PEER_STATE events. */
#define OFFLOAD_MAX_NODES 64
/*
 * PONGs waiting for room in the request queue; beyond that a PING_IN is dropped. SYSCALL_RETs
 * are never dropped (a caller would wait for ever): their number is bounded by the calls the
 * device has outstanding here.
 */
#define OFFLOAD_MAX_PENDING_PONGS 64
/*
 * Request descriptors SYSCALLs leave free (8 SYSCALL_RETs of 3 descriptors): with a ring of
 * 256, at most 58 SYSCALLs are in flight per VM; more wait for room (killable). A smaller
 * ring keeps room for one SYSCALL (4 descriptors) at least.
 */
#define OFFLOAD_RET_RESERVE 24
/* Calls queued for one executor that is not waiting; beyond that: SYSCALL_RET -EBUSY. */
#define OFFLOAD_EXEC_QUEUE_MAX 64
/* Buckets of the executor table: 2^6. */
#define OFFLOAD_EXEC_HASH_BITS 6
/* SPAWNs from peers waiting for their helper to start; beyond that: -EBUSY. */
#define OFFLOAD_SPAWN_JOBS_MAX 64
/* Pushes queued for one shadow that has not taken them; beyond that: -EBUSY. */
#define OFFLOAD_PUSH_QUEUE_MAX 64
/* A started shadow that has not attached after this long will not: its home gave up. */
#define OFFLOAD_SPAWN_ATTACH_SECS 20
/* The program a SPAWN starts (docs/offload-threads.md, "Interfaces (v1)"). */
#define OFFLOAD_SHADOW_HELPER "/usr/bin/offload"
/* State table value before the device said anything about a node. */
#define OFFLOAD_STATE_UNKNOWN 0xff

/* ---- Per-device state ---- */

/*
 * The coherent memory window (window.c, winmap.c). Geometry, kva, res and lost are set at
 * probe and stay until the state is freed (open files and their mappings may outlive the
 * device); present says whether the monitor offers a window at all.
 */
struct offload_window {
	bool present;
	u64 base;		/* guest-physical address of offset 0 */
	u64 size;		/* bytes, a multiple of PAGE_SIZE */
	u64 slice_offset;	/* this node's slice (ALLOC hands out only these pages) */
	u64 slice_len;
	u32 node_index;
	unsigned long pages;	/* size / PAGE_SIZE */
	void *kva;		/* memremap(MEMREMAP_WB): vm_ops access, and the WB memtype */
	struct resource *res;	/* "offload window" in /proc/iomem */

	/*
	 * lost_rwsem orders the lost bitmap against faults: a fault tests the bit and inserts
	 * the pfn under it (read); PAGES_LOST sets bits under it (write) and zaps afterwards,
	 * so no mapping of a lost page survives.
	 */
	struct rw_semaphore lost_rwsem;
	unsigned long *lost;	/* one bit per window page */
	unsigned long nlost;	/* pages marked (under lost_rwsem, write) */

	/*
	 * map_lock guards inode and nopen: every open file's f_mapping is inode->i_mapping (an
	 * anonymous inode created by the first open, dropped by the last release), so one
	 * unmap_mapping_range reaches every mapping of the window. PAGES_LOST holds map_lock
	 * while it zaps and looks for the processes to kill. Order: map_lock -> vma_lock ->
	 * i_mmap_rwsem.
	 */
	struct mutex map_lock;
	struct inode *inode;
	unsigned int nopen;

	/*
	 * vma_lock guards vmas: one struct offload_vma per vma of the window (added by mmap and
	 * vm_ops open, removed by close, which run under the mm's mmap_lock: order mmap_lock ->
	 * vma_lock).
	 */
	struct mutex vma_lock;
	struct list_head vmas;

	/*
	 * Allocations to give back: runs of released files and ALLOCs whose caller left on a
	 * signal (list under od->lock, queued only while !od->dead; remove flushes the work).
	 */
	struct list_head reap;
	struct work_struct reap_work;
};

struct offload_dev {
	struct virtio_device *vdev;
	struct virtqueue *req_vq;
	struct virtqueue *evt_vq;

	/*
	 * lock (irq-safe; taken in the request callback) guards req_vq (add, get, kick,
	 * detach), dead, space_gen, the backlog and win.reap.
	 */
	spinlock_t lock;
	bool dead;			/* set by remove: no more submissions */
	unsigned long space_gen;	/* bumped when request descriptors are freed */
	wait_queue_head_t space_wq;	/* submitters waiting for descriptors */
	struct list_head backlog;	/* PONGs and SYSCALL_RETs that found the queue full */
	unsigned int n_backlog;
	unsigned int n_backlog_pongs;	/* of which PONGs (bounded) */
	unsigned int ret_reserve;	/* descriptors SYSCALLs leave free (set at probe) */

	/*
	 * exec_lock (process context only) guards the executor table, every executor's queue
	 * and every file's execs and handed lists (exec.c).
	 */
	spinlock_t exec_lock;
	DECLARE_HASHTABLE(execs, OFFLOAD_EXEC_HASH_BITS);	/* struct offload_exec by tid */

	/* evt_lock (a mutex: the event work sleeps) guards evt_vq and evt_posted. */
	struct mutex evt_lock;
	unsigned int evt_posted;
	unsigned int evt_target;	/* buffers to keep posted: min(32, queue size) */
	struct work_struct evt_work;

	atomic64_t next_tag;

	/* From the configuration space at probe time. */
	u32 node_index;
	u32 num_nodes;
	char node_name[OFFLOAD_NAME_LEN + 1];

	/* Per-node state from PEER_STATE events and PEERS answers (READ_ONCE/WRITE_ONCE). */
	u8 node_state[OFFLOAD_MAX_NODES];

	struct offload_window win;

	/*
	 * proc_lock (process context only) guards procs (the marked files: homes that spawned,
	 * shadows that attached) and their struct offload_proc. Order: proc_lock -> exec_lock.
	 */
	spinlock_t proc_lock;
	struct list_head procs;
	/*
	 * SPAWNs whose helper started and whose shadow has not attached yet (proc_lock): the
	 * answer goes out at SHADOW_ATTACH, so what a home pushes after its SPAWN returned
	 * finds the shadow attached (spawn.c, push.c).
	 */
	struct list_head spawn_waits;
	atomic64_t push_ids;		/* ids of queued pushes (push.c) */

	/*
	 * SPAWNs from peers waiting for spawn_work (it starts their helpers) and KILLs this node
	 * sends, waiting for kill_work: lists under od->lock, queued only while !od->dead;
	 * quiesce flushes both works (spawn.c).
	 */
	struct list_head spawn_jobs;
	unsigned int n_spawn_jobs;
	struct work_struct spawn_work;
	struct list_head kill_jobs;
	struct work_struct kill_work;

	struct miscdevice misc;
	bool misc_registered;
	/* One reference for the bound device, one per open file. */
	struct kref kref;
};

/* ---- Requests ---- */

/*
 * One request on the request queue. Reference counted: the submitter holds one, the
 * device holds one from a successful add until the buffer comes back (or is detached at
 * remove). The last put frees it, so a submitter interrupted by a signal simply drops its
 * reference while the device still owns the buffers.
 */
struct offload_req {
	refcount_t ref;
	struct completion done;
	struct list_head link;	/* on the backlog, or on a local list at completion */
	u64 tag;
	int status;		/* after done: device status, or -EIO / -ENODEV from the driver */
	u32 resp_len;		/* after done and status 0: validated response payload length */
	u64 sent_ns;		/* ktime_get_ns() just before the request was added */
	u64 done_ns;		/* ktime_get_ns() when the response was taken off the ring */
	u32 out_len;		/* request payload bytes at buf[0] */
	u32 in_cap;		/* response payload room at buf[out_len] */
	unsigned int ndesc;	/* descriptors the request needs */
	struct offload_wire_req hdr;
	struct offload_wire_resp resp;
	u8 buf[];
};

static inline u8 *offload_req_out(struct offload_req *req)
{
	return req->buf;
}

static inline u8 *offload_req_in(struct offload_req *req)
{
	return req->buf + req->out_len;
}

/*
 * What makes an open file a marked process (od->proc_lock): a home that spawned shadows
 * (role OFFLOAD_ROLE_HOME, nodes: where) or a shadow (OFFLOAD_ROLE_SHADOW, home_node and
 * home_pid: whose). role 0: unmarked, not on od->procs.
 */
struct offload_proc {
	struct list_head link;		/* in od->procs while role != 0 */
	u32 role;
	u32 home_node;
	u32 home_pid;
	u64 nodes;
	struct pid *pid;		/* the process (thread group) that spawned or attached */
	bool ended_by_home;		/* shadow: a KILL or the home's loss ends it */
};

/*
 * One open file of /dev/offload: its device, the window runs it allocated, the executors
 * registered through it and the calls handed to them but not answered yet, its marks and
 * the counters OFFLOAD_IOC_PS shows.
 */
struct offload_file {
	struct offload_dev *od;
	struct mutex lock;		/* guards allocs */
	struct list_head allocs;	/* struct offload_alloc_rec */
	struct list_head execs;		/* struct offload_exec (od->exec_lock) */
	struct list_head handed;	/* struct offload_call (od->exec_lock) */
	struct offload_proc proc;	/* od->proc_lock */
	/* What a shadow's home pushed to it: queued, then handed out (push.c). */
	struct list_head push_queue;	/* od->proc_lock */
	struct list_head push_handed;	/* od->proc_lock */
	unsigned int push_queued;	/* od->proc_lock */
	wait_queue_head_t push_wq;	/* the shadow's agent, in PUSH_WAIT */
	atomic64_t forwarded;		/* SYSCALLs that came back with a result */
	atomic64_t served;		/* EXEC_DONE answers sent */
	atomic64_t faults;		/* window faults in this file's mappings */
};

/*
 * A thread registered as the executor of its tid (EXEC_WAIT), until its file is released.
 * pid tells whether the thread still lives (a dead one's calls get -ESRCH).
 */
struct offload_exec {
	struct hlist_node hnode;	/* in od->execs, keyed by tid */
	struct list_head flink;		/* in of->execs */
	struct offload_file *of;
	u32 tid;
	struct pid *pid;
	struct list_head queue;		/* struct offload_call, in arrival order */
	unsigned int queued;
	wait_queue_head_t wq;		/* the thread, in EXEC_WAIT */
	u32 node;			/* where its last call came from (THREADS) */
	u64 calls;			/* calls queued for it (THREADS) */
};

/* A forwarded call at home: queued for its executor, or handed out (of->handed). */
struct offload_call {
	struct list_head link;
	struct offload_exec_call rec;	/* what EXEC_WAIT returns; rec.token names it */
};

/*
 * A run of window pages allocated through a file (offset, pages), or, on win.reap, a run to
 * free or an ALLOC still in flight whose caller left (pending: its request, whose answer
 * names the run).
 */
struct offload_alloc_rec {
	struct list_head link;
	u64 offset;
	u64 pages;
	struct offload_req *pending;
};

/* How a submitter waits for room in a full request queue. */
enum offload_wait {
	OFFLOAD_NOWAIT,		/* -ENOSPC at once */
	OFFLOAD_WAIT_INTR,	/* any signal ends the wait: -EINTR */
	OFFLOAD_WAIT_KILL,	/* only a fatal signal ends it: -EINTR */
};

/* request.c */
struct offload_req *offload_req_alloc(struct offload_dev *od, u32 type, u32 out_len,
				      u32 in_cap, gfp_t gfp);
void offload_req_put(struct offload_req *req);
int offload_req_submit(struct offload_dev *od, struct offload_req *req, enum offload_wait wait);
int offload_req_call(struct offload_dev *od, struct offload_req *req);
void offload_req_vq_done(struct virtqueue *vq);
void offload_req_send_async(struct offload_dev *od, struct offload_req *req);
void offload_backlog_flush(struct offload_dev *od);
void offload_req_shutdown(struct offload_dev *od);

/* events.c */
void offload_evt_vq_done(struct virtqueue *vq);
void offload_evt_work(struct work_struct *work);
int offload_evt_fill(struct offload_dev *od);
void offload_evt_shutdown(struct offload_dev *od);

/* chardev.c */
int offload_chardev_register(struct offload_dev *od);
void offload_chardev_unregister(struct offload_dev *od);

/* window.c */
void offload_window_init(struct offload_dev *od);
void offload_window_probe(struct offload_dev *od);
void offload_window_flush(struct offload_dev *od);
void offload_window_free(struct offload_dev *od);
long offload_ioc_window_info(struct offload_dev *od, void __user *uarg);
long offload_ioc_alloc(struct offload_file *of, void __user *uarg);
long offload_ioc_free(struct offload_file *of, void __user *uarg);
void offload_file_release_allocs(struct offload_file *of);

/* winmap.c */
int offload_winmap_open(struct offload_dev *od, struct file *file);
void offload_winmap_release(struct offload_dev *od);
int offload_winmap_mmap(struct file *file, struct vm_area_struct *vma);
void offload_window_pages_lost(struct offload_dev *od, u32 node, const u8 *payload, u32 len);

/* syscall.c */
long offload_ioc_syscall(struct offload_dev *od, void __user *uarg);

/* exec.c */
void offload_exec_init(struct offload_dev *od);
void offload_exec_file_init(struct offload_file *of);
void offload_evt_syscall_in(struct offload_dev *od, const struct offload_wire_event *ev,
			    u32 plen);
long offload_ioc_exec_wait(struct offload_file *of, struct file *file, void __user *uarg);
long offload_ioc_threads(struct offload_dev *od, void __user *uarg);
long offload_ioc_exec_done(struct offload_file *of, void __user *uarg);
long offload_ioc_signal(void __user *uarg);
void offload_exec_release(struct offload_file *of);
void offload_exec_shutdown(struct offload_dev *od);

/* guestmsg.c */
int offload_guest_msg(struct offload_dev *od, u32 node, u32 kind, const void *body, u32 blen);
void offload_msg_reply(struct offload_dev *od, u64 token, int status);
void offload_evt_guest_msg_in(struct offload_dev *od, const struct offload_wire_event *ev,
			      u32 plen);

/* spawn.c */
void offload_spawn_init(struct offload_dev *od);
void offload_spawn_flush(struct offload_dev *od);
void offload_msg_spawn_in(struct offload_dev *od, u32 src, u64 token, const u8 *body,
			  u32 blen);
long offload_ioc_spawn(struct offload_file *of, void __user *uarg);
void offload_spawn_release(struct offload_dev *od, u32 home_pid, u64 nodes);
void offload_spawn_gone(struct offload_dev *od, u32 home_node, u32 home_pid, u32 signo);
bool offload_spawn_attached(struct offload_dev *od, u32 src, u32 home_pid, u32 home_tid,
			    u64 *token);

/* shadow.c */
void offload_shadow_init(struct offload_dev *od);
void offload_msg_kill_in(struct offload_dev *od, u32 src, u64 token, const u8 *body,
			 u32 blen);
long offload_ioc_shadow_attach(struct offload_file *of, void __user *uarg);
long offload_ioc_ps(struct offload_dev *od, void __user *uarg);
int offload_proc_mark_home(struct offload_file *of, u32 node, u64 *had);
void offload_proc_unmark_node(struct offload_file *of, u32 node);
void offload_proc_release(struct offload_file *of);
void offload_procs_node_lost(struct offload_dev *od, u32 node);
void offload_msg_gone_in(struct offload_dev *od, u32 src, u64 token, const u8 *body,
			 u32 blen);

/* push.c */
void offload_push_file_init(struct offload_file *of);
void offload_push_release(struct offload_file *of);
void offload_msg_push_in(struct offload_dev *od, u32 src, u64 token, const u8 *body,
			   u32 blen);
long offload_ioc_push(struct offload_file *of, void __user *uarg);
long offload_ioc_push_wait(struct offload_file *of, void __user *uarg);
long offload_ioc_push_done(struct offload_file *of, void __user *uarg);

/* core.c */
void offload_dev_put(struct offload_dev *od);
void offload_set_node_state(struct offload_dev *od, u32 node, u32 state);

#endif /* OFFLOAD_H */
