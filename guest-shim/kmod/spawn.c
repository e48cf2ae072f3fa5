// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * spawn.c: the guest message SPAWN on both sides, and the KILLs a home sends
 * (docs/offload-threads.md, "Interfaces for migration and shadows (v1)").
 *
 * Home side: OFFLOAD_IOC_SPAWN marks the caller's file as a home with threads on the target
 * node (shadow.c keeps the marks) *before* the message goes out, so that the loss of that
 * node while the answer is awaited kills the process as well; a definite refusal takes the
 * mark back. A shadow that dies of a signal on its own sends GONE to its home (queued
 * like the KILLs). When a home's file is released, one KILL (SIGKILL) per node it spawned on is
 * queued for kill_work, which sends them one by one and logs failures: the process is gone,
 * nobody waits for these answers.
 *
 * Receiving side: a SPAWN is queued for spawn_work, which starts
 * `/usr/bin/offload shadow NODE PID TID REC_OFF REC_LEN UID GID` with call_usermodehelper
 * (UMH_WAIT_EXEC). Not from the event work: starting a process takes long and would hold
 * up every other event. A helper that could not be started is answered with the exec's
 * error; one that runs is answered when it attaches as the shadow (SHADOW_ATTACH, via
 * offload_spawn_attached): from then on the home's pushes (push.c) find the shadow. A helper
 * that fails before attaching leaves the home to its monitor's timeout (-ETIMEDOUT); its
 * wait entry is dropped after OFFLOAD_SPAWN_ATTACH_SECS.
 *
 * Both job lists live under od->lock and are only added to while the device is not dead;
 * quiesce waits for both works (offload_spawn_flush), which drop their jobs once it is.
 */
#include <linux/cred.h>
#include <linux/errno.h>
#include <linux/kernel.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/umh.h>
#include <asm/unaligned.h>

#include "offload.h"

/* Decimal arguments of the helper: NODE PID TID REC_OFF REC_LEN UID GID. */
#define OFFLOAD_SPAWN_ARGS 7

/* A SPAWN from a peer, waiting for its helper to start, then for the shadow to attach. */
struct offload_spawn_job {
	struct list_head link;
	unsigned long since;	/* jiffies when it began to wait for the attach */
	u64 token;
	u32 src;
	u32 home_pid;
	u32 home_tid;
	u32 uid;
	u32 gid;
	u64 rec_off;
	u64 rec_len;
};

/* A KILL this node sends (signo to the shadows of home_pid on node), or a GONE (the
 * shadow of home_pid here died of signo). */
struct offload_kill_job {
	struct list_head link;
	u32 kind;
	u32 node;
	u32 home_pid;
	u32 signo;
};

static void offload_spawn_work(struct work_struct *work);
static void offload_kill_work(struct work_struct *work);

void offload_spawn_init(struct offload_dev *od)
{
	INIT_LIST_HEAD(&od->spawn_jobs);
	INIT_LIST_HEAD(&od->kill_jobs);
	INIT_WORK(&od->spawn_work, offload_spawn_work);
	INIT_WORK(&od->kill_work, offload_kill_work);
}

/*
 * offload_spawn_flush: the device is dead and its requests failed (quiesce): wait for both
 * works; nothing queues them any more.
 */
void offload_spawn_flush(struct offload_dev *od)
{
	struct offload_spawn_job *job, *tmp;
	LIST_HEAD(gone);

	flush_work(&od->spawn_work);
	flush_work(&od->kill_work);
	spin_lock(&od->proc_lock);
	list_splice_init(&od->spawn_waits, &gone);
	spin_unlock(&od->proc_lock);
	list_for_each_entry_safe(job, tmp, &gone, link)
		kfree(job);
}

/* offload_job_take: the first entry of @list (under od->lock), unlinked; or NULL. */
static struct list_head *offload_job_take(struct offload_dev *od, struct list_head *list,
					  bool spawn)
{
	struct list_head *first = NULL;

	spin_lock_irq(&od->lock);
	if (!list_empty(list)) {
		first = list->next;
		list_del_init(first);
		od->n_spawn_jobs -= spawn;
	}
	spin_unlock_irq(&od->lock);
	return first;
}

/* ---- Receiving side ---- */

static void offload_spawn_decode(struct offload_spawn_job *job, const u8 *body)
{
	const struct offload_wire_spawn *w = (const void *)body;

	job->home_pid = get_unaligned_le32(&w->home_pid);
	job->home_tid = get_unaligned_le32(&w->home_tid);
	job->rec_off = get_unaligned_le64(&w->rec_off);
	job->rec_len = get_unaligned_le64(&w->rec_len);
	job->uid = get_unaligned_le32(&w->uid);
	job->gid = get_unaligned_le32(&w->gid);
}

