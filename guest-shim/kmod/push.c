// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * push.c: what a home process pushes to every shadow of it (docs/offload-threads.md,
 * "Pushes to every shadow"): its layout changes and the signals for its threads that run
 * there. The bytes are the shim's business (its struct layout_req or struct sig_push); the
 * driver only carries them.
 *
 * Home side: OFFLOAD_IOC_PUSH sends the guest message PUSH {home pid, bytes} to every node
 * in the union of the node marks of the calling process's home files and returns once
 * every node answered. A node that did not take it (timeout, refusal, lost) leaves a
 * shadow whose memory may differ from the home's: the process is SIGKILLed, with the
 * reason logged (decision 7), and the ioctl returns the error.
 *
 * Shadow side: a PUSH from node N is queued on every shadow attached for (N, home pid);
 * the shadow's agent thread takes it (PUSH_WAIT), applies it and says so (PUSH_DONE).
 * The message is answered when every shadow it was queued on is done with it, or released
 * (a shadow that ended has nothing left to map); with no shadow it is answered at once.
 * Lists live in each file under od->proc_lock; a message is shared by its copies and
 * counts the shadows still to take it.
 */
#include <linux/errno.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/wait.h>
#include <asm/unaligned.h>

#include "offload.h"

/* A PUSH from a peer, shared by the shadows it was queued on. */
struct offload_push_msg {
	u64 token;
	atomic_t left;		/* shadows (and the receiver, while queuing) still holding it */
	atomic_t status;	/* the first error a shadow reported, or 0 */
	u32 home_node;
	u32 home_pid;
	u32 len;
	u8 data[];
};

/* One shadow's copy of a message. */
struct offload_push_item {
	struct list_head link;	/* of->push_queue, then of->push_handed */
	u64 id;
	struct offload_push_msg *msg;
};

void offload_push_file_init(struct offload_file *of)
{
	INIT_LIST_HEAD(&of->push_queue);
	INIT_LIST_HEAD(&of->push_handed);
	init_waitqueue_head(&of->push_wq);
}

/* offload_push_put: one holder is done with @msg; the last one answers the message. */
static void offload_push_put(struct offload_dev *od, struct offload_push_msg *msg)
{
	if (!atomic_dec_and_test(&msg->left))
		return;
	offload_msg_reply(od, msg->token, atomic_read(&msg->status));
	kfree(msg);
}

/* offload_push_fail: remember @err as the message's outcome if it is the first. */
static void offload_push_fail(struct offload_push_msg *msg, int err)
{
	atomic_cmpxchg(&msg->status, 0, err);
}

/* offload_push_put_all: drop every item of @list (already unlinked from its file). */
static void offload_push_put_all(struct offload_dev *od, struct list_head *list)
{
	struct offload_push_item *it, *tmp;

	list_for_each_entry_safe(it, tmp, list, link) {
		list_del(&it->link);
		offload_push_put(od, it->msg);
		kfree(it);
	}
}

/* offload_push_release: @of is released: what it holds counts as applied. */
void offload_push_release(struct offload_file *of)
{
	LIST_HEAD(gone);

	spin_lock(&of->od->proc_lock);
	list_splice_init(&of->push_queue, &gone);
	list_splice_init(&of->push_handed, &gone);
	of->push_queued = 0;
	spin_unlock(&of->od->proc_lock);
	offload_push_put_all(of->od, &gone);
}

/* offload_push_queue: queue @msg on every shadow of (src, home pid) (proc_lock held). */
static void offload_push_queue(struct offload_dev *od, struct offload_push_msg *msg)
{
	struct offload_push_item *it;
	struct offload_file *of;
	struct offload_proc *p;

	lockdep_assert_held(&od->proc_lock);
	list_for_each_entry(p, &od->procs, link) {
		if (p->role != OFFLOAD_ROLE_SHADOW || p->home_node != msg->home_node ||
		    p->home_pid != msg->home_pid)
			continue;
		of = container_of(p, struct offload_file, proc);
		it = of->push_queued < OFFLOAD_PUSH_QUEUE_MAX ?
			kmalloc(sizeof(*it), GFP_ATOMIC) : NULL;
		if (!it) {
			offload_push_fail(msg, of->push_queued ? -EBUSY : -ENOMEM);
			continue;
		}
		it->id = atomic64_inc_return(&od->push_ids);
		it->msg = msg;
		atomic_inc(&msg->left);
		list_add_tail(&it->link, &of->push_queue);
		of->push_queued++;
		wake_up_interruptible(&of->push_wq);
	}
}

