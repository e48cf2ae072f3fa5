//! Guest-physical memory layout of an x86_64 guest.
//!
//! ```text
//! 0x0000_0500  GDT                     0x0000_9000  PML4, then PDPT, then 4 page directories
//! 0x0000_0520  IDT (empty)             0x0002_0000  kernel command line
//! 0x0000_7000  zero page (boot_params) 0x0009_fc00  MP table (start of the EBDA)
//! 0x0000_8ff0  initial stack pointer   0x0010_0000  start of high RAM (kernel, initrd)
//! 0xc000_0000 .. 0x1_0000_0000         MMIO gap: devices, IOAPIC, LAPIC (no RAM)
//! 0x1_0000_0000 ..                     RAM beyond 3 GiB
//! 0x10_0000_0000 ..                    the coherent window (reserved in e820, same in every node)
//! ```

/// GDT location.
pub const GDT_ADDR: u64 = 0x500;
/// IDT location (an empty IDT: the kernel installs its own before enabling interrupts).
pub const IDT_ADDR: u64 = 0x520;
/// The zero page handed to the kernel in `rsi`.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK_ADDR: u64 = 0x8ff0;
/// Top-level page table.
pub const PML4_ADDR: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPT_ADDR: u64 = 0xa000;
/// First of four page directories identity-mapping the low 4 GiB with 2 MiB pages.
pub const PD_ADDR: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// End of conventional memory below 1 MiB; the MP table sits here.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of the memory above the legacy hole.
pub const HIMEM_START: u64 = 0x10_0000;
/// Where a bzImage's protected-mode kernel is loaded (the 6.1 default `PHYSICAL_START`).
pub const BZIMAGE_LOAD_ADDR: u64 = 0x100_0000;
/// Start of the MMIO gap below 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the MMIO gap (4 GiB).
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Guest-physical base of the coherent window (DESIGN.md decision 4): at 64 GiB, the same in
/// every VM whatever its RAM size, and inside the 40 physical address bits of our guests.
pub const WINDOW_BASE: u64 = 0x10_0000_0000;
/// IOAPIC base address.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC base address.
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// Highest address an initrd may end at when the kernel does not say otherwise.
pub const INITRD_ADDR_MAX_DEFAULT: u64 = 0x7fff_ffff;
/// Number of interrupt pins of the in-kernel IOAPIC.
pub const IOAPIC_PINS: u8 = 24;
/// ISA interrupt line of the first serial port.
pub const SERIAL_IRQ: u32 = 4;
