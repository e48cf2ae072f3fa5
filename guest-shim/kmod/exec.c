// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * exec.c: the home side of forwarded system calls (docs/offload-threads.md, section 4).
 * A thread becomes the executor of its tid with OFFLOAD_IOC_EXEC_WAIT (registered for the
 * life of its open file); each SYSCALL_IN event is queued for the executor of the record's
 * tid (at most OFFLOAD_EXEC_QUEUE_MAX, beyond: SYSCALL_RET -EBUSY) or, with no live
 * executor, answered at once with SYSCALL_RET -ESRCH. EXEC_WAIT hands the next call to the
 * thread (the call then belongs to the file); OFFLOAD_IOC_EXEC_DONE sends its result back.
 * When the file is released, every call queued for its executors or handed out and not
 * answered gets SYSCALL_RET -ESRCH: the caller never waits for an executor that is gone.
 * OFFLOAD_IOC_THREADS lists the executors (tid, process, the node its calls come from).
 * An executor that asks for it (OFFLOAD_EXEC_SIGNALS) gets a signal that interrupts its
 * wait as a record instead (offload_exec_take_signal): its thread runs elsewhere, and the
 * handler belongs there, not in the executor.
 *
 * Locking: od->exec_lock (a spinlock, process context only) guards the executor table, the
 * queues and every file's execs/handed lists. An executor record lives until its file is
 * released, and an ioctl holds the file, so EXEC_WAIT may use its record unlocked. Answers
 * (requests) are built and sent outside the lock.
 */
#include <linux/errno.h>
#include <linux/fcntl.h>
#include <linux/fs.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <asm/unaligned.h>

#include "offload.h"

void offload_exec_init(struct offload_dev *od)
{
	spin_lock_init(&od->exec_lock);
	hash_init(od->execs);
}

void offload_exec_file_init(struct offload_file *of)
{
	INIT_LIST_HEAD(&of->execs);
	INIT_LIST_HEAD(&of->handed);
}

/* offload_call_ret_req: a SYSCALL_RET request {token, status, 0, ret}, or NULL. */
static struct offload_req *offload_call_ret_req(struct offload_dev *od, u64 token, int status,
						s64 ret)
{
	struct offload_wire_call_ret *w;
	struct offload_req *req;

	req = offload_req_alloc(od, OFFLOAD_REQ_SYSCALL_RET, sizeof(*w), 0, GFP_KERNEL);
	if (!req)
		return NULL;
	w = (struct offload_wire_call_ret *)offload_req_out(req);
	w->token = cpu_to_le64(token);
	w->status = cpu_to_le32((u32)status);
	w->ret = cpu_to_le64((u64)ret);
	return req;
}

/*
 * offload_call_refuse: answer call @token with @status (-ESRCH, -EBUSY) and no result,
 * without waiting (the backlog keeps it if the queue is full).
 */
static void offload_call_refuse(struct offload_dev *od, u64 token, int status)
{
	struct offload_req *req = offload_call_ret_req(od, token, status, 0);

	if (!req) {
		dev_warn_ratelimited(&od->vdev->dev,
				     "no memory to answer call %llu (%d): its caller waits\n",
				     token, status);
		return;
	}
	offload_req_send_async(od, req);
}

/* offload_calls_refuse: answer and free every call on @calls with @status. */
static void offload_calls_refuse(struct offload_dev *od, struct list_head *calls, int status)
{
	struct offload_call *call, *tmp;

	list_for_each_entry_safe(call, tmp, calls, link) {
		list_del(&call->link);
		offload_call_refuse(od, call->rec.token, status);
		kfree(call);
	}
}

/* offload_exec_find: the executor of @tid, or NULL. Caller holds exec_lock. */
static struct offload_exec *offload_exec_find(struct offload_dev *od, u32 tid)
{
	struct offload_exec *e;

	lockdep_assert_held(&od->exec_lock);
	hash_for_each_possible(od->execs, e, hnode, tid)
		if (e->tid == tid)
			return e;
	return NULL;
}

