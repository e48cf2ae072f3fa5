//! Devices the guest talks to through port I/O or MMIO, and the bus that routes accesses to them.
//!
//! - [`bus`]: address ranges to devices, for the port I/O space and the MMIO space.
//! - [`serial`]: the 16550A console on `0x3f8` (vm-superio), its input from the host, and the
//!   scanner that picks the guest command's exit status out of the console output.
//! - [`legacy`]: the i8042 controller (only its CPU-reset command matters) and an eventfd-backed
//!   interrupt trigger.

pub mod bus;
pub mod legacy;
pub mod offload;
pub mod serial;
pub mod virtio;
