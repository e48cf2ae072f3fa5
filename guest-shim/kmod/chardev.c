// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * chardev.c: /dev/offload, the misc device offload.ko registers while an offload device is
 * bound, and its ioctls (offload_abi.h): NODE_INFO, PEERS and PING each build one request,
 * sleep until the device answers (offload_req_call) and copy the answer to user space;
 * WINDOW_INFO, ALLOC and FREE are window.c's, mmap is winmap.c's; SYSCALL is syscall.c's,
 * EXEC_WAIT and EXEC_DONE are exec.c's; SPAWN is spawn.c's, SHADOW_ATTACH and PS are
 * shadow.c's. This file counts, per open file, the calls forwarded and served (PS shows
 * them). Each open file has its own struct offload_file (the window runs it allocated, its
 * executors and the calls handed to them, its marks as a home or a shadow) and holds a
 * reference on the device state, so it outlives a removed device; its ioctls then fail
 * with -ENODEV.
 */
#include <linux/errno.h>
#include <linux/fs.h>
#include <linux/minmax.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <asm/unaligned.h>

#include "offload.h"

/* offload_bad_answer: a successful answer whose payload breaks the contract. */
static int offload_bad_answer(struct offload_dev *od, const char *what, u32 len)
{
	dev_warn_ratelimited(&od->vdev->dev, "%s answer with %u payload bytes\n", what, len);
	return -EIO;
}

static long offload_ioc_node_info(struct offload_dev *od, void __user *uarg)
{
	const struct offload_wire_node_info *w;
	struct offload_node_info info = {};
	struct offload_req *req;
	int err;

	req = offload_req_alloc(od, OFFLOAD_REQ_NODE_INFO, 0, sizeof(*w), GFP_KERNEL);
	if (!req)
		return -ENOMEM;
	err = offload_req_call(od, req);
	if (!err && req->resp_len != sizeof(*w))
		err = offload_bad_answer(od, "NODE_INFO", req->resp_len);
	if (!err) {
		w = (const struct offload_wire_node_info *)offload_req_in(req);
		info.index = le32_to_cpu(w->index);
		info.num_nodes = le32_to_cpu(w->num_nodes);
		memcpy(info.name, w->name, sizeof(info.name));
	}
	offload_req_put(req);
	if (!err && copy_to_user(uarg, &info, sizeof(info)))
		err = -EFAULT;
	return err;
}

/* offload_fill_peers: decode the PEERS answer into @p (at most OFFLOAD_MAX_PEERS). */
static void offload_fill_peers(struct offload_dev *od, struct offload_peers *p,
			       const struct offload_wire_peer *w, u32 n)
{
	u32 i;

	p->count = min_t(u32, n, OFFLOAD_MAX_PEERS);
	for (i = 0; i < n; i++) {
		u32 index = le32_to_cpu(w[i].index), state = le32_to_cpu(w[i].state);

		offload_set_node_state(od, index, state);
		if (i >= OFFLOAD_MAX_PEERS)
			continue;
		p->peers[i].index = index;
		p->peers[i].state = state;
		memcpy(p->peers[i].name, w[i].name, sizeof(p->peers[i].name));
	}
}

static long offload_ioc_peers(struct offload_dev *od, void __user *uarg)
{
	struct offload_peers *p;
	struct offload_req *req;
	int err;

	req = offload_req_alloc(od, OFFLOAD_REQ_PEERS, 0, OFFLOAD_MAX_PAYLOAD, GFP_KERNEL);
	if (!req)
		return -ENOMEM;
	p = kzalloc(sizeof(*p), GFP_KERNEL);
	err = p ? offload_req_call(od, req) : -ENOMEM;
	if (!err && req->resp_len % sizeof(struct offload_wire_peer))
		err = offload_bad_answer(od, "PEERS", req->resp_len);
	if (!err)
		offload_fill_peers(od, p, (const struct offload_wire_peer *)offload_req_in(req),
				   req->resp_len / sizeof(struct offload_wire_peer));
	offload_req_put(req);
	if (!err && copy_to_user(uarg, p, sizeof(*p)))
		err = -EFAULT;
	kfree(p);
	return err;
}

static long offload_ioc_ping(struct offload_dev *od, void __user *uarg)
{
	struct offload_ping *p;
	struct offload_req *req;
	int err;

	p = memdup_user(uarg, sizeof(*p));
	if (IS_ERR(p))
		return PTR_ERR(p);
	err = -EINVAL;
	if (p->len > OFFLOAD_PING_MAX)
		goto out;
	err = -ENOMEM;
	req = offload_req_alloc(od, OFFLOAD_REQ_PING, sizeof(__le32) + p->len, p->len,
				GFP_KERNEL);
	if (!req)
		goto out;
	put_unaligned_le32(p->node, offload_req_out(req));
	memcpy(offload_req_out(req) + sizeof(__le32), p->data, p->len);
	err = offload_req_call(od, req);
	if (!err) {
		/* resp_len <= in_cap == p->len <= OFFLOAD_PING_MAX: checked on completion */
		p->len = req->resp_len;
		memcpy(p->data, offload_req_in(req), req->resp_len);
		p->rtt_ns = req->done_ns - req->sent_ns;
	}
	offload_req_put(req);
	if (!err && copy_to_user(uarg, p, sizeof(*p)))
		err = -EFAULT;
out:
	kfree(p);
	return err;
}

