// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * request.c: the request queue (queue 0) of offload.ko. Allocating a request record,
 * adding it as one descriptor chain (header + payload readable, response header + payload
 * writable), sleeping until it completes, and the queue's callback, which matches each
 * used buffer to its request by the token virtqueue_get_buf returns (requests complete in
 * any order), checks the device's answer and wakes the waiter or frees the request. Also
 * the backlog of requests nobody waits for (PONG, SYSCALL_RET, GUEST_MSG_RET) that found
 * the queue full, and failing what is in flight when the device goes.
 */
#include <linux/errno.h>
#include <linux/ktime.h>
#include <linux/overflow.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/virtio_config.h>
#include <asm/unaligned.h>

#include "offload.h"

struct offload_req *offload_req_alloc(struct offload_dev *od, u32 type, u32 out_len,
				      u32 in_cap, gfp_t gfp)
{
	struct offload_req *req;

	if (out_len > OFFLOAD_MAX_PAYLOAD || in_cap > OFFLOAD_MAX_PAYLOAD)
		return NULL;
	req = kzalloc(struct_size(req, buf, (size_t)out_len + in_cap), gfp);
	if (!req)
		return NULL;
	refcount_set(&req->ref, 1);
	init_completion(&req->done);
	INIT_LIST_HEAD(&req->link);
	req->tag = (u64)atomic64_inc_return(&od->next_tag);
	req->out_len = out_len;
	req->in_cap = in_cap;
	req->ndesc = 2 + (out_len ? 1 : 0) + (in_cap ? 1 : 0);
	req->hdr.type = cpu_to_le32(type);
	req->hdr.tag = cpu_to_le64(req->tag);
	req->hdr.len = cpu_to_le32(out_len);
	return req;
}

void offload_req_put(struct offload_req *req)
{
	if (refcount_dec_and_test(&req->ref))
		kfree(req);
}

/*
 * offload_req_no_room: a SYSCALL may block at home for ever, so SYSCALLs must not fill the
 * ring: OFFLOAD_RET_RESERVE descriptors stay for everything else, above all the SYSCALL_RETs
 * that answer the peer's calls (two nodes calling each other with full rings would wait on
 * each other for ever). Caller holds od->lock.
 */
static bool offload_req_no_room(struct offload_dev *od, struct offload_req *req)
{
	unsigned int need = req->ndesc;

	if (le32_to_cpu(req->hdr.type) == OFFLOAD_REQ_SYSCALL)
		need += od->ret_reserve;
	return od->req_vq->num_free < need;
}

/*
 * offload_req_add_locked: add @req to the request queue and notify the device; on success
 * the device holds a reference. Caller holds od->lock. Returns 0, -ENODEV (device being
 * removed), -ENOSPC (queue full) or another error of virtqueue_add_sgs.
 */
static int offload_req_add_locked(struct offload_dev *od, struct offload_req *req)
{
	struct scatterlist hdr, out, resp, in, *sgs[4];
	unsigned int n_out = 0, n_in = 0;
	int err;

	lockdep_assert_held(&od->lock);
	if (od->dead)
		return -ENODEV;
	if (offload_req_no_room(od, req))
		return -ENOSPC;
	sg_init_one(&hdr, &req->hdr, sizeof(req->hdr));
	sgs[n_out++] = &hdr;
	if (req->out_len) {
		sg_init_one(&out, offload_req_out(req), req->out_len);
		sgs[n_out++] = &out;
	}
	sg_init_one(&resp, &req->resp, sizeof(req->resp));
	sgs[n_out + n_in++] = &resp;
	if (req->in_cap) {
		sg_init_one(&in, offload_req_in(req), req->in_cap);
		sgs[n_out + n_in++] = &in;
	}
	refcount_inc(&req->ref); /* the device's reference */
	req->sent_ns = ktime_get_ns();
	err = virtqueue_add_sgs(od->req_vq, sgs, n_out, n_in, req, GFP_ATOMIC);
	if (err) {
		refcount_dec(&req->ref); /* never the last: the caller holds one */
		return err;
	}
	/* Kicked under the lock, so remove knows no notification is in progress. */
	virtqueue_kick(od->req_vq);
	return 0;
}

/* offload_room_changed: a completion freed descriptors since @gen, or the device is gone. */
static bool offload_room_changed(struct offload_dev *od, unsigned long gen)
{
	return READ_ONCE(od->space_gen) != gen || READ_ONCE(od->dead);
}