/*
 * offload_spawn_queue: queue @job for spawn_work. Returns 0, or the status to refuse it
 * with: -EBUSY (too many waiting), -ENODEV (the device is going; nobody answers then).
 */
static int offload_spawn_queue(struct offload_dev *od, struct offload_spawn_job *job)
{
	int status = 0;

	spin_lock_irq(&od->lock);
	if (od->dead) {
		status = -ENODEV;
	} else if (od->n_spawn_jobs >= OFFLOAD_SPAWN_JOBS_MAX) {
		status = -EBUSY;
	} else {
		list_add_tail(&job->link, &od->spawn_jobs);
		od->n_spawn_jobs++;
		queue_work(system_unbound_wq, &od->spawn_work);
	}
	spin_unlock_irq(&od->lock);
	return status;
}

/*
 * offload_msg_spawn_in: a SPAWN from node @src (event work). A body that is not 32 bytes
 * is logged and refused with -EINVAL; otherwise spawn_work starts the helper and answers.
 */
void offload_msg_spawn_in(struct offload_dev *od, u32 src, u64 token, const u8 *body,
			  u32 blen)
{
	struct offload_spawn_job *job;
	int status;

	if (blen != sizeof(struct offload_wire_spawn)) {
		dev_warn_ratelimited(&od->vdev->dev,
				     "SPAWN %llu from node %u with a %u-byte body: refused\n",
				     token, src, blen);
		offload_msg_reply(od, token, -EINVAL);
		return;
	}
	job = kzalloc(sizeof(*job), GFP_KERNEL);
	if (!job) {
		offload_msg_reply(od, token, -ENOMEM);
		return;
	}
	job->token = token;
	job->src = src;
	offload_spawn_decode(job, body);
	status = offload_spawn_queue(od, job);
	if (!status)
		return;
	if (status == -EBUSY) {
		dev_warn_ratelimited(&od->vdev->dev,
				     "SPAWN from node %u: %u spawns waiting already: -EBUSY\n",
				     src, OFFLOAD_SPAWN_JOBS_MAX);
		offload_msg_reply(od, token, status);
	}
	kfree(job);
}

/*
 * offload_spawn_helper: start the helper for @job and wait until it has exec'd. Returns 0
 * or the error of the fork or exec (-ENOENT without /usr/bin/offload).
 */
static int offload_spawn_helper(const struct offload_spawn_job *job)
{
	static char *envp[] = { "HOME=/", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };
	char args[OFFLOAD_SPAWN_ARGS][24];
	char *argv[OFFLOAD_SPAWN_ARGS + 3];
	unsigned int i;

	snprintf(args[0], sizeof(args[0]), "%u", job->src);
	snprintf(args[1], sizeof(args[1]), "%u", job->home_pid);
	snprintf(args[2], sizeof(args[2]), "%u", job->home_tid);
	snprintf(args[3], sizeof(args[3]), "%llu", job->rec_off);
	snprintf(args[4], sizeof(args[4]), "%llu", job->rec_len);
	snprintf(args[5], sizeof(args[5]), "%u", job->uid);
	snprintf(args[6], sizeof(args[6]), "%u", job->gid);
	argv[0] = OFFLOAD_SHADOW_HELPER;
	argv[1] = "shadow";
	for (i = 0; i < OFFLOAD_SPAWN_ARGS; i++)
		argv[i + 2] = args[i];
	argv[OFFLOAD_SPAWN_ARGS + 2] = NULL;
	return call_usermodehelper(argv[0], argv, envp, UMH_WAIT_EXEC);
}

/*
 * offload_spawn_wait: @job's helper is about to start: it waits in od->spawn_waits for
 * its shadow to attach. Entries older than OFFLOAD_SPAWN_ATTACH_SECS go (their homes gave
 * up long ago): they are returned in @gone to be freed.
 */
static void offload_spawn_wait(struct offload_dev *od, struct offload_spawn_job *job,
			       struct list_head *gone)
{
	struct offload_spawn_job *old, *tmp;

	spin_lock(&od->proc_lock);
	list_for_each_entry_safe(old, tmp, &od->spawn_waits, link)
		if (time_after(jiffies, old->since + OFFLOAD_SPAWN_ATTACH_SECS * HZ))
			list_move(&old->link, gone);
	job->since = jiffies;
	list_add_tail(&job->link, &od->spawn_waits);
	spin_unlock(&od->proc_lock);
}