/* offload_count: @err (an ioctl's result) unchanged; on success @counter goes up. */
static long offload_count(long err, atomic64_t *counter)
{
	if (!err)
		atomic64_inc(counter);
	return err;
}

static long offload_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct offload_file *of = file->private_data;
	struct offload_dev *od = of->od;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case OFFLOAD_IOC_NODE_INFO:
		return offload_ioc_node_info(od, uarg);
	case OFFLOAD_IOC_PEERS:
		return offload_ioc_peers(od, uarg);
	case OFFLOAD_IOC_PING:
		return offload_ioc_ping(od, uarg);
	case OFFLOAD_IOC_WINDOW_INFO:
		return offload_ioc_window_info(od, uarg);
	case OFFLOAD_IOC_ALLOC:
		return offload_ioc_alloc(of, uarg);
	case OFFLOAD_IOC_FREE:
		return offload_ioc_free(of, uarg);
	case OFFLOAD_IOC_SYSCALL:
		return offload_count(offload_ioc_syscall(od, uarg), &of->forwarded);
	case OFFLOAD_IOC_EXEC_WAIT:
		return offload_ioc_exec_wait(of, file, uarg);
	case OFFLOAD_IOC_EXEC_DONE:
		return offload_count(offload_ioc_exec_done(of, uarg), &of->served);
	case OFFLOAD_IOC_SPAWN:
		return offload_ioc_spawn(of, uarg);
	case OFFLOAD_IOC_SHADOW_ATTACH:
		return offload_ioc_shadow_attach(of, uarg);
	case OFFLOAD_IOC_PS:
		return offload_ioc_ps(od, uarg);
	case OFFLOAD_IOC_THREADS:
		return offload_ioc_threads(od, uarg);
	case OFFLOAD_IOC_PUSH:
		return offload_ioc_push(of, uarg);
	case OFFLOAD_IOC_PUSH_WAIT:
		return offload_ioc_push_wait(of, uarg);
	case OFFLOAD_IOC_PUSH_DONE:
		return offload_ioc_push_done(of, uarg);
	case OFFLOAD_IOC_SIGNAL:
		return offload_ioc_signal(uarg);
	default:
		return -ENOTTY;
	}
}

/*
 * misc_open() set private_data to our miscdevice and holds misc_mtx, which
 * misc_deregister() also takes: the device state cannot be freed under us here.
 */
static int offload_open(struct inode *inode, struct file *file)
{
	struct offload_dev *od = container_of(file->private_data, struct offload_dev, misc);
	struct offload_file *of;
	int err;

	of = kzalloc(sizeof(*of), GFP_KERNEL);
	if (!of)
		return -ENOMEM;
	of->od = od;
	mutex_init(&of->lock);
	INIT_LIST_HEAD(&of->allocs);
	offload_exec_file_init(of);
	INIT_LIST_HEAD(&of->proc.link);
	offload_push_file_init(of);
	err = offload_winmap_open(od, file);
	if (err) {
		kfree(of);
		return err;
	}
	kref_get(&od->kref);
	file->private_data = of;
	return nonseekable_open(inode, file);
}

/*
 * The file's vmas are gone (they held it): its marks go (a home's shadows get KILLs), its
 * executors' calls are refused, its runs freed, then its references dropped.
 */
static int offload_release(struct inode *inode, struct file *file)
{
	struct offload_file *of = file->private_data;
	struct offload_dev *od = of->od;

	offload_proc_release(of);
	offload_push_release(of);
	offload_exec_release(of);
	offload_file_release_allocs(of);
	offload_winmap_release(od);
	mutex_destroy(&of->lock);
	kfree(of);
	offload_dev_put(od);
	return 0;
}

static const struct file_operations offload_fops = {
	.owner = THIS_MODULE,
	.open = offload_open,
	.release = offload_release,
	.unlocked_ioctl = offload_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = offload_winmap_mmap,
	.llseek = no_llseek,
};

int offload_chardev_register(struct offload_dev *od)
{
	int err;

	od->misc.minor = MISC_DYNAMIC_MINOR;
	od->misc.name = "offload";
	od->misc.fops = &offload_fops;
	od->misc.parent = &od->vdev->dev;
	od->misc.mode = 0600;
	err = misc_register(&od->misc);
	if (!err)
		od->misc_registered = true;
	return err;
}

void offload_chardev_unregister(struct offload_dev *od)
{
	if (od->misc_registered)
		misc_deregister(&od->misc);
	od->misc_registered = false;
}
