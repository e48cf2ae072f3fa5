// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * shadow.c: the marked files of /dev/offload and what happens to their processes
 * (docs/offload-threads.md, "Interfaces for migration and shadows (v1)" and section 5).
 * A file is marked as a home when its process spawns shadows (spawn.c calls
 * offload_proc_mark_home) and as a shadow by OFFLOAD_IOC_SHADOW_ATTACH; both marks name
 * the process (thread group) that made them and last as long as the file, so an inherited
 * fd carries an attachment across exec. Here too: the guest message KILL (signal every
 * shadow of a home process), the loss of a node (SIGKILL to every home with threads there
 * and every shadow whose home it was, logged), the release of a marked file (a home's
 * nodes get KILLs, spawn.c; a shadow that died of a signal on its own sends GONE), the
 * guest message GONE (the home process ends too, logged), and OFFLOAD_IOC_PS.
 *
 * Locking: od->proc_lock (a spinlock, process context only) guards od->procs and every
 * file's struct offload_proc. Signals are sent under it (kill_pid does not sleep), so a
 * process marked after a node's loss was handled sees the lost state and is refused, and
 * one marked before is found: the state is written before the lock is taken.
 */
#include <linux/errno.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/signal.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <asm/unaligned.h>

#include "offload.h"

void offload_shadow_init(struct offload_dev *od)
{
	spin_lock_init(&od->proc_lock);
	INIT_LIST_HEAD(&od->procs);
	INIT_LIST_HEAD(&od->spawn_waits);
	atomic64_set(&od->push_ids, 0);
}

static struct offload_file *offload_proc_file(struct offload_proc *p)
{
	return container_of(p, struct offload_file, proc);
}

/* offload_node_is_lost: the device said @node is lost (caller holds proc_lock). */
static bool offload_node_is_lost(struct offload_dev *od, u32 node)
{
	return READ_ONCE(od->node_state[node]) == OFFLOAD_PEER_LOST;
}

/* offload_proc_mark: make @of's file a marked @role of the calling process (proc_lock). */
static void offload_proc_mark(struct offload_file *of, u32 role, u32 home_node, u32 home_pid)
{
	struct offload_proc *p = &of->proc;

	lockdep_assert_held(&of->od->proc_lock);
	p->role = role;
	p->home_node = home_node;
	p->home_pid = home_pid;
	p->nodes = 0;
	p->ended_by_home = false;
	p->pid = get_pid(task_tgid(current));
	list_add_tail(&p->link, &of->od->procs);
}

/*
 * offload_proc_mark_home: before a SPAWN to @node: @of's process is a home with threads
 * on @node; *@had says whether it was already. -EBUSY when the file is a shadow or the
 * home of another process, -ENOTCONN when @node is lost.
 */
int offload_proc_mark_home(struct offload_file *of, u32 node, u64 *had)
{
	struct offload_dev *od = of->od;
	struct offload_proc *p = &of->proc;
	const u32 tgid = task_tgid_nr(current);
	int err = 0;

	spin_lock(&od->proc_lock);
	if (p->role == OFFLOAD_ROLE_SHADOW || (p->role && p->home_pid != tgid))
		err = -EBUSY;
	else if (offload_node_is_lost(od, node))
		err = -ENOTCONN;
	if (!err && !p->role)
		offload_proc_mark(of, OFFLOAD_ROLE_HOME, od->node_index, tgid);
	if (!err) {
		*had = p->nodes & BIT_ULL(node);
		p->nodes |= BIT_ULL(node);
	}
	spin_unlock(&od->proc_lock);
	return err;
}

/* offload_proc_unlink: take @p off the list and unmark it (proc_lock); returns its pid. */
static struct pid *offload_proc_unlink(struct offload_proc *p)
{
	struct pid *pid = p->pid;

	list_del_init(&p->link);
	p->role = 0;
	p->nodes = 0;
	p->pid = NULL;
	return pid;
}

