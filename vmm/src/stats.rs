//! Counters of the VM exits that reach the monitor, by kind, shared by all vCPU threads.
//!
//! Exits that KVM handles in the kernel (HLT with an in-kernel irqchip, APIC accesses, EPT/NPT
//! faults) never reach user space and are not counted here.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Kinds of exits to user space that the monitor distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    IoIn,
    IoOut,
    MmioRead,
    MmioWrite,
    Hlt,
    Shutdown,
    SystemEvent,
    Interrupted,
    Other,
}

impl ExitKind {
    /// Every kind, in report order.
    pub const ALL: [ExitKind; 9] = [
        ExitKind::IoIn,
        ExitKind::IoOut,
        ExitKind::MmioRead,
        ExitKind::MmioWrite,
        ExitKind::Hlt,
        ExitKind::Shutdown,
        ExitKind::SystemEvent,
        ExitKind::Interrupted,
        ExitKind::Other,
    ];

    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::IoIn => "io_in",
            ExitKind::IoOut => "io_out",
            ExitKind::MmioRead => "mmio_read",
            ExitKind::MmioWrite => "mmio_write",
            ExitKind::Hlt => "hlt",
            ExitKind::Shutdown => "shutdown",
            ExitKind::SystemEvent => "system_event",
            ExitKind::Interrupted => "interrupted",
            ExitKind::Other => "other",
        }
    }
}

/// Live counters, one per kind.
#[derive(Debug, Default)]
pub struct ExitCounters {
    counts: [AtomicU64; 9],
}

impl ExitCounters {
    /// Counts one exit of `kind`.
    pub fn record(&self, kind: ExitKind) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> ExitStats {
        let mut counts = [0u64; 9];
        for (c, a) in counts.iter_mut().zip(&self.counts) {
            *c = a.load(Ordering::Relaxed);
        }
        ExitStats { counts }
    }
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitStats {
    counts: [u64; 9],
}

impl ExitStats {
    /// Count of one kind.
    pub fn get(&self, kind: ExitKind) -> u64 {
        self.counts[kind as usize]
    }

    /// Sum over all kinds.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl fmt::Display for ExitStats {
    /// One `name=count` pair per kind, space separated, then `total=`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for kind in ExitKind::ALL {
            write!(f, "{}={} ", kind.name(), self.get(kind))?;
        }
        write!(f, "total={}", self.total())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_per_kind() {
        let c = ExitCounters::default();
        c.record(ExitKind::IoOut);
        c.record(ExitKind::IoOut);
        c.record(ExitKind::Other);
        let s = c.snapshot();
        assert_eq!(s.get(ExitKind::IoOut), 2);
        assert_eq!(s.total(), 3);
        assert!(s.to_string().starts_with("io_in=0 io_out=2 "));
        assert!(s.to_string().ends_with("other=1 total=3"));
    }
}