/*
 * offload_msg_push_in: a PUSH from node @src (event work): queue it on the shadows of
 * its process; answered once they applied it, or at once when there is none (0) or the
 * body is malformed (-EINVAL).
 */
void offload_msg_push_in(struct offload_dev *od, u32 src, u64 token, const u8 *body,
			   u32 blen)
{
	const struct offload_wire_push *w = (const void *)body;
	struct offload_push_msg *msg;
	u32 len = 0;

	if (blen >= sizeof(*w))
		len = get_unaligned_le32(&w->len);
	if (blen < sizeof(*w) || len > OFFLOAD_PUSH_MAX || blen != sizeof(*w) + len) {
		dev_warn_ratelimited(&od->vdev->dev,
				     "PUSH %llu from node %u: %u-byte body: refused\n", token,
				     src, blen);
		offload_msg_reply(od, token, -EINVAL);
		return;
	}
	msg = kmalloc(sizeof(*msg) + len, GFP_KERNEL);
	if (!msg) {
		offload_msg_reply(od, token, -ENOMEM);
		return;
	}
	msg->token = token;
	atomic_set(&msg->left, 1);
	atomic_set(&msg->status, 0);
	msg->home_node = src;
	msg->home_pid = get_unaligned_le32(&w->home_pid);
	msg->len = len;
	memcpy(msg->data, w + 1, len);
	spin_lock(&od->proc_lock);
	offload_push_queue(od, msg);
	spin_unlock(&od->proc_lock);
	offload_push_put(od, msg);
}

/* offload_push_take: the first queued item of @of, moved to the handed list; or NULL. */
static struct offload_push_item *offload_push_take(struct offload_file *of)
{
	struct offload_push_item *it = NULL;

	spin_lock(&of->od->proc_lock);
	if (!list_empty(&of->push_queue)) {
		it = list_first_entry(&of->push_queue, struct offload_push_item, link);
		list_move_tail(&it->link, &of->push_handed);
		of->push_queued--;
	}
	spin_unlock(&of->od->proc_lock);
	return it;
}

/* offload_push_finish: item @id of @of is done with @status; -ENOENT if not handed. */
static int offload_push_finish(struct offload_file *of, u64 id, int status)
{
	struct offload_push_item *it, *found = NULL;

	spin_lock(&of->od->proc_lock);
	list_for_each_entry(it, &of->push_handed, link) {
		if (it->id == id) {
			found = it;
			list_del(&it->link);
			break;
		}
	}
	spin_unlock(&of->od->proc_lock);
	if (!found)
		return -ENOENT;
	if (status)
		offload_push_fail(found->msg, status);
	offload_push_put(of->od, found->msg);
	kfree(found);
	return 0;
}

/* offload_is_shadow: @of is attached as a shadow. */
static bool offload_is_shadow(struct offload_file *of)
{
	bool yes;

	spin_lock(&of->od->proc_lock);
	yes = of->proc.role == OFFLOAD_ROLE_SHADOW;
	spin_unlock(&of->od->proc_lock);
	return yes;
}

/*
 * offload_ioc_push_wait: OFFLOAD_IOC_PUSH_WAIT. Errors: -EINVAL (not a shadow, nonzero
 * flags), -EINTR (a signal), -EFAULT, -ENOMEM.
 */
