//! The i8042 keyboard controller, reduced to the CPU-reset command guests use to reboot
//! (`reboot=k`), and an eventfd-backed trigger for vm-superio devices.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;

/// Base port of the i8042 controller (data port; the command port is base + 4).
pub const I8042_BASE: u64 = 0x60;
/// Ports covered by the controller.
pub const I8042_LEN: u64 = 5;

/// A vm-superio trigger that writes to an eventfd.
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The trigger behind the i8042's reset line: it raises the VM-wide vCPU stop flag before it
/// signals the monitor, so the vCPU that asked for the reset never re-enters the guest. A guest
/// that keeps running after its reset request goes on to other reset methods (BIOS jump, triple
/// fault) that would otherwise race the monitor's orderly stop and turn a clean power-off into
/// a vCPU failure.
pub struct ResetTrigger {
    evt: EventFd,
    halt: Arc<AtomicBool>,
}

impl Trigger for ResetTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.halt.store(true, Ordering::Release);
        self.evt.write(1)
    }
}

/// The i8042 on the port bus; a reset command halts the vCPUs and signals the VM's reset event.
pub struct I8042 {
    inner: I8042Device<ResetTrigger>,
}

impl I8042 {
    /// A controller that sets `halt` and writes to `reset_evt` when the guest asks for a CPU
    /// reset.
    pub fn new(reset_evt: EventFd, halt: Arc<AtomicBool>) -> Self {
        Self {
            inner: I8042Device::new(ResetTrigger {
                evt: reset_evt,
                halt,
            }),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = self.inner.read(offset as u8);
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&v) = data.first() {
            if let Err(e) = self.inner.write(offset as u8, v) {
                log::error!("i8042: cannot signal the reset event: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_signals_the_event() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let halt = Arc::new(AtomicBool::new(false));
        let mut dev = I8042::new(evt.try_clone().unwrap(), halt.clone());
        dev.write(0, &[0xfe]);
        assert!(evt.read().is_err(), "a data-port write must not reset");
        assert!(!halt.load(Ordering::Acquire));
        dev.write(4, &[0xfe]);
        assert!(
            halt.load(Ordering::Acquire),
            "the vCPUs must stop before the monitor wakes"
        );
        assert_eq!(evt.read().unwrap(), 1);
        let mut b = [0xaa; 2];
        dev.read(4, &mut b);
        assert_eq!(b, [0, 0]);
    }
}