/* offload_exec_alive: the registered thread still exists (its tid was not freed). */
static bool offload_exec_alive(struct offload_exec *e)
{
	return pid_has_task(e->pid, PIDTYPE_PID);
}

/* offload_call_decode: the SYSCALL_IN event @ev (payload checked to be one record). */
static void offload_call_decode(struct offload_call *call, const struct offload_wire_event *ev)
{
	const struct offload_wire_call *w = (const void *)(ev + 1);
	unsigned int i;

	call->rec.token = le64_to_cpu(ev->token);
	call->rec.src_node = le32_to_cpu(ev->src_node);
	call->rec.node = get_unaligned_le32(&w->node);
	call->rec.tid = get_unaligned_le32(&w->tid);
	call->rec.nr = get_unaligned_le64(&w->nr);
	for (i = 0; i < OFFLOAD_SYSCALL_ARGS; i++)
		call->rec.args[i] = get_unaligned_le64(&w->args[i]);
}

/*
 * offload_call_queue: queue @call for its executor and wake it. Returns 0, or the status
 * to refuse it with: -ESRCH (no live executor for the tid), -EBUSY (its queue is full).
 */
static int offload_call_queue(struct offload_dev *od, struct offload_call *call)
{
	struct offload_exec *e;
	int status = 0;

	spin_lock(&od->exec_lock);
	e = offload_exec_find(od, call->rec.tid);
	if (!e || !offload_exec_alive(e)) {
		status = -ESRCH;
	} else if (e->queued >= OFFLOAD_EXEC_QUEUE_MAX) {
		status = -EBUSY;
	} else {
		list_add_tail(&call->link, &e->queue);
		e->queued++;
		e->node = call->rec.src_node;
		e->calls++;
		wake_up(&e->wq);
	}
	spin_unlock(&od->exec_lock);
	return status;
}

/*
 * offload_evt_syscall_in: a SYSCALL_IN event (event work). A payload that is not one call
 * record is logged and refused with -ESRCH (the token is all we can trust; the caller must
 * not wait for ever).
 */
void offload_evt_syscall_in(struct offload_dev *od, const struct offload_wire_event *ev,
			    u32 plen)
{
	const u64 token = le64_to_cpu(ev->token);
	struct offload_call *call;
	int status;

	if (plen != sizeof(struct offload_wire_call)) {
		dev_warn_ratelimited(&od->vdev->dev,
				     "SYSCALL_IN %llu from node %u with %u payload bytes: refused\n",
				     token, le32_to_cpu(ev->src_node), plen);
		offload_call_refuse(od, token, -ESRCH);
		return;
	}
	call = kzalloc(sizeof(*call), GFP_KERNEL);
	if (!call) {
		/* The allocator has said why; the caller learns it as a busy home. */
		offload_call_refuse(od, token, -EBUSY);
		return;
	}
	offload_call_decode(call, ev);
	status = offload_call_queue(od, call);
	if (!status)
		return;
	if (status == -EBUSY)
		dev_info_ratelimited(&od->vdev->dev,
				     "SYSCALL_IN for tid %u: %u calls queued already: -EBUSY\n",
				     call->rec.tid, OFFLOAD_EXEC_QUEUE_MAX);
	offload_call_refuse(od, token, status);
	kfree(call);
}

/*
 * offload_exec_claim: under exec_lock, make @fresh (or the record this file already has
 * for @tid) the executor of @tid for @of, the calling thread being @pid. A record of this
 * file for a dead thread with the same tid is taken over: its queued calls, meant for that
 * thread, move to @stale, its pid to @old_pid. Returns the record, or ERR_PTR(-EBUSY) when
 * another open file has a live executor for the tid.
 */
static struct offload_exec *offload_exec_claim(struct offload_file *of, u32 tid,
					       struct pid *pid, struct offload_exec **fresh,
					       struct list_head *stale, struct pid **old_pid)
{
	struct offload_dev *od = of->od;
	struct offload_exec *e;