/*
 * offload_proc_unmark_node: a SPAWN to @node was refused and no earlier one went there: the
 * mark goes; a home with no node left is no home.
 */
void offload_proc_unmark_node(struct offload_file *of, u32 node)
{
	struct offload_proc *p = &of->proc;
	struct pid *pid = NULL;

	spin_lock(&of->od->proc_lock);
	p->nodes &= ~BIT_ULL(node);
	if (p->role == OFFLOAD_ROLE_HOME && !p->nodes)
		pid = offload_proc_unlink(p);
	spin_unlock(&of->od->proc_lock);
	put_pid(pid);
}

/*
 * offload_shadow_death: true when the home of the shadow process @p must hear how it ended
 * (proc_lock held); *@signo is the signal it died of, or OFFLOAD_GONE_FAILED when it exited
 * with a nonzero status (its shim could not resume the thread, or lost its home). False
 * when it exited with 0 (its last thread ended), its home ended it (KILL, the home's loss),
 * or the file is released elsewhere than in the exit of its last thread.
 */
static bool offload_shadow_death(struct offload_proc *p, u32 *signo)
{
	int code;

	if (p->ended_by_home || !(current->flags & PF_EXITING) || task_tgid(current) != p->pid)
		return false;
	code = current->signal->group_exit_code ? current->signal->group_exit_code :
		current->exit_code;
	*signo = (code & 0x7f) ? (code & 0x7f) : OFFLOAD_GONE_FAILED;
	return code & 0xff7f;
}

/*
 * offload_proc_release: @of is being released: it leaves the marked files; a home's nodes
 * get a KILL each (the shadows of a process that ended have nothing left to do).
 */
void offload_proc_release(struct offload_file *of)
{
	struct offload_proc *p = &of->proc;
	u32 role, home_pid, home_node, signo = 0;
	bool died = false;
	struct pid *pid;
	u64 nodes;

	spin_lock(&of->od->proc_lock);
	role = p->role;
	home_pid = p->home_pid;
	home_node = p->home_node;
	nodes = p->nodes;
	if (role == OFFLOAD_ROLE_SHADOW)
		died = offload_shadow_death(p, &signo);
	pid = role ? offload_proc_unlink(p) : NULL;
	spin_unlock(&of->od->proc_lock);
	put_pid(pid);
	if (role == OFFLOAD_ROLE_HOME && nodes)
		offload_spawn_release(of->od, home_pid, nodes);
	if (died)
		offload_spawn_gone(of->od, home_node, home_pid, signo);
}

/*
 * offload_ioc_shadow_attach: OFFLOAD_IOC_SHADOW_ATTACH. Errors: -EINVAL (reserved bits, this
 * node, a node beyond the table), -EBUSY (the file is marked already), -ENOTCONN (the home
 * is lost: a KILL could never come).
 */
long offload_ioc_shadow_attach(struct offload_file *of, void __user *uarg)
{
	struct offload_dev *od = of->od;
	struct offload_shadow_attach a;
	bool answer = false;
	u64 token = 0;
	int err = 0;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (a.reserved || a.home_node >= OFFLOAD_MAX_NODES || a.home_node == od->node_index)
		return -EINVAL;
	spin_lock(&od->proc_lock);
	if (of->proc.role)
		err = -EBUSY;
	else if (offload_node_is_lost(od, a.home_node))
		err = -ENOTCONN;
	if (!err) {
		offload_proc_mark(of, OFFLOAD_ROLE_SHADOW, a.home_node, a.home_pid);
		answer = offload_spawn_attached(od, a.home_node, a.home_pid, a.home_tid, &token);
	}
	spin_unlock(&od->proc_lock);
	if (answer) /* the home's SPAWN returns now: its pushes will find us */
		offload_msg_reply(od, token, 0);
	return err;
}

