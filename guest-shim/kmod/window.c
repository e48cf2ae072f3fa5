// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * window.c: the coherent memory window of offload.ko (docs/offload-device.md, "Memory
 * window"). At probe: WINDOW_INFO, checks of the geometry, the window's WB kernel mapping
 * (memremap, which also reserves the write-back memtype for the user mappings) and its
 * lost-page bitmap; freed with the device state. The WINDOW_INFO, ALLOC and FREE ioctls;
 * the runs each open file allocated, given back when the file is released; and the reap
 * work that frees them (and ALLOCs whose caller left on a signal) in process context,
 * where nothing can interrupt the wait for the device.
 */
#include <linux/bitmap.h>
#include <linux/completion.h>
#include <linux/errno.h>
#include <linux/io.h>
#include <linux/ioport.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>
#include <asm/unaligned.h>

#include "offload.h"

/* How long probe waits for the WINDOW_INFO answer (the monitor answers at once). */
#define OFFLOAD_WINDOW_INFO_TIMEOUT (10 * HZ)

static void offload_reap_work(struct work_struct *work);

/* offload_window_init: the window's locks, lists and work (no window yet). */
void offload_window_init(struct offload_dev *od)
{
	struct offload_window *win = &od->win;

	init_rwsem(&win->lost_rwsem);
	mutex_init(&win->map_lock);
	mutex_init(&win->vma_lock);
	INIT_LIST_HEAD(&win->vmas);
	INIT_LIST_HEAD(&win->reap);
	INIT_WORK(&win->reap_work, offload_reap_work);
}

/* offload_window_check: the answer describes a window this driver can map. */
static bool offload_window_check(struct offload_dev *od, u64 base, u64 size, u64 soff,
				 u64 slen, u32 page_size)
{
	struct device *dev = &od->vdev->dev;

	if (page_size != OFFLOAD_WINDOW_PAGE || PAGE_SIZE != OFFLOAD_WINDOW_PAGE) {
		dev_warn(dev, "window page size %u, kernel page size %lu: window unusable\n",
			 page_size, PAGE_SIZE);
		return false;
	}
	if (!size || !PAGE_ALIGNED(base) || !PAGE_ALIGNED(size) || base + size < base ||
	    (base + size - 1) >> boot_cpu_data.x86_phys_bits) {
		dev_warn(dev, "window at %#llx, %llu bytes: not usable\n", base, size);
		return false;
	}
	if (!PAGE_ALIGNED(soff) || !PAGE_ALIGNED(slen) || soff > size || slen > size - soff) {
		dev_warn(dev, "slice %#llx +%llu outside the window (%llu bytes)\n", soff, slen,
			 size);
		return false;
	}
	if (region_intersects(base, size, IORESOURCE_SYSTEM_RAM, IORES_DESC_NONE) !=
	    REGION_DISJOINT) {
		dev_warn(dev, "window at %#llx overlaps system RAM: not usable\n", base);
		return false;
	}
	return true;
}

/* offload_window_query: ask the device (once, at probe) for the window's geometry. */
static int offload_window_query(struct offload_dev *od, struct offload_wire_window_info *w)
{
	struct offload_req *req;
	int err;

	req = offload_req_alloc(od, OFFLOAD_REQ_WINDOW_INFO, 0, sizeof(*w), GFP_KERNEL);
	if (!req)
		return -ENOMEM;
	/* Probe cannot be interrupted here: a bounded, uninterruptible wait. */
	err = offload_req_submit(od, req, OFFLOAD_NOWAIT);
	if (!err && !wait_for_completion_timeout(&req->done, OFFLOAD_WINDOW_INFO_TIMEOUT))
		err = -ETIMEDOUT;
	if (!err)
		err = req->status;
	if (!err && req->resp_len != sizeof(*w)) {
		dev_warn(&od->vdev->dev, "WINDOW_INFO answer with %u payload bytes\n",
			 req->resp_len);
		err = -EIO;
	}
	if (!err)
		memcpy(w, offload_req_in(req), sizeof(*w));
	offload_req_put(req); /* on a timeout the device keeps its reference */
	return err;
}

/*
 * offload_window_probe: learn the window and make it mappable. Without a window (an older
 * monitor answers -EINVAL, one without a window -ENODEV) or with one the driver cannot use,
 * the device works as before and the window ioctls and mmap fail with -EOPNOTSUPP.
 */