	lockdep_assert_held(&od->exec_lock);
	e = offload_exec_find(od, tid);
	if (e && e->of != of)
		return ERR_PTR(-EBUSY);
	if (e && e->pid != pid) {
		list_splice_init(&e->queue, stale);
		e->queued = 0;
		*old_pid = e->pid;
		e->pid = get_pid(pid);
	}
	if (e)
		return e;
	e = *fresh;
	*fresh = NULL;
	e->of = of;
	e->tid = tid;
	e->node = OFFLOAD_NODE_UNKNOWN;
	e->pid = get_pid(pid);
	INIT_LIST_HEAD(&e->queue);
	init_waitqueue_head(&e->wq);
	hash_add(od->execs, &e->hnode, tid);
	list_add_tail(&e->flink, &of->execs);
	return e;
}

/* offload_exec_register: the calling thread becomes (or stays) the executor of its tid. */
static struct offload_exec *offload_exec_register(struct offload_file *of)
{
	struct offload_exec *e, *fresh = kzalloc(sizeof(*fresh), GFP_KERNEL);
	struct offload_dev *od = of->od;
	struct pid *old_pid = NULL;
	LIST_HEAD(stale);

	if (!fresh)
		return ERR_PTR(-ENOMEM);
	spin_lock(&od->exec_lock);
	e = offload_exec_claim(of, task_pid_nr(current), task_pid(current), &fresh, &stale,
			       &old_pid);
	spin_unlock(&od->exec_lock);
	kfree(fresh);
	put_pid(old_pid);
	offload_calls_refuse(od, &stale, -ESRCH);
	return e;
}

/* offload_exec_take: the first call queued for @e, now handed to its file; or NULL. */
static struct offload_call *offload_exec_take(struct offload_exec *e)
{
	struct offload_dev *od = e->of->od;
	struct offload_call *call;

	spin_lock(&od->exec_lock);
	call = list_first_entry_or_null(&e->queue, struct offload_call, link);
	if (call) {
		list_move_tail(&call->link, &e->of->handed);
		e->queued--;
	}
	spin_unlock(&od->exec_lock);
	return call;
}

/* offload_exec_untake: put @call back at the head of @e's queue (it never reached the thread). */
static void offload_exec_untake(struct offload_exec *e, struct offload_call *call)
{
	spin_lock(&e->of->od->exec_lock);
	list_move(&call->link, &e->queue);
	e->queued++;
	spin_unlock(&e->of->od->exec_lock);
}

/*
 * offload_exec_next: wait (interruptibly) for the next call of @e. With O_NONBLOCK on the
 * file, -EAGAIN instead of waiting: a thread registers itself that way before it tells
 * anyone its tid.
 */
static struct offload_call *offload_exec_next(struct offload_exec *e, struct file *file)
{
	struct offload_dev *od = e->of->od;
	struct offload_call *call;

	for (;;) {
		if (READ_ONCE(od->dead))
			return ERR_PTR(-ENODEV);
		call = offload_exec_take(e);
		if (call)
			return call;
		if (file->f_flags & O_NONBLOCK)
			return ERR_PTR(-EAGAIN);
		if (wait_event_interruptible(e->wq, READ_ONCE(e->queued) || READ_ONCE(od->dead)))
			return ERR_PTR(-EINTR);
	}
}

/*
 * offload_exec_keep: the signals the executor must leave to the kernel (caller
 * holds siglock): those it blocks, SIGKILL, SIGSYS (the shim's), the stop signals (they
 * stop the process here), and those without a handler (their default or ignore action
 * belongs to the process here).
 */
static void offload_exec_keep(sigset_t *keep)
{
	struct k_sigaction *ka = current->sighand->action;
	int sig;

	*keep = current->blocked;
	sigaddsetmask(keep, sigmask(SIGKILL) | sigmask(SIGSTOP) | sigmask(SIGSYS) |
		      sigmask(SIGTSTP) | sigmask(SIGTTIN) | sigmask(SIGTTOU));
	for (sig = 1; sig <= _NSIG; sig++)
		if (ka[sig - 1].sa.sa_handler == SIG_DFL || ka[sig - 1].sa.sa_handler == SIG_IGN)
			sigaddset(keep, sig);
}

/*
 * offload_exec_take_signal: a signal interrupted the wait of an executor that asked for
 * signals: take the first one it would run a handler for as @rec. False if there is none
 * (SIGKILL, a blocked-only or default-action signal: the kernel delivers those).
 */