/* offload_proc_comm: @p's process name (TASK_COMM_LEN bytes at @comm), "?" once it is gone. */
static void offload_proc_comm(struct offload_proc *p, char *comm)
{
	struct task_struct *task;

	strscpy(comm, "?", TASK_COMM_LEN);
	rcu_read_lock();
	task = pid_task(p->pid, PIDTYPE_TGID);
	if (task)
		__get_task_comm(comm, TASK_COMM_LEN, task);
	rcu_read_unlock();
}

/* offload_proc_kill: send @signo to @p's process; logs @why (rate-limited) if it is not NULL. */
static void offload_proc_kill(struct offload_dev *od, struct offload_proc *p, int signo,
			      const char *why, u32 node)
{
	char comm[TASK_COMM_LEN];

	if (why) {
		offload_proc_comm(p, comm);
		dev_warn_ratelimited(&od->vdev->dev,
				     "node %u lost: SIGKILL to pid %d (%s): %s %u there\n", node,
				     pid_nr(p->pid), comm, why,
				     p->role == OFFLOAD_ROLE_SHADOW ? p->home_pid : node);
	}
	kill_pid(p->pid, signo, 1);
}

/*
 * offload_msg_kill_in: a KILL from node @src (event work): @signo to every shadow attached
 * for (@src, home pid). Answer 0, -ESRCH (none), or -EINVAL (bad body or signal).
 */
void offload_msg_kill_in(struct offload_dev *od, u32 src, u64 token, const u8 *body,
			 u32 blen)
{
	const struct offload_wire_kill *w = (const void *)body;
	unsigned int hits = 0;
	struct offload_proc *p;
	u32 home_pid, signo = 0;

	if (blen == sizeof(*w))
		signo = get_unaligned_le32(&w->signo);
	if (!signo || !valid_signal(signo)) {
		dev_warn_ratelimited(&od->vdev->dev,
				     "KILL %llu from node %u: %u-byte body or bad signal: refused\n",
				     token, src, blen);
		offload_msg_reply(od, token, -EINVAL);
		return;
	}
	home_pid = get_unaligned_le32(&w->home_pid);
	spin_lock(&od->proc_lock);
	list_for_each_entry(p, &od->procs, link) {
		if (p->role != OFFLOAD_ROLE_SHADOW || p->home_node != src || p->home_pid != home_pid)
			continue;
		p->ended_by_home = true;
		offload_proc_kill(od, p, signo, NULL, src);
		hits++;
	}
	spin_unlock(&od->proc_lock);
	if (hits)
		dev_info_ratelimited(&od->vdev->dev,
				     "KILL from node %u: signal %u to %u shadow(s) of pid %u\n", src,
				     signo, hits, home_pid);
	offload_msg_reply(od, token, hits ? 0 : -ESRCH);
}

/*
 * offload_gone_signal: what the home process gets when its shadow died of @signo: the
 * same signal if it would end the process here too (default action), else SIGKILL (a
 * handler here cannot stand in for the thread that died there). proc_lock held.
 */
static int offload_gone_signal(struct offload_proc *p, u32 signo)
{
	struct task_struct *task;
	int sig = SIGKILL;

	if (!valid_signal(signo) || signo == OFFLOAD_GONE_FAILED || !sig_kernel_coredump(signo))
		return SIGKILL;
	rcu_read_lock();
	task = pid_task(p->pid, PIDTYPE_TGID);
	if (task && task->sighand->action[signo - 1].sa.sa_handler == SIG_DFL)
		sig = signo;
	rcu_read_unlock();
	return sig;
}

/*
 * offload_msg_gone_in: a GONE from node @src (event work): the shadow of our process
 * home_pid there died of a signal (or failed: OFFLOAD_GONE_FAILED); the process ends here
 * too, with that signal when it would end it, else SIGKILL, logged. Answer 0, -ESRCH (no such home), or -EINVAL (bad body).
 */