long offload_ioc_push_wait(struct offload_file *of, void __user *uarg)
{
	struct offload_push_item *it;
	struct offload_push *l;
	u32 flags;
	long err = 0;

	if (get_user(flags, (u32 __user *)(uarg + offsetof(struct offload_push, flags))))
		return -EFAULT;
	if (flags || !offload_is_shadow(of))
		return -EINVAL;
	while (!(it = offload_push_take(of))) {
		if (wait_event_interruptible(of->push_wq, READ_ONCE(of->push_queued)))
			return -EINTR;
	}
	l = kzalloc(sizeof(*l), GFP_KERNEL);
	if (l) {
		l->id = it->id;
		l->home_node = it->msg->home_node;
		l->home_pid = it->msg->home_pid;
		l->len = it->msg->len;
		memcpy(l->data, it->msg->data, it->msg->len);
		if (copy_to_user(uarg, l, sizeof(*l)))
			err = -EFAULT;
		kfree(l);
	} else {
		err = -ENOMEM;
	}
	if (err) /* never handed out: it must not hold up its message */
		offload_push_finish(of, it->id, (int)err);
	return err;
}

/* offload_ioc_push_done: OFFLOAD_IOC_PUSH_DONE. -EINVAL (bad status), -ENOENT. */
long offload_ioc_push_done(struct offload_file *of, void __user *uarg)
{
	struct offload_push_done d;

	if (copy_from_user(&d, uarg, sizeof(d)))
		return -EFAULT;
	if (d.reserved || d.status > 0 || d.status < -MAX_ERRNO)
		return -EINVAL;
	return offload_push_finish(of, d.id, d.status);
}

/* offload_home_nodes: the nodes the calling process has shadows on (its home files). */
static u64 offload_home_nodes(struct offload_dev *od)
{
	const u32 tgid = task_tgid_nr(current);
	struct offload_proc *p;
	u64 nodes = 0;

	spin_lock(&od->proc_lock);
	list_for_each_entry(p, &od->procs, link)
		if (p->role == OFFLOAD_ROLE_HOME && p->home_pid == tgid)
			nodes |= p->nodes;
	spin_unlock(&od->proc_lock);
	return nodes;
}

/* offload_push_lost: a push to @node failed with @err: the process cannot go on. */
static void offload_push_lost(struct offload_dev *od, u32 node, int err)
{
	char comm[TASK_COMM_LEN];

	get_task_comm(comm, current);
	dev_warn_ratelimited(&od->vdev->dev,
			     "push of pid %d (%s) not taken on node %u (%d): SIGKILL\n",
			     task_tgid_nr(current), comm, node, err);
	kill_pid(task_tgid(current), SIGKILL, 1);
}

/* offload_push_send: @l's change to every node in @nodes; the first error. */
static int offload_push_send(struct offload_dev *od, const struct offload_push *l, u64 nodes)
{
	struct offload_wire_push *w;
	unsigned int node;
	int err, first = 0;

	w = kmalloc(sizeof(*w) + l->len, GFP_KERNEL);
	if (!w)
		return -ENOMEM;
	w->home_pid = cpu_to_le32(task_tgid_nr(current));
	w->len = cpu_to_le32(l->len);
	memcpy(w + 1, l->data, l->len);
	for_each_set_bit(node, (unsigned long *)&nodes, OFFLOAD_MAX_NODES) {
		err = offload_guest_msg(od, node, OFFLOAD_MSG_PUSH, w, sizeof(*w) + l->len);
		if (err && err != -EINTR)
			offload_push_lost(od, node, err);
		if (err && !first)
			first = err;
	}
	kfree(w);
	return first;
}

/*
 * offload_ioc_push: OFFLOAD_IOC_PUSH. 0 with no shadow anywhere. Errors:
 * -EINVAL (nonzero id/home/flags, len too big), -EFAULT, -ENOMEM, or a node's error
 * (offload_guest_msg's; the process is being killed then).
 */
long offload_ioc_push(struct offload_file *of, void __user *uarg)
{
	struct offload_push *l;
	long err = 0;
	u64 nodes;

	l = kmalloc(sizeof(*l), GFP_KERNEL);
	if (!l)
		return -ENOMEM;
	if (copy_from_user(l, uarg, sizeof(*l)))
		err = -EFAULT;
	else if (l->id || l->home_node || l->home_pid || l->flags || l->len > OFFLOAD_PUSH_MAX)
		err = -EINVAL;
	nodes = err ? 0 : offload_home_nodes(of->od);
	if (nodes)
		err = offload_push_send(of->od, l, nodes);
	kfree(l);
	return err;
}