static bool offload_exec_take_signal(struct offload_exec_call *rec)
{
	kernel_siginfo_t info;
	enum pid_type type;
	sigset_t keep;
	int sig;

	if (fatal_signal_pending(current))
		return false;
	spin_lock_irq(&current->sighand->siglock);
	offload_exec_keep(&keep);
	sig = dequeue_signal(current, &keep, &info, &type);
	spin_unlock_irq(&current->sighand->siglock);
	if (sig <= 0)
		return false;
	memset(rec, 0, sizeof(*rec));
	rec->nr = OFFLOAD_EXEC_SIGNAL;
	rec->tid = task_pid_nr(current);
	BUILD_BUG_ON(sizeof(info) < sizeof(rec->args));
	memcpy(rec->args, &info, sizeof(rec->args));
	return true;
}

/*
 * offload_ioc_exec_wait: OFFLOAD_IOC_EXEC_WAIT. Registers the calling thread, then hands it
 * the next call for its tid. Errors: -EBUSY (another open file has a live executor for this
 * tid), -EAGAIN (O_NONBLOCK, nothing queued), -EINTR (a signal), -ENODEV (device removed),
 * -EFAULT (the call stays queued for the next EXEC_WAIT).
 */
long offload_ioc_exec_wait(struct offload_file *of, struct file *file, void __user *uarg)
{
	struct offload_exec_call sigrec;
	struct offload_call *call;
	struct offload_exec *e;
	u32 flags;

	if (READ_ONCE(of->od->dead))
		return -ENODEV;
	if (get_user(flags, (u32 __user *)(uarg + offsetof(struct offload_exec_call, flags))))
		return -EFAULT;
	if (flags & ~OFFLOAD_EXEC_SIGNALS)
		return -EINVAL;
	e = offload_exec_register(of);
	if (IS_ERR(e))
		return PTR_ERR(e);
	call = offload_exec_next(e, file);
	if (PTR_ERR_OR_ZERO(call) == -EINTR && (flags & OFFLOAD_EXEC_SIGNALS) &&
	    offload_exec_take_signal(&sigrec))
		return copy_to_user(uarg, &sigrec, sizeof(sigrec)) ? -EFAULT : 0;
	if (IS_ERR(call))
		return PTR_ERR(call);
	if (copy_to_user(uarg, &call->rec, sizeof(call->rec))) {
		offload_exec_untake(e, call);
		return -EFAULT;
	}
	return 0;
}

/* offload_handed_take: the call @token handed to @of, taken off its list; or NULL. */
static struct offload_call *offload_handed_take(struct offload_file *of, u64 token)
{
	struct offload_call *call, *found = NULL;

	spin_lock(&of->od->exec_lock);
	list_for_each_entry(call, &of->handed, link) {
		if (call->rec.token == token) {
			found = call;
			list_del_init(&call->link);
			break;
		}
	}
	spin_unlock(&of->od->exec_lock);
	return found;
}

static void offload_handed_put_back(struct offload_file *of, struct offload_call *call)
{
	spin_lock(&of->od->exec_lock);
	list_add(&call->link, &of->handed);
	spin_unlock(&of->od->exec_lock);
}

/*
 * offload_ioc_exec_done: OFFLOAD_IOC_EXEC_DONE. Sends SYSCALL_RET {token, 0, 0, ret} for a
 * call this file handed out (else -EINVAL). It does not wait for the device's answer (a
 * refusal is logged). If the request cannot be added (a signal while the queue is full:
 * -EINTR; no memory) the call stays handed out and EXEC_DONE may be repeated.
 */
long offload_ioc_exec_done(struct offload_file *of, void __user *uarg)
{
	struct offload_dev *od = of->od;
	struct offload_exec_done d;
	struct offload_call *call;
	struct offload_req *req;
	int err;

	if (copy_from_user(&d, uarg, sizeof(d)))
		return -EFAULT;
	call = offload_handed_take(of, d.token);
	if (!call)
		return -EINVAL;
	req = offload_call_ret_req(od, d.token, 0, d.ret);
	err = req ? offload_req_submit(od, req, OFFLOAD_WAIT_INTR) : -ENOMEM;
	if (req)
		offload_req_put(req);
	if (err && err != -ENODEV) {
		offload_handed_put_back(of, call);
		return err;
	}
	kfree(call);
	return err;
}

