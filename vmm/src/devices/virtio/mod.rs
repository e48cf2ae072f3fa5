//! Virtio devices: the device-side contract ([`VirtioDevice`]), the interrupt a device raises,
//! and the virtio-mmio transport (version 2, virtio 1.x) that puts a device on the MMIO bus.

pub mod mmio;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// `VIRTIO_F_VERSION_1`: the device is a virtio 1.x ("modern") device.
pub const VIRTIO_F_VERSION_1: u32 = 32;
/// Interrupt status bit: a used ring was updated.
pub const INT_USED_RING: u32 = 0x1;
/// Interrupt status bit: the configuration changed.
pub const INT_CONFIG: u32 = 0x2;

/// Errors activating a device.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    #[error("queue {0} is not valid in guest memory")]
    InvalidQueue(usize),
    #[error("the driver did not accept VIRTIO_F_VERSION_1")]
    NotModern,
    #[error("device activation failed: {0}")]
    Activate(String),
}

/// The interrupt of a virtio-mmio device: a status word the driver reads and acknowledges, and
/// an irqfd that injects the (edge) interrupt.
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
    injected: AtomicU64,
}

impl Interrupt {
    /// An interrupt that fires `irqfd` (registered with KVM for the device's GSI).
    pub fn new(irqfd: EventFd) -> Arc<Self> {
        Arc::new(Self {
            status: AtomicU32::new(0),
            irqfd,
            injected: AtomicU64::new(0),
        })
    }

    /// Sets `bits` in the status and interrupts the guest.
    pub fn trigger(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        self.injected.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.irqfd.write(1) {
            log::warn!("virtio: cannot inject interrupt: {e}");
        }
    }

    /// How many interrupts were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// The status the driver reads.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The driver acknowledges `bits`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clears everything (device reset).
    pub fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    pub mem: GuestMemoryMmap,
    pub queues: Vec<Queue>,
    pub acked_features: u64,
    pub interrupt: Arc<Interrupt>,
}

/// The device side of a virtio device, independent of the transport.
pub trait VirtioDevice: Send {
    /// Virtio device type.
    fn device_type(&self) -> u32;
    /// Vendor id reported by the transport.
    fn vendor_id(&self) -> u32;
    /// Feature bits the device offers.
    fn features(&self) -> u64;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver set DRIVER_OK: the queues are configured and the device may run.
    fn activate(&mut self, activation: Activation) -> Result<(), VirtioError>;
    /// The driver reset the device: stop using the queues and forget them.
    fn reset(&mut self);
}

/// Copies the part of `config` that `offset..offset+data.len()` covers; the rest reads as 0.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let end = (start + data.len()).min(config.len());
    data[..end - start].copy_from_slice(&config[start..end]);
}