void offload_msg_gone_in(struct offload_dev *od, u32 src, u64 token, const u8 *body,
			 u32 blen)
{
	const struct offload_wire_kill *w = (const void *)body;
	char comm[TASK_COMM_LEN];
	unsigned int hits = 0;
	struct offload_proc *p;
	u32 home_pid, signo;
	int sig;

	if (blen != sizeof(*w) || src >= OFFLOAD_MAX_NODES) {
		offload_msg_reply(od, token, -EINVAL);
		return;
	}
	home_pid = get_unaligned_le32(&w->home_pid);
	signo = get_unaligned_le32(&w->signo);
	spin_lock(&od->proc_lock);
	list_for_each_entry(p, &od->procs, link) {
		if (p->role != OFFLOAD_ROLE_HOME || p->home_pid != home_pid ||
		    !(p->nodes & BIT_ULL(src)))
			continue;
		sig = offload_gone_signal(p, signo);
		offload_proc_comm(p, comm);
		dev_warn_ratelimited(&od->vdev->dev,
				     "pid %u (%s): its shadow on node %u %s %u: signal %d\n",
				     home_pid, comm, src,
				     signo == OFFLOAD_GONE_FAILED ? "failed, status" : "died of signal",
				     signo == OFFLOAD_GONE_FAILED ? 0 : signo, sig);
		kill_pid(p->pid, sig, 1);
		hits++;
		break;
	}
	spin_unlock(&od->proc_lock);
	offload_msg_reply(od, token, hits ? 0 : -ESRCH);
}

/*
 * offload_procs_node_lost: @node was lost (its state was just set): SIGKILL every home with
 * threads there (whose node mark then goes: no KILL is sent to a lost node) and every
 * shadow whose home it was.
 */
void offload_procs_node_lost(struct offload_dev *od, u32 node)
{
	struct offload_proc *p;

	spin_lock(&od->proc_lock);
	list_for_each_entry(p, &od->procs, link) {
		if (p->role == OFFLOAD_ROLE_HOME && (p->nodes & BIT_ULL(node))) {
			offload_proc_kill(od, p, SIGKILL, "it has threads on node", node);
			p->nodes &= ~BIT_ULL(node);
		} else if (p->role == OFFLOAD_ROLE_SHADOW && p->home_node == node) {
			p->ended_by_home = true;
			offload_proc_kill(od, p, SIGKILL, "it is the shadow of pid", node);
		}
	}
	spin_unlock(&od->proc_lock);
}

/* offload_proc_executors: executors registered through @of. */
static u32 offload_proc_executors(struct offload_file *of)
{
	struct offload_exec *e;
	u32 n = 0;

	spin_lock(&of->od->exec_lock);
	list_for_each_entry(e, &of->execs, flink)
		n++;
	spin_unlock(&of->od->exec_lock);
	return n;
}

/* offload_ps_fill: @p as a PS entry (proc_lock held). */
static void offload_ps_fill(struct offload_ps_entry *e, struct offload_proc *p)
{
	struct offload_file *of = offload_proc_file(p);

	e->pid = pid_nr(p->pid);
	e->role = p->role;
	e->home_node = p->home_node;
	e->home_pid = p->home_pid;
	e->nodes = p->nodes;
	e->executors = offload_proc_executors(of);
	e->forwarded = atomic64_read(&of->forwarded);
	e->served = atomic64_read(&of->served);
	e->faults = atomic64_read(&of->faults);
}

/* offload_ioc_ps: OFFLOAD_IOC_PS: the marked files, in the order they were marked. */
long offload_ioc_ps(struct offload_dev *od, void __user *uarg)
{
	struct offload_proc *p;
	struct offload_ps *ps;
	long err = 0;

	ps = kzalloc(sizeof(*ps), GFP_KERNEL);
	if (!ps)
		return -ENOMEM;
	spin_lock(&od->proc_lock);
	list_for_each_entry(p, &od->procs, link) {
		if (ps->count < OFFLOAD_PS_MAX)
			offload_ps_fill(&ps->procs[ps->count++], p);
		ps->total++;
	}
	spin_unlock(&od->proc_lock);
	if (copy_to_user(uarg, ps, sizeof(*ps)))
		err = -EFAULT;
	kfree(ps);
	return err;
}
