//! The virtio-mmio transport, version 2 (virtio 1.x, "modern"): the register file a driver uses
//! to discover a device, negotiate features, set up queues and drive the status machine.
//!
//! The device itself sits behind an `Arc<Mutex<D>>` shared with the event loop, which processes
//! the queues when their notification eventfds fire (KVM ioeventfds, so a notify never exits to
//! user space). Lock order: transport, then device; the event loop takes only the device lock.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{Activation, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::devices::bus::BusDevice;

/// Size of the MMIO window of one device.
pub const MMIO_LEN: u64 = 0x1000;
/// Offset of the queue-notify register (for ioeventfd registration).
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const CONFIG_START: u64 = 0x100;

const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_NEEDS_RESET: u32 = 64;
const STATUS_FAILED: u32 = 128;

/// The transport state of one device.
pub struct MmioTransport<D: VirtioDevice> {
    device: Arc<Mutex<D>>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queue_evts: Vec<EventFd>,
    queues: Vec<Queue>,
    queue_ready: Vec<bool>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    status: u32,
    config_generation: u32,
    activated: bool,
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// A transport for `device`; `queue_evts[i]` is signalled when the driver notifies queue i.
    pub fn new(
        device: Arc<Mutex<D>>,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        queue_evts: Vec<EventFd>,
    ) -> Self {
        let sizes = lock(&device).queue_max_sizes().to_vec();
        let queues = new_queues(&sizes);
        Self {
            device,
            mem,
            interrupt,
            queue_evts,
            queue_ready: vec![false; queues.len()],
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            status: 0,
            config_generation: 0,
            activated: false,
        }
    }