/* offload_spawn_unwait: take @job back (its helper did not start); false if gone. */
static bool offload_spawn_unwait(struct offload_dev *od, struct offload_spawn_job *job)
{
	struct offload_spawn_job *w;
	bool found = false;

	spin_lock(&od->proc_lock);
	list_for_each_entry(w, &od->spawn_waits, link) {
		if (w == job) {
			list_del(&w->link);
			found = true;
			break;
		}
	}
	spin_unlock(&od->proc_lock);
	return found;
}

/*
 * offload_spawn_attached: a shadow of (@src, @home_pid, @home_tid) attached (proc_lock
 * held): if its SPAWN waits, *@token is its message, to be answered 0 after the lock.
 */
bool offload_spawn_attached(struct offload_dev *od, u32 src, u32 home_pid, u32 home_tid,
			    u64 *token)
{
	struct offload_spawn_job *w;

	lockdep_assert_held(&od->proc_lock);
	list_for_each_entry(w, &od->spawn_waits, link) {
		if (w->src == src && w->home_pid == home_pid && w->home_tid == home_tid) {
			*token = w->token;
			list_del(&w->link);
			kfree(w);
			return true;
		}
	}
	return false;
}

/*
 * offload_spawn_start: start @job's helper; answered now only if that failed. Once the
 * helper runs, its attach may free @job at any time: only the copy is used then.
 */
static void offload_spawn_start(struct offload_dev *od, struct offload_spawn_job *job)
{
	const struct offload_spawn_job copy = *job;
	struct offload_spawn_job *old, *tmp;
	LIST_HEAD(gone);
	int err;

	offload_spawn_wait(od, job, &gone);
	list_for_each_entry_safe(old, tmp, &gone, link)
		kfree(old);
	err = offload_spawn_helper(&copy);
	if (!err) {
		dev_info_ratelimited(&od->vdev->dev,
				     "SPAWN from node %u: shadow of pid %u started\n",
				     copy.src, copy.home_pid);
		return;
	}
	dev_warn_ratelimited(&od->vdev->dev,
			     "SPAWN from node %u (pid %u): cannot start %s: %d\n",
			     copy.src, copy.home_pid, OFFLOAD_SHADOW_HELPER, err);
	if (offload_spawn_unwait(od, job)) {
		offload_msg_reply(od, job->token, err);
		kfree(job);
	}
}

/* offload_spawn_work: start the helper of every queued SPAWN, one by one. */
static void offload_spawn_work(struct work_struct *work)
{
	struct offload_dev *od = container_of(work, struct offload_dev, spawn_work);
	struct offload_spawn_job *job;
	struct list_head *item;

	while ((item = offload_job_take(od, &od->spawn_jobs, true))) {
		job = list_entry(item, struct offload_spawn_job, link);
		if (READ_ONCE(od->dead)) {
			kfree(job);
			continue;
		}
		offload_spawn_start(od, job);
	}
}

/* ---- Home side ---- */

/*
 * offload_spawn_check: the arguments of OFFLOAD_IOC_SPAWN. The record must lie in the
 * window (page aligned start, not empty); this node and nodes beyond the mark bitmap are
 * unreachable.
 */
static int offload_spawn_check(struct offload_dev *od, const struct offload_spawn *sp)
{
	const struct offload_window *win = &od->win;

	if (!win->present)
		return -EOPNOTSUPP;
	if (sp->reserved || !sp->rec_len || !PAGE_ALIGNED(sp->rec_off) ||
	    sp->rec_off >= win->size || sp->rec_len > win->size - sp->rec_off)
		return -EINVAL;
	if (sp->node >= OFFLOAD_MAX_NODES || sp->node == od->node_index)
		return -EHOSTUNREACH;
	return 0;
}

/*
 * offload_spawn_outcome_unknown: after @err, the peer may have started the shadow (the
 * answer was lost, or the wait ended): the node's mark must stay.
 */
static bool offload_spawn_outcome_unknown(int err)
{
	return err == -ETIMEDOUT || err == -ECONNRESET || err == -EINTR || err == -EIO;
}

/*
 * offload_ioc_spawn: OFFLOAD_IOC_SPAWN. Errors: -EINVAL, -EOPNOTSUPP (no window),
 * -EHOSTUNREACH, -EBUSY (the file is a shadow, or another process's home), -ENOTCONN (the
 * node is lost), the errors of offload_guest_msg, or the peer's (-ENOENT: no helper there).
 */
