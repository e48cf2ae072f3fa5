// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * winmap.c: the memory window in processes. mmap of /dev/offload (MAP_SHARED only; the mmap
 * offset is a window offset), mapped lazily by a fault handler that inserts the window's
 * pfns (VM_PFNMAP, cached write-back), vm_ops->access for ptrace and /proc/PID/mem, the one
 * address_space every open file shares (an anonymous inode on a private pseudo filesystem,
 * as DRM does), the list of the window's vmas, and PAGES_LOST: mark the pages lost, zap
 * every mapping of them, refuse later faults (SIGBUS) and send SIGBUS to every process that
 * maps any of them.
 */
#include <linux/bitops.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/mount.h>
#include <linux/pseudo_fs.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <asm/unaligned.h>

#include "offload.h"

#define OFFLOAD_FS_MAGIC 0x4f464c57 /* "OFLW" */

/* The pseudo filesystem of the window's inode; mounted while some /dev/offload is open. */
static struct vfsmount *offload_fs_mnt;
static int offload_fs_cnt;

static int offload_fs_init_fs_context(struct fs_context *fc)
{
	return init_pseudo(fc, OFFLOAD_FS_MAGIC) ? 0 : -ENOMEM;
}

/*
 * Its superblock pins the module (owner), but it exists only while a file of ours is open,
 * which pins the module anyway; the last release drops it synchronously (a kernel mount).
 */
static struct file_system_type offload_fs_type = {
	.name = "offload_window",
	.owner = THIS_MODULE,
	.init_fs_context = offload_fs_init_fs_context,
	.kill_sb = kill_anon_super,
};

/* One vma of the window (vm_private_data), on win.vmas. */
struct offload_vma {
	struct list_head link;
	struct vm_area_struct *vma;
};

static struct offload_dev *offload_vma_dev(struct vm_area_struct *vma)
{
	const struct offload_file *of = vma->vm_file->private_data;

	return of->od;
}

static void offload_vma_track(struct offload_window *win, struct vm_area_struct *vma,
			      struct offload_vma *ov)
{
	ov->vma = vma;
	vma->vm_private_data = ov;
	mutex_lock(&win->vma_lock);
	list_add_tail(&ov->link, &win->vmas);
	mutex_unlock(&win->vma_lock);
}

/*
 * offload_winmap_open: the file's f_mapping becomes the window's address_space (created by
 * the first open). Nothing to do without a window.
 */
int offload_winmap_open(struct offload_dev *od, struct file *file)
{
	struct offload_window *win = &od->win;
	struct inode *inode;
	int err = 0;

	if (!win->present)
		return 0;
	mutex_lock(&win->map_lock);
	if (!win->nopen) {
		err = simple_pin_fs(&offload_fs_type, &offload_fs_mnt, &offload_fs_cnt);
		if (err)
			goto out;
		inode = alloc_anon_inode(offload_fs_mnt->mnt_sb);
		if (IS_ERR(inode)) {
			simple_release_fs(&offload_fs_mnt, &offload_fs_cnt);
			err = PTR_ERR(inode);
			goto out;
		}
		win->inode = inode;
	}
	win->nopen++;
	file->f_mapping = win->inode->i_mapping;
out:
	mutex_unlock(&win->map_lock);
	return err;
}

/* offload_winmap_release: a file is released (its vmas are gone: they held it). */
void offload_winmap_release(struct offload_dev *od)
{
	struct offload_window *win = &od->win;

	if (!win->present)
		return;
	mutex_lock(&win->map_lock);
	if (!--win->nopen) {
		iput(win->inode);
		win->inode = NULL;
		simple_release_fs(&offload_fs_mnt, &offload_fs_cnt);
	}
	mutex_unlock(&win->map_lock);
}

/* vm_ops->open: a copy of a window vma (fork, split, mremap) joins the list. */
static void offload_vm_open(struct vm_area_struct *vma)
{
	/* open cannot fail: a 32-byte allocation, allowed to retry. */
	struct offload_vma *ov = kzalloc(sizeof(*ov), GFP_KERNEL | __GFP_NOFAIL);

	offload_vma_track(&offload_vma_dev(vma)->win, vma, ov);
}

static void offload_vm_close(struct vm_area_struct *vma)
{
	struct offload_window *win = &offload_vma_dev(vma)->win;
	struct offload_vma *ov = vma->vm_private_data;

	mutex_lock(&win->vma_lock);
	list_del(&ov->link);
	mutex_unlock(&win->vma_lock);
	kfree(ov);
}

/*
 * vm_ops->fault: map the one page (vmf->pgoff is its window page), write-back: the vma's
 * page protection has no cache bits, and with PAT the memtype memremap reserved is WB.
 */
static vm_fault_t offload_vm_fault(struct vm_fault *vmf)
{
	struct offload_window *win = &offload_vma_dev(vmf->vma)->win;
	struct offload_file *of = vmf->vma->vm_file->private_data;
	vm_fault_t ret;

	atomic64_inc(&of->faults); /* OFFLOAD_IOC_PS shows it */
	if (vmf->pgoff >= win->pages)
		return VM_FAULT_SIGBUS;
	down_read(&win->lost_rwsem);
	if (test_bit(vmf->pgoff, win->lost))
		ret = VM_FAULT_SIGBUS;
	else
		ret = vmf_insert_pfn(vmf->vma, vmf->address,
				     PHYS_PFN(win->base) + vmf->pgoff);
	up_read(&win->lost_rwsem);
	return ret;
}