/*
 * offload_req_submit: add @req to the queue. While the queue is full, sleep as @wait says
 * (or return -ENOSPC with OFFLOAD_NOWAIT); a signal that ends the sleep gives -EINTR. The
 * caller keeps its reference either way.
 */
int offload_req_submit(struct offload_dev *od, struct offload_req *req, enum offload_wait wait)
{
	unsigned long gen;
	int err;

	for (;;) {
		spin_lock_irq(&od->lock);
		err = offload_req_add_locked(od, req);
		gen = od->space_gen;
		spin_unlock_irq(&od->lock);
		if (err != -ENOSPC || wait == OFFLOAD_NOWAIT)
			return err;
		if (wait == OFFLOAD_WAIT_KILL)
			err = wait_event_killable(od->space_wq, offload_room_changed(od, gen));
		else
			err = wait_event_interruptible(od->space_wq,
						       offload_room_changed(od, gen));
		if (err)
			return -EINTR;
	}
}

/*
 * offload_req_call: submit @req and sleep until the device answers. Returns the device's
 * status (0 or a negative errno), -EIO for an answer that breaks the contract, -ENODEV if
 * the device went away, or -EINTR on a signal: then the device keeps its reference and the
 * completion path frees the request when the buffers come back. The caller still holds
 * its own reference and must put it.
 */
int offload_req_call(struct offload_dev *od, struct offload_req *req)
{
	int err;

	err = offload_req_submit(od, req, OFFLOAD_WAIT_INTR);
	if (err)
		return err;
	if (wait_for_completion_interruptible(&req->done))
		return -EINTR;
	return req->status;
}

/* offload_req_check: turn the used length and response header into req->status. */
static void offload_req_check(struct offload_dev *od, struct offload_req *req,
			      unsigned int len)
{
	struct device *dev = &od->vdev->dev;
	u32 type = le32_to_cpu(req->hdr.type);
	s32 status;
	u32 rlen;

	req->done_ns = ktime_get_ns();
	req->status = -EIO;
	if (len < sizeof(req->resp)) {
		dev_warn_ratelimited(dev, "request %llu (type %u) returned with used length %u\n",
				     req->tag, type, len);
		return;
	}
	status = (s32)le32_to_cpu(req->resp.status);
	rlen = le32_to_cpu(req->resp.len);
	if (le64_to_cpu(req->resp.tag) != req->tag) {
		dev_warn_ratelimited(dev, "request %llu answered with tag %llu\n", req->tag,
				     le64_to_cpu(req->resp.tag));
	} else if (rlen > req->in_cap || len != sizeof(req->resp) + rlen) {
		dev_warn_ratelimited(dev,
				     "request %llu: response length %u, used length %u, room %u\n",
				     req->tag, rlen, len, req->in_cap);
	} else if (status > 0 || status < -MAX_ERRNO) {
		dev_warn_ratelimited(dev, "request %llu: status %d is not an errno\n", req->tag,
				     status);
	} else {
		req->status = status;
		req->resp_len = rlen;
	}
	if (type == OFFLOAD_REQ_PONG && req->status)
		dev_warn_ratelimited(dev, "PONG refused: %d\n", req->status);
	/* -ENOENT: the caller's node was lost meanwhile, or the device never sent that token. */
	if ((type == OFFLOAD_REQ_SYSCALL_RET || type == OFFLOAD_REQ_GUEST_MSG_RET) && req->status)
		dev_warn_ratelimited(dev, "answer (type %u) for token %llu refused: %d\n", type,
				     get_unaligned_le64(offload_req_out(req)), req->status);
}

/*
 * offload_req_vq_done: the request queue's callback (interrupt context). Takes every used
 * buffer off the ring under od->lock, then, outside it, completes each request and drops
 * the device's reference (freeing requests whose waiter left on a signal, and PONGs).
 */