long offload_ioc_spawn(struct offload_file *of, void __user *uarg)
{
	struct offload_dev *od = of->od;
	struct offload_wire_spawn w;
	struct offload_spawn sp;
	u64 had;
	int err;

	if (copy_from_user(&sp, uarg, sizeof(sp)))
		return -EFAULT;
	err = offload_spawn_check(od, &sp);
	if (!err)
		err = offload_proc_mark_home(of, sp.node, &had);
	if (err)
		return err;
	w.home_pid = cpu_to_le32(task_tgid_nr(current));
	w.home_tid = cpu_to_le32(task_pid_nr(current));
	w.rec_off = cpu_to_le64(sp.rec_off);
	w.rec_len = cpu_to_le64(sp.rec_len);
	w.uid = cpu_to_le32(from_kuid_munged(&init_user_ns, current_uid()));
	w.gid = cpu_to_le32(from_kgid_munged(&init_user_ns, current_gid()));
	err = offload_guest_msg(od, sp.node, OFFLOAD_MSG_SPAWN, &w, sizeof(w));
	if (err && !had && !offload_spawn_outcome_unknown(err))
		offload_proc_unmark_node(of, sp.node);
	return err;
}

/* offload_kill_queue: queue message @kind {@home_pid, @signo} to @node for kill_work. */
static void offload_kill_queue(struct offload_dev *od, u32 kind, u32 node, u32 home_pid,
			       u32 signo)
{
	struct offload_kill_job *job = kzalloc(sizeof(*job), GFP_KERNEL);

	if (!job) {
		dev_warn_ratelimited(&od->vdev->dev,
				     "no memory to send %s of pid %u to node %u\n",
				     kind == OFFLOAD_MSG_KILL ? "KILL" : "GONE", home_pid, node);
		return;
	}
	job->kind = kind;
	job->node = node;
	job->home_pid = home_pid;
	job->signo = signo;
	spin_lock_irq(&od->lock);
	if (!od->dead) {
		list_add_tail(&job->link, &od->kill_jobs);
		queue_work(system_unbound_wq, &od->kill_work);
		job = NULL;
	}
	spin_unlock_irq(&od->lock);
	kfree(job);
}

/*
 * offload_spawn_release: a home's file is released: queue KILL (SIGKILL) of @home_pid for
 * every node in @nodes. Without memory or device, the shadows stay (logged): their node
 * kills them when it loses this one, or they end on their own.
 */
void offload_spawn_release(struct offload_dev *od, u32 home_pid, u64 nodes)
{
	unsigned int node;

	for_each_set_bit(node, (unsigned long *)&nodes, OFFLOAD_MAX_NODES)
		offload_kill_queue(od, OFFLOAD_MSG_KILL, node, home_pid, SIGKILL);
}

/*
 * offload_spawn_gone: a shadow of (@home_node, @home_pid) died of @signo, not at its
 * home's request: the home is told (GONE), so the process ends there too instead of
 * waiting for a thread that is gone.
 */
void offload_spawn_gone(struct offload_dev *od, u32 home_node, u32 home_pid, u32 signo)
{
	offload_kill_queue(od, OFFLOAD_MSG_GONE, home_node, home_pid, signo);
}

/* offload_kill_send: send one KILL or GONE and log what went wrong. */
static void offload_kill_send(struct offload_dev *od, const struct offload_kill_job *job)
{
	struct offload_wire_kill w = {
		.home_pid = cpu_to_le32(job->home_pid),
		.signo = cpu_to_le32(job->signo),
	};
	int err;

	err = offload_guest_msg(od, job->node, job->kind, &w, sizeof(w));
	if (job->kind == OFFLOAD_MSG_GONE) {
		if (err && err != -ENODEV && err != -ESRCH)
			dev_warn_ratelimited(&od->vdev->dev,
					     "GONE of pid %u's shadow to node %u failed: %d\n",
					     job->home_pid, job->node, err);
		return;
	}
	if (err == -ESRCH)
		dev_info_ratelimited(&od->vdev->dev,
				     "KILL of pid %u's shadows on node %u: none there\n",
				     job->home_pid, job->node);
	else if (err && err != -ENODEV)
		dev_warn_ratelimited(&od->vdev->dev,
				     "KILL of pid %u's shadows on node %u failed: %d\n",
				     job->home_pid, job->node, err);
}

/* offload_kill_work: send every queued KILL and GONE, one by one (a kworker: no signal ends a wait). */
static void offload_kill_work(struct work_struct *work)
{
	struct offload_dev *od = container_of(work, struct offload_dev, kill_work);
	struct offload_kill_job *job;
	struct list_head *item;

	while ((item = offload_job_take(od, &od->kill_jobs, false))) {
		job = list_entry(item, struct offload_kill_job, link);
		if (!READ_ONCE(od->dead))
			offload_kill_send(od, job);
		kfree(job);
	}
}