/*
 * vm_ops->access: ptrace and /proc/PID/mem (get_user_pages cannot reach a VM_PFNMAP vma).
 * Copies through the driver's kernel mapping, whether or not the page is mapped in the
 * process; one page at a time (the caller loops). Lost pages cannot be read or written.
 */
static int offload_vm_access(struct vm_area_struct *vma, unsigned long addr, void *buf,
			     int len, int write)
{
	struct offload_window *win = &offload_vma_dev(vma)->win;
	u64 off;

	if (addr < vma->vm_start || addr >= vma->vm_end || len <= 0)
		return -EINVAL;
	if (write && !(vma->vm_flags & VM_WRITE))
		return -EACCES;
	off = ((u64)vma->vm_pgoff << PAGE_SHIFT) + (addr - vma->vm_start);
	if (off >= win->size)
		return -EINVAL;
	if (test_bit(off >> PAGE_SHIFT, win->lost))
		return -EIO;
	len = min_t(int, len, PAGE_SIZE - offset_in_page(off));
	if (write)
		memcpy(win->kva + off, buf, len);
	else
		memcpy(buf, win->kva + off, len);
	return len;
}

static const struct vm_operations_struct offload_vm_ops = {
	.open = offload_vm_open,
	.close = offload_vm_close,
	.fault = offload_vm_fault,
	.access = offload_vm_access,
};

/*
 * offload_winmap_mmap: MAP_SHARED (VM_MAYSHARE: also a read-only shared mapping of a file
 * opened read-only) of window pages [vm_pgoff, vm_pgoff + pages), any page of the window.
 * Nothing is mapped until a fault.
 */
int offload_winmap_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct offload_file *of = file->private_data;
	struct offload_window *win = &of->od->win;
	struct offload_vma *ov;

	if (!win->present)
		return -EOPNOTSUPP;
	if (!(vma->vm_flags & VM_MAYSHARE))
		return -EINVAL;
	if (vma->vm_pgoff >= win->pages || vma_pages(vma) > win->pages - vma->vm_pgoff)
		return -EINVAL;
	ov = kzalloc(sizeof(*ov), GFP_KERNEL);
	if (!ov)
		return -ENOMEM;
	vma->vm_flags |= VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTDUMP;
	vma->vm_ops = &offload_vm_ops;
	offload_vma_track(win, vma, ov);
	return 0;
}

/* ---- PAGES_LOST ---- */

/* A process to kill: one mm that maps a lost page (off) at addr. */
struct offload_victim {
	struct mm_struct *mm;
	unsigned long addr;
	u64 off;
};

/* Whether process @p (a thread group) runs in @mm (as the OOM killer tells). Under RCU. */
static bool offload_process_uses_mm(struct task_struct *p, struct mm_struct *mm)
{
	struct task_struct *t;

	if (p->flags & PF_KTHREAD)
		return false;
	for_each_thread(p, t) {
		struct mm_struct *t_mm = READ_ONCE(t->mm);

		if (t_mm)
			return t_mm == mm;
	}
	return false;
}

/* offload_kill_mm: SIGBUS (BUS_MCEERR_AO, the address of the lost page) to each process of @v. */
static void offload_kill_mm(struct offload_dev *od, const struct offload_victim *v)
{
	struct task_struct *p;

	rcu_read_lock();
	for_each_process(p) {
		if (!offload_process_uses_mm(p, v->mm))
			continue;
		send_sig_mceerr(BUS_MCEERR_AO, (void __user *)v->addr, PAGE_SHIFT, p);
		dev_warn(&od->vdev->dev,
			 "window: killing pid %d (%s) with SIGBUS: it maps lost page %#llx at %#lx\n",
			 task_tgid_nr(p), p->comm, v->off, v->addr);
	}
	rcu_read_unlock();
}

/* The lost offsets of one event: the payload (n little-endian u64) and the window size. */
struct offload_lost {
	const u8 *payload;
	unsigned int n;
	u64 size;
};

/* offload_lost_off: offset @i of the event, or U64_MAX if it is not a window page. */
static u64 offload_lost_off(const struct offload_lost *lost, unsigned int i)
{
	u64 off = get_unaligned_le64(lost->payload + i * sizeof(u64));

	return PAGE_ALIGNED(off) && off < lost->size ? off : U64_MAX;
}

/*
 * offload_vma_victim: whether @vma maps one of the lost pages; fills @v with the first.
 * Caller holds vma_lock and the mapping's i_mmap_rwsem (read), which keeps vm_start and
 * vm_pgoff stable (vma_adjust changes them under it, for write).
 */
static bool offload_vma_victim(struct vm_area_struct *vma, const struct offload_lost *lost,
			       struct offload_victim *v)
{
	unsigned long first = vma->vm_pgoff, end = first + vma_pages(vma), pg;
	unsigned int i;
	u64 off;

