// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * guestmsg.c: guest-to-guest messages between offload drivers (docs/offload-threads.md,
 * "Interfaces for migration and shadows (v1)"): sending one (request GUEST_MSG and its
 * answer), answering one (request GUEST_MSG_RET) and taking one in (event GUEST_MSG_IN),
 * which is checked here and handed by kind to spawn.c (SPAWN), shadow.c (KILL, GONE) or
 * push.c (PUSH). Every
 * message gets exactly one answer: bad input from the device (short payload, reserved bits,
 * unknown kind) is logged, rate-limited, and refused with -EINVAL or -EOPNOTSUPP, so the
 * peer never waits for its 10 s timeout because of us.
 */
#include <linux/errno.h>
#include <linux/string.h>
#include <asm/unaligned.h>

#include "offload.h"

/*
 * offload_guest_msg: send message @kind with @body to @node and wait for the peer driver's
 * answer (its reply body, none for the kinds of v1, is not asked for). The wait is
 * killable only: the peer may already act on the message (a SPAWN starts a process), so an
 * ordinary signal must not turn that into an error; the monitor bounds the wait (10 s).
 * Returns 0, the monitor's error (-EHOSTUNREACH, -ENOTCONN, -ETIMEDOUT, -ECONNRESET,
 * -EBUSY, -EMSGSIZE), the peer driver's own status, -ENOMEM, -ENODEV, -EIO or -EINTR.
 */
int offload_guest_msg(struct offload_dev *od, u32 node, u32 kind, const void *body, u32 blen)
{
	struct offload_wire_msg *w;
	struct offload_req *req;
	int err;

	if (blen > OFFLOAD_MSG_BODY_MAX)
		return -EMSGSIZE;
	req = offload_req_alloc(od, OFFLOAD_REQ_GUEST_MSG, sizeof(*w) + blen, 0, GFP_KERNEL);
	if (!req)
		return -ENOMEM;
	w = (struct offload_wire_msg *)offload_req_out(req);
	w->node = cpu_to_le32(node);
	w->kind = cpu_to_le32(kind);
	memcpy(w + 1, body, blen);
	err = offload_req_submit(od, req, OFFLOAD_WAIT_KILL);
	if (!err)
		err = wait_for_completion_killable(&req->done) ? -EINTR : req->status;
	offload_req_put(req);
	return err;
}

/*
 * offload_msg_reply: answer message @token with @status and no body, without waiting (the
 * backlog keeps the answer when the queue is full; it is never dropped there).
 */
void offload_msg_reply(struct offload_dev *od, u64 token, int status)
{
	struct offload_wire_msg_ret *w;
	struct offload_req *req;

	req = offload_req_alloc(od, OFFLOAD_REQ_GUEST_MSG_RET, sizeof(*w), 0, GFP_KERNEL);
	if (!req) {
		dev_warn_ratelimited(&od->vdev->dev,
				     "no memory to answer message %llu (%d): the peer times out\n",
				     token, status);
		return;
	}
	w = (struct offload_wire_msg_ret *)offload_req_out(req);
	w->token = cpu_to_le64(token);
	w->status = cpu_to_le32((u32)status);
	w->reserved = 0;
	offload_req_send_async(od, req);
}

/*
 * offload_evt_guest_msg_in: a GUEST_MSG_IN event (event work): check the payload header,
 * then hand the body to the kind's handler, which answers it.
 */
void offload_evt_guest_msg_in(struct offload_dev *od, const struct offload_wire_event *ev,
			      u32 plen)
{
	const struct offload_wire_msg_in *m = (const void *)(ev + 1);
	const u32 src = le32_to_cpu(ev->src_node);
	const u64 token = le64_to_cpu(ev->token);
	const u8 *body = (const u8 *)(m + 1);
	u32 kind, blen;

	if (plen < sizeof(*m) || get_unaligned_le32(&m->reserved)) {
		dev_warn_ratelimited(&od->vdev->dev,
				     "GUEST_MSG_IN %llu from node %u: %u payload bytes, bad header: refused\n",
				     token, src, plen);
		offload_msg_reply(od, token, -EINVAL);
		return;
	}
	kind = get_unaligned_le32(&m->kind);
	blen = plen - sizeof(*m);
	switch (kind) {
	case OFFLOAD_MSG_SPAWN:
		offload_msg_spawn_in(od, src, token, body, blen);
		break;
	case OFFLOAD_MSG_KILL:
		offload_msg_kill_in(od, src, token, body, blen);
		break;
	case OFFLOAD_MSG_GONE:
		offload_msg_gone_in(od, src, token, body, blen);
		break;
	case OFFLOAD_MSG_PUSH:
		offload_msg_push_in(od, src, token, body, blen);
		break;
	default:
		dev_warn_ratelimited(&od->vdev->dev,
				     "GUEST_MSG_IN %llu from node %u: unknown kind %u: refused\n",
				     token, src, kind);
		offload_msg_reply(od, token, -EOPNOTSUPP);
		break;
	}
}