void offload_req_vq_done(struct virtqueue *vq)
{
	struct offload_dev *od = vq->vdev->priv;
	struct offload_req *req, *tmp;
	unsigned long flags;
	unsigned int len;
	bool backlog;
	LIST_HEAD(done);

	spin_lock_irqsave(&od->lock, flags);
	do {
		virtqueue_disable_cb(vq);
		while ((req = virtqueue_get_buf(vq, &len))) {
			offload_req_check(od, req, len);
			list_add_tail(&req->link, &done);
		}
	} while (!virtqueue_enable_cb(vq) && !virtqueue_is_broken(vq));
	if (!list_empty(&done))
		od->space_gen++;
	backlog = od->n_backlog > 0;
	spin_unlock_irqrestore(&od->lock, flags);

	if (list_empty(&done))
		return;
	wake_up_all(&od->space_wq);
	if (backlog)
		queue_work(system_highpri_wq, &od->evt_work);
	list_for_each_entry_safe(req, tmp, &done, link) {
		list_del_init(&req->link);
		complete_all(&req->done);
		offload_req_put(req);
	}
}

static bool offload_req_is_pong(const struct offload_req *req)
{
	return le32_to_cpu(req->hdr.type) == OFFLOAD_REQ_PONG;
}

/*
 * offload_backlog_take: may @req wait in the backlog? PONGs only up to
 * OFFLOAD_MAX_PENDING_PONGS (a peer's ping can be dropped); a SYSCALL_RET always (dropping
 * it would leave its caller waiting for ever; their number is bounded by the calls the
 * device has outstanding here). Caller holds od->lock.
 */
static bool offload_backlog_take(struct offload_dev *od, struct offload_req *req)
{
	bool pong = offload_req_is_pong(req);

	if (od->dead || (pong && od->n_backlog_pongs >= OFFLOAD_MAX_PENDING_PONGS))
		return false;
	list_add_tail(&req->link, &od->backlog);
	od->n_backlog++;
	od->n_backlog_pongs += pong;
	return true;
}

/*
 * offload_req_send_async: submit a request nobody waits for (PONG, SYSCALL_RET), taking
 * over the caller's reference. If the queue is full it waits in the backlog (in order)
 * until a completion makes room; a PONG beyond OFFLOAD_MAX_PENDING_PONGS is dropped.
 */
void offload_req_send_async(struct offload_dev *od, struct offload_req *req)
{
	int err = -ENOSPC;

	spin_lock_irq(&od->lock);
	if (od->n_backlog == 0)
		err = offload_req_add_locked(od, req);
	if (err == -ENOSPC && offload_backlog_take(od, req)) {
		spin_unlock_irq(&od->lock);
		return; /* the backlog keeps the caller's reference */
	}
	spin_unlock_irq(&od->lock);
	if (err && err != -ENODEV)
		dev_warn_ratelimited(&od->vdev->dev, "request type %u dropped: %d\n",
				     le32_to_cpu(req->hdr.type), err);
	offload_req_put(req);
}

/* offload_backlog_flush: submit backlogged requests while the queue has room. */
void offload_backlog_flush(struct offload_dev *od)
{
	struct offload_req *req;
	int err;

	spin_lock_irq(&od->lock);
	while (!list_empty(&od->backlog)) {
		req = list_first_entry(&od->backlog, struct offload_req, link);
		err = offload_req_add_locked(od, req);
		if (err == -ENOSPC)
			break;
		list_del_init(&req->link);
		od->n_backlog--;
		od->n_backlog_pongs -= offload_req_is_pong(req);
		if (err)
			dev_warn_ratelimited(&od->vdev->dev, "request type %u dropped: %d\n",
					     le32_to_cpu(req->hdr.type), err);
		offload_req_put(req); /* frees it only if the add failed */
	}
	spin_unlock_irq(&od->lock);
}

/*
 * offload_req_shutdown: after the device was reset and od->dead set: take back every
 * request the device still holds and fail it with -ENODEV (waking its waiter), and drop
 * the backlog (nothing can answer those calls any more).
 */
void offload_req_shutdown(struct offload_dev *od)
{
	struct offload_req *req, *tmp;
	LIST_HEAD(inflight);
	LIST_HEAD(pending);

	spin_lock_irq(&od->lock);
	while ((req = virtqueue_detach_unused_buf(od->req_vq)))
		list_add_tail(&req->link, &inflight);
	list_splice_init(&od->backlog, &pending);
	od->n_backlog = 0;
	od->n_backlog_pongs = 0;
	spin_unlock_irq(&od->lock);

	list_for_each_entry_safe(req, tmp, &inflight, link) {
		list_del_init(&req->link);
		req->status = -ENODEV;
		complete_all(&req->done);
		offload_req_put(req);
	}
	list_for_each_entry_safe(req, tmp, &pending, link) {
		list_del_init(&req->link);
		offload_req_put(req);
	}
}
