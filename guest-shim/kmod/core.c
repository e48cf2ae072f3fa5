// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * core.c: offload.ko's virtio driver for the offload device (docs/offload-device.md):
 * device id table, VIRTIO_F_VERSION_1 check, probe (configuration space, the two
 * virtqueues, event buffers, the memory window, /dev/offload), remove (quiesce, reset,
 * take buffers back, free), the lifetime of the per-device state and its node state table
 * (a node's loss kills the processes that depended on it: shadow.c).
 */
#include <linux/atomic.h>
#include <linux/errno.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>

#include "offload.h"

/* Smallest queues the driver works with: a request takes up to 4 descriptors. */
#define OFFLOAD_MIN_REQ_QUEUE 4
#define OFFLOAD_MIN_EVT_QUEUE 16

/* One offload device per VM: /dev/offload has one name. */
static atomic_t offload_bound = ATOMIC_INIT(0);

static const char *const offload_state_names[] = { "down", "up", "lost" };

/* The state holds a reference on the virtio device: late ioctls may still log with it. */
static void offload_dev_free(struct kref *kref)
{
	struct offload_dev *od = container_of(kref, struct offload_dev, kref);

	offload_window_free(od);
	put_device(&od->vdev->dev);
	kfree(od);
}

void offload_dev_put(struct offload_dev *od)
{
	kref_put(&od->kref, offload_dev_free);
}

/*
 * offload_set_node_state: record what the device said about @node (events, PEERS). On its
 * loss, the processes with threads there and the shadows whose home it was are killed.
 */
void offload_set_node_state(struct offload_dev *od, u32 node, u32 state)
{
	u8 old;

	if (node >= OFFLOAD_MAX_NODES || state > OFFLOAD_PEER_LOST) {
		dev_warn_ratelimited(&od->vdev->dev, "node %u reported in state %u\n", node,
				     state);
		return;
	}
	old = READ_ONCE(od->node_state[node]);
	WRITE_ONCE(od->node_state[node], state);
	if (old != state)
		dev_info_ratelimited(&od->vdev->dev, "node %u is %s\n", node,
				     offload_state_names[state]);
	if (old != state && state == OFFLOAD_PEER_LOST)
		offload_procs_node_lost(od, node);
}

static int offload_validate(struct virtio_device *vdev)
{
	if (!virtio_has_feature(vdev, VIRTIO_F_VERSION_1)) {
		dev_err(&vdev->dev, "device lacks VIRTIO_F_VERSION_1: refused\n");
		return -ENODEV;
	}
	if (!vdev->config->get) {
		dev_err(&vdev->dev, "configuration space not readable\n");
		return -EINVAL;
	}
	return 0;
}

static void offload_read_config(struct offload_dev *od)
{
	struct virtio_device *vdev = od->vdev;

	virtio_cread(vdev, struct offload_virtio_config, node_index, &od->node_index);
	virtio_cread(vdev, struct offload_virtio_config, num_nodes, &od->num_nodes);
	virtio_cread_bytes(vdev, offsetof(struct offload_virtio_config, node_name),
			   od->node_name, OFFLOAD_NAME_LEN);
	od->node_name[OFFLOAD_NAME_LEN] = '\0';
	if (od->num_nodes == 0 || od->node_index >= od->num_nodes)
		dev_warn(&vdev->dev, "configuration says node %u of %u\n", od->node_index,
			 od->num_nodes);
}

static int offload_find_vqs(struct offload_dev *od)
{
	static const char *const names[] = { "requests", "events" };
	vq_callback_t *callbacks[] = { offload_req_vq_done, offload_evt_vq_done };
	struct virtqueue *vqs[2];
	int err;

	err = virtio_find_vqs(od->vdev, 2, vqs, callbacks, names, NULL);
	if (err)
		return err;
	od->req_vq = vqs[0];
	od->evt_vq = vqs[1];
	if (virtqueue_get_vring_size(od->req_vq) < OFFLOAD_MIN_REQ_QUEUE ||
	    virtqueue_get_vring_size(od->evt_vq) < OFFLOAD_MIN_EVT_QUEUE) {
		dev_err(&od->vdev->dev, "queues too small (%u, %u)\n",
			virtqueue_get_vring_size(od->req_vq),
			virtqueue_get_vring_size(od->evt_vq));
		od->vdev->config->del_vqs(od->vdev);
		return -EINVAL;
	}
	od->evt_target = min_t(unsigned int, OFFLOAD_EVENT_BUFS,
			       virtqueue_get_vring_size(od->evt_vq));
	od->ret_reserve = min_t(unsigned int, OFFLOAD_RET_RESERVE,
				virtqueue_get_vring_size(od->req_vq) - OFFLOAD_MIN_REQ_QUEUE);
	return 0;
}

/*
 * offload_quiesce: stop everything, in an order that leaves nothing running on the queues:
 * no new submissions or kicks (dead, set under both locks; executors waiting for calls
 * woken: they return -ENODEV), device reset, buffers taken
 * back (requests failed with -ENODEV, event buffers freed), queues deleted (which waits for
 * a running interrupt handler), the event work cancelled (nothing can queue it now), and
 * the window's reap work and the spawn and kill works waited for (their requests fail at
 * once now; nothing queues them).
 */
static void offload_quiesce(struct offload_dev *od)
{
	mutex_lock(&od->evt_lock);
	spin_lock_irq(&od->lock);
	od->dead = true;
	spin_unlock_irq(&od->lock);
	mutex_unlock(&od->evt_lock);
	wake_up_all(&od->space_wq);
	offload_exec_shutdown(od);

	virtio_reset_device(od->vdev);
	offload_req_shutdown(od);
	offload_evt_shutdown(od);
	od->vdev->config->del_vqs(od->vdev);
	cancel_work_sync(&od->evt_work);
	offload_window_flush(od);
	offload_spawn_flush(od);
}

static struct offload_dev *offload_dev_new(struct virtio_device *vdev)
{
	struct offload_dev *od = kzalloc(sizeof(*od), GFP_KERNEL);

	if (!od)
		return NULL;
	od->vdev = vdev;
	get_device(&vdev->dev);
	spin_lock_init(&od->lock);
	init_waitqueue_head(&od->space_wq);
	INIT_LIST_HEAD(&od->backlog);
	offload_exec_init(od);
	offload_shadow_init(od);
	offload_spawn_init(od);
	mutex_init(&od->evt_lock);
	INIT_WORK(&od->evt_work, offload_evt_work);
	atomic64_set(&od->next_tag, 0);
	memset(od->node_state, OFFLOAD_STATE_UNKNOWN, sizeof(od->node_state));
	offload_window_init(od);
	kref_init(&od->kref);
	return od;
}

static int offload_probe(struct virtio_device *vdev)
{
	struct offload_dev *od;
	int err;

	if (atomic_cmpxchg(&offload_bound, 0, 1) != 0) {
		dev_err(&vdev->dev, "another offload device is already bound; one per VM\n");
		return -EBUSY;
	}
	err = -ENOMEM;
	od = offload_dev_new(vdev);
	if (!od)
		goto err_bound;
	vdev->priv = od;
	offload_read_config(od);
	err = offload_find_vqs(od);
	if (err)
		goto err_free;
	virtio_device_ready(vdev);
	/*
	 * The window first: PAGES_LOST events wait in the monitor until event buffers are
	 * posted. Without a usable window the device works as before.
	 */
	offload_window_probe(od);
	err = offload_evt_fill(od);
	if (!err)
		err = offload_chardev_register(od);
	if (err)
		goto err_quiesce;
	dev_info(&vdev->dev, "node %u of %u (%*pE), /dev/offload ready\n", od->node_index,
		 od->num_nodes, (int)strlen(od->node_name), od->node_name);
	return 0;

err_quiesce:
	offload_quiesce(od);
err_free:
	vdev->priv = NULL;
	offload_dev_put(od);
err_bound:
	atomic_set(&offload_bound, 0);
	return err;
}

static void offload_remove(struct virtio_device *vdev)
{
	struct offload_dev *od = vdev->priv;

	offload_chardev_unregister(od);
	offload_quiesce(od);
	vdev->priv = NULL;
	offload_dev_put(od); /* open files may hold the last references */
	atomic_set(&offload_bound, 0);
}

static const struct virtio_device_id offload_id_table[] = {
	{ OFFLOAD_DEVICE_ID, VIRTIO_DEV_ANY_ID },
	{ 0 },
};
MODULE_DEVICE_TABLE(virtio, offload_id_table);

static const unsigned int offload_features[] = {
	VIRTIO_F_VERSION_1,
};

static struct virtio_driver offload_driver = {
	.driver.name = KBUILD_MODNAME,
	.driver.owner = THIS_MODULE,
	.id_table = offload_id_table,
	.feature_table = offload_features,
	.feature_table_size = ARRAY_SIZE(offload_features),
	.validate = offload_validate,
	.probe = offload_probe,
	.remove = offload_remove,
};
module_virtio_driver(offload_driver);

MODULE_DESCRIPTION("offload: guest driver of the offload virtio device (/dev/offload)");
MODULE_LICENSE("Dual MIT/GPL");
