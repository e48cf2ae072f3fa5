//! `vmm`: a KVM monitor that boots a Linux guest and (in later steps) lets threads of a guest
//! process run on other nodes.
//!
//! Layout by concern:
//! - [`config`]: what the user asked for (kernel, initrd, memory, vCPUs, command), validated.
//! - [`boot`]: everything that prepares guest memory and vCPU state for the Linux 64-bit boot
//!   protocol (layout, loader, MP table, CPUID, registers).
//! - [`vstate`]: the KVM VM and its vCPU threads.
//! - [`devices`]: the port/MMIO bus and the legacy devices (serial console, i8042 reset).
//! - [`dsm`]: the coherent window shared by the nodes and its page protocol.
//! - [`offload`]: the syscall router that forwards threads' system calls to their home node.
//! - [`vmm`](crate::vmm): assembles the above, runs the VM and reports how it ended.

pub mod boot;
pub mod cluster;
pub mod config;
pub mod devices;
pub mod dsm;
pub mod offload;
pub mod probe;
pub mod ratelimit;
pub mod stats;
pub mod vmm;
pub mod vstate;

pub use config::{parse_size, VmConfig};
pub use vmm::{ExitReason, VmOutcome, Vmm, VmmError};
