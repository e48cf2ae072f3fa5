// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * events.c: the event queue (queue 1) of offload.ko. Keeps writable buffers of
 * 24 + 4096 bytes posted; the queue's callback only schedules evt_work, which (in process
 * context, under od->evt_lock) takes each filled buffer off the ring, checks it, acts on
 * it and posts it again: a PING_IN is answered by a PONG request carrying the event's
 * token and payload, with no user space involved; a PEER_STATE updates the node state
 * table; a PAGES_LOST goes to winmap.c (mark, zap, SIGBUS); a SYSCALL_IN goes to exec.c
 * (queued for its executor, or answered at once); a GUEST_MSG_IN goes to guestmsg.c
 * (answered by kind). The same work submits the PONGs, SYSCALL_RETs and GUEST_MSG_RETs
 * that earlier found the request queue full.
 */
#include <linux/errno.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <asm/unaligned.h>
#include <linux/virtio_config.h>

#include "offload.h"

/* Events handled per run of evt_work before it yields (and requeues itself). */
#define OFFLOAD_EVT_BUDGET 64

/* offload_evt_post: post @buf on the event queue (caller holds evt_lock); frees it on error. */
static int offload_evt_post(struct offload_dev *od, void *buf)
{
	struct scatterlist sg;
	int err;

	sg_init_one(&sg, buf, OFFLOAD_EVENT_BUF_SIZE);
	err = virtqueue_add_inbuf(od->evt_vq, &sg, 1, buf, GFP_KERNEL);
	if (err) {
		kfree(buf);
		return err;
	}
	od->evt_posted++;
	return 0;
}

/* offload_evt_topup: allocate and post buffers up to evt_target. Returns how many. */
static unsigned int offload_evt_topup(struct offload_dev *od)
{
	unsigned int added = 0;
	void *buf;

	while (od->evt_posted < od->evt_target) {
		buf = kmalloc(OFFLOAD_EVENT_BUF_SIZE, GFP_KERNEL);
		if (!buf || offload_evt_post(od, buf))
			break;
		added++;
	}
	return added;
}

/* offload_evt_fill: post the first event buffers (probe, device ready). */
int offload_evt_fill(struct offload_dev *od)
{
	int err = 0;

	mutex_lock(&od->evt_lock);
	if (offload_evt_topup(od))
		virtqueue_kick(od->evt_vq);
	if (od->evt_posted < od->evt_target)
		err = -ENOMEM;
	mutex_unlock(&od->evt_lock);
	return err;
}

/* offload_evt_ping_in: answer a peer's ping with a PONG of the same token and bytes. */
static void offload_evt_ping_in(struct offload_dev *od, const struct offload_wire_event *ev,
				u32 plen)
{
	const u64 token = le64_to_cpu(ev->token);
	struct offload_req *req;

	if (plen + sizeof(token) > OFFLOAD_MAX_PAYLOAD) {
		dev_warn_ratelimited(&od->vdev->dev,
				     "PING_IN from node %u with %u bytes: too long to answer\n",
				     le32_to_cpu(ev->src_node), plen);
		return;
	}
	req = offload_req_alloc(od, OFFLOAD_REQ_PONG, sizeof(token) + plen, 0, GFP_KERNEL);
	if (!req) {
		dev_warn_ratelimited(&od->vdev->dev, "PING_IN: no memory for the PONG\n");
		return;
	}
	put_unaligned_le64(token, offload_req_out(req));
	memcpy(offload_req_out(req) + sizeof(token), ev + 1, plen);
	offload_req_send_async(od, req);
}

static void offload_evt_peer_state(struct offload_dev *od, const struct offload_wire_event *ev,
				   u32 plen)
{
	if (plen != sizeof(__le32)) {
		dev_warn_ratelimited(&od->vdev->dev, "PEER_STATE event with %u payload bytes\n",
				     plen);
		return;
	}
	offload_set_node_state(od, le32_to_cpu(ev->src_node),
			       get_unaligned_le32((const u8 *)(ev + 1)));
}

/* offload_evt_handle: one filled event buffer of used length @len. */
static void offload_evt_handle(struct offload_dev *od, const void *buf, unsigned int len)
{
	const struct offload_wire_event *ev = buf;
	u32 type, plen;

	if (len < sizeof(*ev) || len > OFFLOAD_EVENT_BUF_SIZE) {
		dev_warn_ratelimited(&od->vdev->dev, "event with used length %u\n", len);
		return;
	}
	type = le32_to_cpu(ev->type);
	plen = le32_to_cpu(ev->len);
	if (plen > OFFLOAD_MAX_PAYLOAD || len != sizeof(*ev) + plen) {
		dev_warn_ratelimited(&od->vdev->dev,
				     "event type %u: payload length %u, used length %u\n", type,
				     plen, len);
		return;
	}
	switch (type) {
	case OFFLOAD_EVT_PING_IN:
		offload_evt_ping_in(od, ev, plen);
		break;
	case OFFLOAD_EVT_PEER_STATE:
		offload_evt_peer_state(od, ev, plen);
		break;
	case OFFLOAD_EVT_PAGES_LOST:
		offload_window_pages_lost(od, le32_to_cpu(ev->src_node), (const u8 *)(ev + 1),
					  plen);
		break;
	case OFFLOAD_EVT_SYSCALL_IN:
		offload_evt_syscall_in(od, ev, plen);
		break;
	case OFFLOAD_EVT_GUEST_MSG_IN:
		offload_evt_guest_msg_in(od, ev, plen);
		break;
	default:
		dev_warn_ratelimited(&od->vdev->dev, "unknown event type %u\n", type);
		break;
	}
}

/*
 * offload_evt_work: drain the event queue (at most OFFLOAD_EVT_BUDGET events a run),
 * reposting each buffer after its event is handled, and top the queue up.
 */
void offload_evt_work(struct work_struct *work)
{
	struct offload_dev *od = container_of(work, struct offload_dev, evt_work);
	unsigned int len, handled = 0, posted = 0;
	void *buf;

	mutex_lock(&od->evt_lock);
	if (READ_ONCE(od->dead))
		goto out;
	offload_backlog_flush(od);
	while (handled < OFFLOAD_EVT_BUDGET && (buf = virtqueue_get_buf(od->evt_vq, &len))) {
		od->evt_posted--;
		handled++;
		offload_evt_handle(od, buf, len);
		if (offload_evt_post(od, buf) == 0)
			posted++;
	}
	posted += offload_evt_topup(od);
	if (posted)
		virtqueue_kick(od->evt_vq);
	if (handled == OFFLOAD_EVT_BUDGET)
		queue_work(system_highpri_wq, &od->evt_work);
out:
	mutex_unlock(&od->evt_lock);
}

/* offload_evt_vq_done: the event queue's callback (interrupt context). */
void offload_evt_vq_done(struct virtqueue *vq)
{
	struct offload_dev *od = vq->vdev->priv;

	queue_work(system_highpri_wq, &od->evt_work);
}

/* offload_evt_shutdown: after reset and od->dead: free the buffers the device still holds. */
void offload_evt_shutdown(struct offload_dev *od)
{
	void *buf;

	mutex_lock(&od->evt_lock);
	while ((buf = virtqueue_detach_unused_buf(od->evt_vq)))
		kfree(buf);
	od->evt_posted = 0;
	mutex_unlock(&od->evt_lock);
}