void offload_window_probe(struct offload_dev *od)
{
	struct offload_window *win = &od->win;
	struct device *dev = &od->vdev->dev;
	struct offload_wire_window_info w;
	u64 base, size, soff, slen;
	u32 node;
	int err;

	err = offload_window_query(od, &w);
	if (err) {
		dev_info(dev, "no memory window (WINDOW_INFO: %d)\n", err);
		return;
	}
	base = le64_to_cpu(w.base);
	size = le64_to_cpu(w.size);
	soff = le64_to_cpu(w.slice_offset);
	slen = le64_to_cpu(w.slice_len);
	node = le32_to_cpu(w.node_index);
	if (!offload_window_check(od, base, size, soff, slen, le32_to_cpu(w.page_size)))
		return;
	if (node != od->node_index)
		dev_warn(dev, "WINDOW_INFO says node %u, the configuration %u\n", node,
			 od->node_index);
	if (size >> PAGE_SHIFT > ULONG_MAX / 2) {
		dev_warn(dev, "window of %llu bytes too large\n", size);
		return;
	}
	win->pages = size >> PAGE_SHIFT;
	win->lost = kvcalloc(BITS_TO_LONGS(win->pages), sizeof(unsigned long), GFP_KERNEL);
	if (!win->lost)
		goto err_nomem;
	/* Not busy in the e820 map ("Reserved"): claiming it shows the window in /proc/iomem. */
	win->res = request_mem_region(base, size, "offload window");
	if (!win->res)
		dev_warn(dev, "window %#llx +%llu is claimed by someone else; mapping it anyway\n",
			 base, size);
	/*
	 * A kernel mapping for vm_ops->access, and with PAT the reservation of the write-back
	 * memtype for the range, which vmf_insert_pfn then gives every user mapping (an
	 * unreserved non-RAM range would come out UC-).
	 */
	win->kva = memremap(base, size, MEMREMAP_WB);
	if (!win->kva) {
		dev_warn(dev, "memremap of the window %#llx +%llu failed\n", base, size);
		goto err_release;
	}
	win->base = base;
	win->size = size;
	win->slice_offset = soff;
	win->slice_len = slen;
	win->node_index = node;
	win->present = true;
	dev_info(dev, "window at %#llx, %llu MiB, slice %#llx +%llu MiB\n", base, size >> 20,
		 soff, slen >> 20);
	return;

err_release:
	if (win->res)
		release_mem_region(base, size);
	win->res = NULL;
	kvfree(win->lost);
	win->lost = NULL;
	return;
err_nomem:
	dev_warn(dev, "no memory for the window's bitmap (%lu pages)\n", win->pages);
}

/*
 * offload_window_free: with the device state (no file, mapping or work left). Anything
 * still on the reap list (nothing, unless remove raced) is dropped: the device is gone.
 */
void offload_window_free(struct offload_dev *od)
{
	struct offload_window *win = &od->win;
	struct offload_alloc_rec *rec, *tmp;

	list_for_each_entry_safe(rec, tmp, &win->reap, link) {
		list_del(&rec->link);
		if (rec->pending)
			offload_req_put(rec->pending);
		kfree(rec);
	}
	if (win->kva)
		memunmap(win->kva);
	if (win->res)
		release_mem_region(win->base, win->size);
	kvfree(win->lost);
	win->present = false;
}

/*
 * offload_reap_queue: hand @recs (a list of offload_alloc_rec) to the reap work. Once the
 * device is dead nothing can be freed any more: the records are dropped here.
 */
static void offload_reap_queue(struct offload_dev *od, struct list_head *recs)
{
	struct offload_alloc_rec *rec, *tmp;

	spin_lock_irq(&od->lock);
	if (!od->dead) {
		list_splice_tail_init(recs, &od->win.reap);
		queue_work(system_unbound_wq, &od->win.reap_work);
	}
	spin_unlock_irq(&od->lock);
	list_for_each_entry_safe(rec, tmp, recs, link) {
		list_del(&rec->link);
		if (rec->pending)
			offload_req_put(rec->pending);
		kfree(rec);
	}
}

static void offload_reap_one(struct offload_dev *od, struct offload_alloc_rec *rec)
{
	LIST_HEAD(one);

	list_add(&rec->link, &one);
	offload_reap_queue(od, &one);
}

/*
 * offload_window_flush: remove, after the device is dead and its requests failed: wait for
 * the reap work (nothing queues it any more).
 */
void offload_window_flush(struct offload_dev *od)
{
	flush_work(&od->win.reap_work);
}