	for (i = 0; i < lost->n; i++) {
		off = offload_lost_off(lost, i);
		if (off == U64_MAX)
			continue;
		pg = off >> PAGE_SHIFT;
		if (pg < first || pg >= end)
			continue;
		v->mm = vma->vm_mm;
		v->addr = vma->vm_start + ((pg - first) << PAGE_SHIFT);
		v->off = off;
		return true;
	}
	return false;
}

/*
 * offload_kill_mappers: SIGBUS to every process with a vma over one of the lost pages,
 * whether or not the page is mapped in it now (caller holds map_lock; win.inode is set).
 * One signal per mm; should the victim array not be allocated, one per vma.
 */
static void offload_kill_mappers(struct offload_dev *od, const struct offload_lost *lost)
{
	struct offload_window *win = &od->win;
	struct address_space *mapping = win->inode->i_mapping;
	struct offload_victim *victims, v;
	unsigned int count = 0, nv = 0, i;
	struct offload_vma *ov;

	mutex_lock(&win->vma_lock);
	list_for_each_entry(ov, &win->vmas, link)
		count++;
	victims = count ? kcalloc(count, sizeof(*victims), GFP_KERNEL) : NULL;
	i_mmap_lock_read(mapping);
	list_for_each_entry(ov, &win->vmas, link) {
		if (!offload_vma_victim(ov->vma, lost, &v))
			continue;
		if (!victims) {
			offload_kill_mm(od, &v);
			continue;
		}
		for (i = 0; i < nv && victims[i].mm != v.mm; i++)
			;
		if (i == nv) {
			mmgrab(v.mm); /* the vma keeps it until vma_lock is dropped */
			victims[nv++] = v;
		}
	}
	i_mmap_unlock_read(mapping);
	mutex_unlock(&win->vma_lock);

	for (i = 0; i < nv; i++) {
		offload_kill_mm(od, &victims[i]);
		mmdrop(victims[i].mm);
	}
	kfree(victims);
}

/* offload_zap: remove every user mapping of the lost pages, in runs of consecutive pages. */
static void offload_zap(struct address_space *mapping, const struct offload_lost *lost)
{
	u64 start = U64_MAX, next = 0, off;
	unsigned int i;

	for (i = 0; i <= lost->n; i++) {
		off = i < lost->n ? offload_lost_off(lost, i) : U64_MAX;
		if (off == U64_MAX && i < lost->n)
			continue; /* not a window page: skipped */
		if (start != U64_MAX && off == next) {
			next += PAGE_SIZE;
			continue;
		}
		if (start != U64_MAX)
			unmap_mapping_range(mapping, start, next - start, 1);
		start = off; /* U64_MAX after the last run */
		next = off + PAGE_SIZE;
	}
}

/*
 * offload_window_pages_lost: a PAGES_LOST event from the event work (process context): the
 * window pages at the @len / 8 offsets in @payload are gone for good because node @node was
 * lost (or, if @node is this node, their manager refused them). Mark them, zap their
 * mappings, SIGBUS whoever maps them, and say so. Malformed offsets are skipped (logged).
 */
void offload_window_pages_lost(struct offload_dev *od, u32 node, const u8 *payload, u32 len)
{
	struct offload_window *win = &od->win;
	struct device *dev = &od->vdev->dev;
	struct offload_lost lost = { .payload = payload, .n = len / sizeof(u64) };
	unsigned int i, valid = 0, fresh = 0;
	u64 off, lowest = U64_MAX;

	if (!win->present) {
		dev_warn_ratelimited(dev, "PAGES_LOST event but no window\n");
		return;
	}
	if (!lost.n || len % sizeof(u64) || lost.n > OFFLOAD_MAX_LOST_PER_EVENT) {
		dev_warn_ratelimited(dev, "PAGES_LOST event with %u payload bytes\n", len);
		return;
	}
	lost.size = win->size;

	down_write(&win->lost_rwsem);
	for (i = 0; i < lost.n; i++) {
		off = offload_lost_off(&lost, i);
		if (off == U64_MAX) {
			dev_warn_ratelimited(dev, "PAGES_LOST: bad window offset %#llx\n",
					     get_unaligned_le64(payload + i * sizeof(u64)));
			continue;
		}
		if (!test_and_set_bit(off >> PAGE_SHIFT, win->lost))
			fresh++;
		lowest = min(lowest, off);
		valid++;
	}
	win->nlost += fresh;
	up_write(&win->lost_rwsem);
	if (!valid)
		return;

	dev_warn(dev,
		 "window: %u pages lost with node %u%s, first at offset %#llx (%u newly): contents gone for good, mappings removed, processes mapping them get SIGBUS\n",
		 valid, node, node == od->node_index ? " (this node: refused by the manager)" : "",
		 lowest, fresh);
	mutex_lock(&win->map_lock);
	if (win->inode) {
		offload_zap(win->inode->i_mapping, &lost);
		offload_kill_mappers(od, &lost);
	}
	mutex_unlock(&win->map_lock);
}
