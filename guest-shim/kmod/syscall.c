// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * syscall.c: the calling side of a forwarded system call (docs/offload-threads.md,
 * section 4): OFFLOAD_IOC_SYSCALL posts a SYSCALL request carrying the call record (home
 * node, home tid, nr, six arguments) and sleeps until the home node's executor has run the
 * call and the device brings its return value back.
 *
 * The wait is killable only. A forwarded call is not abandoned half-way: it may already
 * run at home (a write, a mkdir), so returning -EINTR for an ordinary signal would tell the
 * caller it did not happen when it may have. Other signals stay pending and are taken when
 * the ioctl returns. A fatal signal ends the wait (the process is dying and will never see
 * the answer); the request's buffers then stay owned by the driver until the device gives
 * them back (request.c frees them), as for every interrupted request.
 */
#include <linux/errno.h>
#include <linux/uaccess.h>
#include <asm/unaligned.h>

#include "offload.h"

/* offload_call_record: the wire record of @sc, in @w. */
static void offload_call_record(const struct offload_syscall *sc, struct offload_wire_call *w)
{
	unsigned int i;

	w->node = cpu_to_le32(sc->node);
	w->tid = cpu_to_le32(sc->tid);
	w->nr = cpu_to_le64(sc->nr);
	for (i = 0; i < OFFLOAD_SYSCALL_ARGS; i++)
		w->args[i] = cpu_to_le64(sc->args[i]);
}

/*
 * offload_syscall_call: submit @req and wait, killable only (see above). Returns the
 * device's status, -EIO, -ENODEV, or -EINTR when a fatal signal ended the wait.
 */
static int offload_syscall_call(struct offload_dev *od, struct offload_req *req)
{
	int err;

	err = offload_req_submit(od, req, OFFLOAD_WAIT_KILL);
	if (err)
		return err;
	if (wait_for_completion_killable(&req->done))
		return -EINTR;
	return req->status;
}

/*
 * offload_ioc_syscall: OFFLOAD_IOC_SYSCALL. The ioctl's error is the device's status
 * (-EHOSTUNREACH, -ENOTCONN, -ECONNRESET, -EBUSY, -ESRCH: the call did not run, or its
 * fate is unknown after a peer loss); on success `ret` holds the call's own result.
 */
long offload_ioc_syscall(struct offload_dev *od, void __user *uarg)
{
	struct offload_syscall sc;
	struct offload_req *req;
	int err;

	if (copy_from_user(&sc, uarg, sizeof(sc)))
		return -EFAULT;
	req = offload_req_alloc(od, OFFLOAD_REQ_SYSCALL, sizeof(struct offload_wire_call),
				sizeof(__le64), GFP_KERNEL);
	if (!req)
		return -ENOMEM;
	offload_call_record(&sc, (struct offload_wire_call *)offload_req_out(req));
	err = offload_syscall_call(od, req);
	if (!err && req->resp_len != sizeof(__le64)) {
		dev_warn_ratelimited(&od->vdev->dev, "SYSCALL answer with %u payload bytes\n",
				     req->resp_len);
		err = -EIO;
	}
	if (!err)
		sc.ret = (s64)get_unaligned_le64(offload_req_in(req));
	offload_req_put(req);
	if (!err && copy_to_user(uarg, &sc, sizeof(sc)))
		err = -EFAULT;
	return err;
}