/* offload_alloc_answer: the ALLOC answer in @req, checked: the run lies in our slice. */
static int offload_alloc_answer(struct offload_dev *od, struct offload_req *req, u64 pages,
				u64 *offset)
{
	struct offload_window *win = &od->win;
	u64 off, send = win->slice_offset + win->slice_len;

	if (req->status)
		return req->status;
	if (req->resp_len != sizeof(__le64)) {
		dev_warn_ratelimited(&od->vdev->dev, "ALLOC answer with %u payload bytes\n",
				     req->resp_len);
		return -EIO;
	}
	off = get_unaligned_le64(offload_req_in(req));
	if (!PAGE_ALIGNED(off) || off < win->slice_offset || off >= send ||
	    pages > (send - off) >> PAGE_SHIFT) {
		dev_warn_ratelimited(&od->vdev->dev, "ALLOC of %llu pages answered with %#llx\n",
				     pages, off);
		return -EIO;
	}
	*offset = off;
	return 0;
}

/* offload_free_run: FREE (offset, pages) and wait. From the reap work (no signals). */
static void offload_free_run(struct offload_dev *od, u64 offset, u64 pages)
{
	struct offload_req *req;
	int err;

	req = offload_req_alloc(od, OFFLOAD_REQ_FREE, 2 * sizeof(__le64), 0, GFP_KERNEL);
	if (!req) {
		dev_warn_ratelimited(&od->vdev->dev,
				     "no memory to free window run %#llx +%llu pages\n", offset,
				     pages);
		return;
	}
	put_unaligned_le64(offset, offload_req_out(req));
	put_unaligned_le64(pages, offload_req_out(req) + sizeof(__le64));
	err = offload_req_call(od, req);
	offload_req_put(req);
	if (err && err != -ENODEV)
		dev_warn_ratelimited(&od->vdev->dev, "FREE of %#llx +%llu pages refused: %d\n",
				     offset, pages, err);
}

/*
 * offload_reap_work: free, one by one, the runs on win.reap; for an ALLOC whose caller left,
 * first wait for its answer (remove completes it with -ENODEV at the latest). Runs on an
 * unbound workqueue; a kworker has no signals, so the waits are not interrupted.
 */
static void offload_reap_work(struct work_struct *work)
{
	struct offload_dev *od = container_of(work, struct offload_dev, win.reap_work);
	struct offload_alloc_rec *rec;
	struct offload_req *req;
	int err;

	for (;;) {
		spin_lock_irq(&od->lock);
		rec = list_first_entry_or_null(&od->win.reap, struct offload_alloc_rec, link);
		if (rec)
			list_del(&rec->link);
		spin_unlock_irq(&od->lock);
		if (!rec)
			break;
		req = rec->pending;
		rec->pending = NULL;
		err = 0;
		if (req) {
			wait_for_completion(&req->done);
			err = offload_alloc_answer(od, req, rec->pages, &rec->offset);
			offload_req_put(req);
		}
		if (!err)
			offload_free_run(od, rec->offset, rec->pages);
		kfree(rec);
	}
}

long offload_ioc_window_info(struct offload_dev *od, void __user *uarg)
{
	const struct offload_window *win = &od->win;
	struct offload_window_info info = {};

	if (!win->present)
		return -EOPNOTSUPP;
	info.base = win->base;
	info.size = win->size;
	info.slice_offset = win->slice_offset;
	info.slice_len = win->slice_len;
	info.page_size = OFFLOAD_WINDOW_PAGE;
	info.node_index = win->node_index;
	return copy_to_user(uarg, &info, sizeof(info)) ? -EFAULT : 0;
}

/*
 * offload_ioc_alloc: ALLOC a run for this file. If a signal ends the wait after the request
 * went out, the request is handed to the reap work, which frees the run it brings back.
 */
long offload_ioc_alloc(struct offload_file *of, void __user *uarg)
{
	struct offload_dev *od = of->od;
	struct offload_alloc_rec *rec;
	struct offload_alloc a;
	struct offload_req *req;
	int err;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (!od->win.present)
		return -EOPNOTSUPP;
	if (!a.pages || a.pages > od->win.slice_len >> PAGE_SHIFT)
		return -EINVAL;
	rec = kzalloc(sizeof(*rec), GFP_KERNEL);
	if (!rec)
		return -ENOMEM;
	req = offload_req_alloc(od, OFFLOAD_REQ_ALLOC, sizeof(__le64), sizeof(__le64),
				GFP_KERNEL);
	if (!req) {
		kfree(rec);
		return -ENOMEM;
	}
	put_unaligned_le64(a.pages, offload_req_out(req));
	rec->pages = a.pages;
	err = offload_req_submit(od, req, OFFLOAD_WAIT_INTR);
	if (err)
		goto out;
	if (wait_for_completion_interruptible(&req->done)) {
		rec->pending = req; /* our reference goes with it */
		offload_reap_one(od, rec);
		return -EINTR;
	}
	err = offload_alloc_answer(od, req, a.pages, &rec->offset);
	if (err)
		goto out;
	offload_req_put(req);
	a.offset = rec->offset;
	mutex_lock(&of->lock);
	list_add_tail(&rec->link, &of->allocs);
	mutex_unlock(&of->lock);
	if (copy_to_user(uarg, &a, sizeof(a))) {
		/* Nobody learns the offset: give the run back. */
		mutex_lock(&of->lock);
		list_del(&rec->link);
		mutex_unlock(&of->lock);
		offload_reap_one(od, rec);
		return -EFAULT;
	}
	return 0;

out:
	offload_req_put(req);
	kfree(rec);
	return err;
}

