//! Preparing a guest for the Linux x86_64 64-bit boot protocol.
//!
//! - [`layout`]: where things live in guest-physical memory.
//! - [`memory`]: guest RAM regions and the e820 map that describes them.
//! - [`loader`]: kernel (ELF or bzImage), initrd, command line and the zero page.
//! - [`mptable`]: the Intel MP table that tells the guest about several vCPUs without ACPI.
//! - [`cpuid`], [`regs`]: per-vCPU CPUID, MSRs, FPU, segment and page-table state.

pub mod cpuid;
pub mod layout;
pub mod loader;
pub mod memory;
pub mod mptable;
pub mod regs;