    /// The device's current status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        if self.status & STATUS_DRIVER_OK != 0 {
            return None; // queue layout is frozen once the device runs
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_register(&self, offset: u64) -> u32 {
        let dev = lock(&self.device);
        match offset {
            0x00 => MAGIC,
            0x04 => VERSION,
            0x08 => dev.device_type(),
            0x0c => dev.vendor_id(),
            0x10 => match self.device_features_sel {
                0 => dev.features() as u32,
                1 => (dev.features() >> 32) as u32,
                _ => 0,
            },
            0x34 => dev
                .queue_max_sizes()
                .get(self.queue_sel as usize)
                .copied()
                .map_or(0, u32::from),
            0x44 => u32::from(self.queue_ready.get(self.queue_sel as usize) == Some(&true)),
            0x60 => self.interrupt.status(),
            0x70 => self.status,
            0xb0 | 0xb4 => u32::MAX, // no shared memory regions
            0xfc => self.config_generation,
            _ => {
                log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            0x14 => self.device_features_sel = value,
            0x20 => self.write_driver_features(value),
            0x24 => self.driver_features_sel = value,
            0x30 => self.queue_sel = value,
            0x38 => self.with_queue(|q| q.set_size(value as u16)),
            0x44 => self.write_queue_ready(value == 1),
            0x50 => self.notify(value),
            0x64 => self.interrupt.ack(value),
            0x70 => self.write_status(value),
            0x80 => self.with_queue(|q| q.set_desc_table_address(Some(value), None)),
            0x84 => self.with_queue(|q| q.set_desc_table_address(None, Some(value))),
            0x90 => self.with_queue(|q| q.set_avail_ring_address(Some(value), None)),
            0x94 => self.with_queue(|q| q.set_avail_ring_address(None, Some(value))),
            0xa0 => self.with_queue(|q| q.set_used_ring_address(Some(value), None)),
            0xa4 => self.with_queue(|q| q.set_used_ring_address(None, Some(value))),
            _ => log::debug!("virtio-mmio: write of unknown register {offset:#x}"),
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        match self.selected_queue() {
            Some(q) => f(q),
            None => log::warn!(
                "virtio-mmio: queue register write ignored (no such queue or device running)"
            ),
        }
    }

    fn write_queue_ready(&mut self, ready: bool) {
        let sel = self.queue_sel as usize;
        if let Some(q) = self.selected_queue() {
            q.set_ready(ready);
            self.queue_ready[sel] = ready;
        }
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status & STATUS_FEATURES_OK != 0 || self.status & STATUS_DRIVER == 0 {
            log::warn!("virtio-mmio: driver features written outside negotiation; ignored");
            return;
        }
        let offered = lock(&self.device).features();
        let value = u64::from(value);
        match self.driver_features_sel {
            0 => self.acked_features = (self.acked_features & !0xffff_ffff) | value,
            1 => self.acked_features = (self.acked_features & 0xffff_ffff) | (value << 32),
            _ => {}
        }
        if self.acked_features & !offered != 0 {
            log::warn!("virtio-mmio: driver acked features the device did not offer");
            self.acked_features &= offered;
        }
    }

    fn notify(&self, queue: u32) {
        // With ioeventfds registered KVM signals these directly; this path serves writes that
        // still reach user space (and tests).
        if let Some(evt) = self.queue_evts.get(queue as usize) {
            if let Err(e) = evt.write(1) {
                log::warn!("virtio-mmio: cannot signal queue {queue}: {e}");
            }
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let new_bits = value & !self.status;
        if value & self.status != self.status {
            log::warn!(
                "virtio-mmio: driver tried to clear status bits {:#x}; ignored",
                self.status & !value
            );
            return;
        }
        if new_bits & STATUS_FEATURES_OK != 0 && !self.features_ok() {
            self.status |= new_bits & !STATUS_FEATURES_OK;
            return;
        }
        self.status |= new_bits;
        if new_bits & STATUS_FAILED != 0 {
            log::warn!("virtio-mmio: the driver gave up on the device (status FAILED)");
        }
        if new_bits & STATUS_DRIVER_OK != 0 {
            self.activate();
        }
    }

    fn features_ok(&self) -> bool {
        let modern = self.acked_features & (1u64 << VIRTIO_F_VERSION_1) != 0;
        if !modern {
            log::warn!("virtio-mmio: driver did not accept VIRTIO_F_VERSION_1");
        }
        modern
    }

    fn activate(&mut self) {
        let ok = self.status & (STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)
            == (STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
        let valid = self
            .queues
            .iter()
            .enumerate()
            .all(|(i, q)| !self.queue_ready[i] || q.is_valid(&self.mem));
        if !ok || !valid || self.activated {
            log::warn!("virtio-mmio: DRIVER_OK with an incomplete setup; device needs reset");
            self.fail();
            return;
        }
        let sizes = lock(&self.device).queue_max_sizes().to_vec();
        let queues = std::mem::replace(&mut self.queues, new_queues(&sizes));
        let activation = Activation {
            mem: self.mem.clone(),
            queues,
            acked_features: self.acked_features,
            interrupt: self.interrupt.clone(),
        };
        let result = lock(&self.device).activate(activation);
        match result {
            Ok(()) => self.activated = true,
            Err(e) => {
                log::warn!("virtio-mmio: {e}");
                self.fail();
            }
        }
    }

    fn fail(&mut self) {
        self.status |= STATUS_NEEDS_RESET;
        self.config_generation = self.config_generation.wrapping_add(1);
        self.interrupt.trigger(super::INT_CONFIG);
    }

    fn reset(&mut self) {
        if self.activated {
            lock(&self.device).reset();
        }
        let sizes = lock(&self.device).queue_max_sizes().to_vec();
        self.queues = new_queues(&sizes);
        self.queue_ready = vec![false; sizes.len()];
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.status = 0;
        self.activated = false;
        self.interrupt.reset();
    }
}

fn new_queues(sizes: &[u16]) -> Vec<Queue> {
    sizes
        .iter()
        .map(|s| Queue::new(*s).unwrap_or_default())
        .collect()
}

fn lock<D: ?Sized>(m: &Mutex<D>) -> std::sync::MutexGuard<'_, D> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<D: VirtioDevice> BusDevice for MmioTransport<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_START {
            lock(&self.device).read_config(offset - CONFIG_START, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::warn!(
                "virtio-mmio: {}-byte read at {offset:#x} (registers are 32-bit)",
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_START {
            log::debug!("virtio-mmio: configuration space is read-only");
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::warn!(
                "virtio-mmio: {}-byte write at {offset:#x} (registers are 32-bit)",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::{read_config_bytes, VirtioError};
    use vm_memory::GuestAddress;

    #[derive(Default)]
    struct Dummy {
        activated: Option<(usize, u64)>,
        resets: u32,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            0xff0f
        }
        fn vendor_id(&self) -> u32 {
            0x1234
        }
        fn features(&self) -> u64 {
            1 << VIRTIO_F_VERSION_1
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 8]
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            read_config_bytes(&[1, 2, 3, 4, 5], offset, data);
        }
        fn activate(&mut self, a: Activation) -> Result<(), VirtioError> {
            self.activated = Some((a.queues.len(), a.acked_features));
            Ok(())
        }
        fn reset(&mut self) {
            self.resets += 1;
            self.activated = None;
        }
    }

    fn transport() -> (MmioTransport<Dummy>, Arc<Mutex<Dummy>>, Vec<EventFd>) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let dev = Arc::new(Mutex::new(Dummy::default()));
        let evts: Vec<_> = (0..2)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
            .collect();
        let clones = evts.iter().map(|e| e.try_clone().unwrap()).collect();
        let irq = Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        (MmioTransport::new(dev.clone(), mem, irq, clones), dev, evts)
    }

    fn r(t: &mut MmioTransport<Dummy>, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn w(t: &mut MmioTransport<Dummy>, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn setup_queue(t: &mut MmioTransport<Dummy>, sel: u32, base: u32) {
        w(t, 0x30, sel);
        w(t, 0x38, 8);
        w(t, 0x80, base);
        w(t, 0x90, base + 0x1000);
        w(t, 0xa0, base + 0x2000);
        w(t, 0x44, 1);
    }

    #[test]
    fn identity_registers_and_config() {
        let (mut t, _, _) = transport();
        assert_eq!(r(&mut t, 0), MAGIC);
        assert_eq!(r(&mut t, 4), 2);
        assert_eq!(r(&mut t, 8), 0xff0f);
        w(&mut t, 0x14, 1);
        assert_eq!(r(&mut t, 0x10), 1, "VERSION_1 is bit 32");
        w(&mut t, 0x30, 1);
        assert_eq!(r(&mut t, 0x34), 8);
        w(&mut t, 0x30, 7);
        assert_eq!(r(&mut t, 0x34), 0, "no queue 7");
        let mut b = [0u8; 4];
        t.read(0x103, &mut b);
        assert_eq!(b, [4, 5, 0, 0]);
        let mut odd = [0xaa; 2];
        t.read(0x00, &mut odd);
        assert_eq!(odd, [0, 0], "registers need 32-bit reads");
    }

    #[test]
    fn full_negotiation_activates_the_device() {
        let (mut t, dev, evts) = transport();
        w(&mut t, 0x70, STATUS_ACKNOWLEDGE);
        w(&mut t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1);
        w(
            &mut t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_ne!(r(&mut t, 0x70) & STATUS_FEATURES_OK, 0);
        setup_queue(&mut t, 0, 0x10000);
        setup_queue(&mut t, 1, 0x20000);
        w(&mut t, 0x70, 0xf);
        assert_eq!(dev.lock().unwrap().activated, Some((2, 1 << 32)));
        assert_eq!(r(&mut t, 0x70) & STATUS_NEEDS_RESET, 0);
        w(&mut t, 0x50, 1);
        assert_eq!(
            evts[1].read().unwrap(),
            1,
            "notify reaches the queue's eventfd"
        );
        w(&mut t, 0x70, 0);
        assert_eq!(dev.lock().unwrap().resets, 1);
        assert_eq!(r(&mut t, 0x70), 0);
    }

    #[test]
    fn legacy_driver_is_refused_features_ok() {
        let (mut t, dev, _) = transport();
        w(&mut t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(&mut t, 0x20, 0);
        w(
            &mut t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        assert_eq!(r(&mut t, 0x70) & STATUS_FEATURES_OK, 0);
        w(
            &mut t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK,
        );
        assert!(dev.lock().unwrap().activated.is_none());
        assert_ne!(r(&mut t, 0x70) & STATUS_NEEDS_RESET, 0);
    }

    #[test]
    fn queues_outside_memory_fail_activation() {
        let (mut t, dev, _) = transport();
        w(&mut t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1);
        w(
            &mut t,
            0x70,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        setup_queue(&mut t, 0, 0xfff_0000); // beyond the 1 MiB of guest memory
        w(&mut t, 0x70, 0xf);
        assert!(dev.lock().unwrap().activated.is_none());
        assert_ne!(r(&mut t, 0x70) & STATUS_NEEDS_RESET, 0);
        assert_ne!(r(&mut t, 0x60) & super::super::INT_CONFIG, 0);
    }

    #[test]
    fn garbage_writes_do_not_panic() {
        let (mut t, _, _) = transport();
        for off in (0..0x200u64).step_by(2) {
            t.write(off, &[0xff, 0xff, 0xff, 0xff]);
            t.write(off, &[0xff]);
            let mut b = [0u8; 8];
            t.read(off, &mut b);
        }
        w(&mut t, 0x50, 99);
        w(&mut t, 0x30, u32::MAX);
        w(&mut t, 0x38, 4);
    }
}