/*
 * offload_exec_release: @of is released: its executors leave the table, and every call
 * queued for them or handed out and not answered gets SYSCALL_RET -ESRCH.
 */
void offload_exec_release(struct offload_file *of)
{
	struct offload_dev *od = of->od;
	struct offload_exec *e, *tmp;
	LIST_HEAD(execs);
	LIST_HEAD(calls);

	spin_lock(&od->exec_lock);
	list_for_each_entry(e, &of->execs, flink) {
		hash_del(&e->hnode);
		list_splice_tail_init(&e->queue, &calls);
	}
	list_splice_init(&of->execs, &execs);
	list_splice_tail_init(&of->handed, &calls);
	spin_unlock(&od->exec_lock);

	offload_calls_refuse(od, &calls, -ESRCH);
	list_for_each_entry_safe(e, tmp, &execs, flink) {
		put_pid(e->pid);
		kfree(e);
	}
}

/* offload_exec_shutdown: the device is dead (remove): wake every waiting executor. */
void offload_exec_shutdown(struct offload_dev *od)
{
	struct offload_exec *e;
	unsigned int bkt;

	spin_lock(&od->exec_lock);
	hash_for_each(od->execs, bkt, e, hnode)
		wake_up_all(&e->wq);
	spin_unlock(&od->exec_lock);
}

/* offload_thread_fill: @e as a THREADS entry (exec_lock held). */
static void offload_thread_fill(struct offload_thread_entry *t, struct offload_exec *e)
{
	struct task_struct *task;

	t->tid = e->tid;
	t->node = e->node;
	t->calls = e->calls;
	rcu_read_lock();
	task = pid_task(e->pid, PIDTYPE_PID);
	t->pid = task ? task_tgid_nr(task) : 0;
	rcu_read_unlock();
}

/* offload_ioc_threads: OFFLOAD_IOC_THREADS: every executor of this VM. */
long offload_ioc_threads(struct offload_dev *od, void __user *uarg)
{
	struct offload_threads *ts;
	struct offload_exec *e;
	unsigned int bkt;
	long err = 0;

	ts = kzalloc(sizeof(*ts), GFP_KERNEL);
	if (!ts)
		return -ENOMEM;
	spin_lock(&od->exec_lock);
	hash_for_each(od->execs, bkt, e, hnode) {
		if (ts->count < OFFLOAD_THREADS_MAX)
			offload_thread_fill(&ts->threads[ts->count++], e);
		ts->total++;
	}
	spin_unlock(&od->exec_lock);
	if (copy_to_user(uarg, ts, sizeof(*ts)))
		err = -EFAULT;
	kfree(ts);
	return err;
}

/*
 * offload_ioc_signal: OFFLOAD_IOC_SIGNAL: the signal a home pushed for one of its threads,
 * raised in that thread here (send_sig_info: the siginfo stays the sender's, which a
 * user-space rt_tgsigqueueinfo to another thread may not do).
 */
long offload_ioc_signal(void __user *uarg)
{
	struct offload_signal s;
	struct task_struct *task;
	kernel_siginfo_t info;
	long err = -ESRCH;

	if (copy_from_user(&s, uarg, sizeof(s)))
		return -EFAULT;
	if (!valid_signal(s.signo) || !s.signo || s.signo == SIGKILL || s.signo == SIGSTOP ||
	    s.signo == SIGSYS)
		return -EINVAL;
	clear_siginfo(&info);
	memcpy(&info, s.info, min(sizeof(info), sizeof(s.info)));
	info.si_signo = s.signo;
	rcu_read_lock();
	task = pid_task(find_vpid(s.tid), PIDTYPE_PID);
	if (task && same_thread_group(task, current))
		err = send_sig_info(s.signo, &info, task);
	rcu_read_unlock();
	return err;
}