/*
 * offload_carve: take [off, end) out of this file's runs (under of->lock). The range must
 * lie inside one run; a run split in two uses @spare. Returns false if no run holds it.
 */
static bool offload_carve(struct offload_file *of, u64 off, u64 end,
			  struct offload_alloc_rec **spare)
{
	struct offload_alloc_rec *r;
	u64 rend;

	lockdep_assert_held(&of->lock);
	list_for_each_entry(r, &of->allocs, link) {
		rend = r->offset + (r->pages << PAGE_SHIFT);
		if (off < r->offset || end > rend)
			continue;
		if (off == r->offset && end == rend) {
			list_del(&r->link);
			kfree(r);
		} else if (off == r->offset) {
			r->pages -= (end - off) >> PAGE_SHIFT;
			r->offset = end;
		} else if (end == rend) {
			r->pages -= (end - off) >> PAGE_SHIFT;
		} else {
			(*spare)->offset = end;
			(*spare)->pages = (rend - end) >> PAGE_SHIFT;
			list_add(&(*spare)->link, &r->link);
			*spare = NULL;
			r->pages = (off - r->offset) >> PAGE_SHIFT;
		}
		return true;
	}
	return false;
}

/*
 * offload_ioc_free: FREE pages this file allocated (a whole run or part of one). The pages
 * leave the file's list before the request goes out; they come back only if it never
 * reached the device (so a signal never leads to freeing them twice).
 */
long offload_ioc_free(struct offload_file *of, void __user *uarg)
{
	struct offload_alloc_rec *spare = NULL, *back = NULL;
	struct offload_dev *od = of->od;
	struct offload_req *req = NULL;
	struct offload_free f;
	u64 end;
	int err;

	if (copy_from_user(&f, uarg, sizeof(f)))
		return -EFAULT;
	if (!od->win.present)
		return -EOPNOTSUPP;
	if (!f.pages || !PAGE_ALIGNED(f.offset) || f.offset >= od->win.size ||
	    f.pages > (od->win.size - f.offset) >> PAGE_SHIFT)
		return -EINVAL;
	end = f.offset + (f.pages << PAGE_SHIFT);
	err = -ENOMEM;
	spare = kzalloc(sizeof(*spare), GFP_KERNEL);
	back = kzalloc(sizeof(*back), GFP_KERNEL);
	req = offload_req_alloc(od, OFFLOAD_REQ_FREE, 2 * sizeof(__le64), 0, GFP_KERNEL);
	if (!spare || !back || !req)
		goto out;
	put_unaligned_le64(f.offset, offload_req_out(req));
	put_unaligned_le64(f.pages, offload_req_out(req) + sizeof(__le64));

	mutex_lock(&of->lock);
	if (!offload_carve(of, f.offset, end, &spare))
		err = -EINVAL;
	else
		err = 0;
	mutex_unlock(&of->lock);
	if (err)
		goto out;

	err = offload_req_submit(od, req, OFFLOAD_WAIT_INTR);
	if (err) {
		/* Never sent: the pages are still ours. */
		back->offset = f.offset;
		back->pages = f.pages;
		mutex_lock(&of->lock);
		list_add_tail(&back->link, &of->allocs);
		mutex_unlock(&of->lock);
		back = NULL;
		goto out;
	}
	if (wait_for_completion_interruptible(&req->done)) {
		err = -EINTR; /* the device frees them all the same */
		goto out;
	}
	err = req->status;
	if (err)
		dev_warn_ratelimited(&od->vdev->dev, "FREE of %#llx +%llu pages refused: %d\n",
				     f.offset, f.pages, err);
out:
	if (req)
		offload_req_put(req);
	kfree(spare);
	kfree(back);
	return err;
}

/* offload_file_release_allocs: a file is released: everything it still holds is freed. */
void offload_file_release_allocs(struct offload_file *of)
{
	LIST_HEAD(recs);

	mutex_lock(&of->lock);
	list_splice_init(&of->allocs, &recs);
	mutex_unlock(&of->lock);
	if (!list_empty(&recs))
		offload_reap_queue(of->od, &recs);
}
