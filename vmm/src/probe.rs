//! Snapshots of what a VM has cost so far: exits that reached the monitor, KVM's own counters,
//! and the offload device's work. Benchmarks take one on demand (a signal to `vmm`) and one
//! at the end, and compare.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::devices::offload::{OffloadDevice, OffloadStats};
use crate::dsm::{Dsm, DsmStats};
use crate::stats::{ExitCounters, ExitStats};
use crate::vstate::kvm_stats::{self, KvmStats};

/// Where the numbers come from.
pub struct StatsProbe {
    pub(crate) start: Instant,
    pub(crate) counters: Arc<ExitCounters>,
    pub(crate) kvm_files: Vec<File>,
    pub(crate) device: Arc<Mutex<OffloadDevice>>,
    pub(crate) dsm: Option<Arc<Dsm>>,
}

/// The numbers at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub exits: ExitStats,
    pub kvm: KvmStats,
    pub offload: OffloadStats,
    pub dsm: Option<DsmStats>,
    pub elapsed: Duration,
}

impl StatsProbe {
    /// Reads every counter now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            exits: self.counters.snapshot(),
            kvm: kvm_stats::read_all(&self.kvm_files),
            offload: self
                .device
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .stats(),
            dsm: self.dsm.as_ref().map(|d| d.stats()),
            elapsed: self.start.elapsed(),
        }
    }
}

impl fmt::Display for Snapshot {
    /// The `--exit-stats` format: one `what key=value...` line per source.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "user_exits {}", self.exits)?;
        writeln!(f, "kvm_exits {}", kvm_stats::format_exits(&self.kvm))?;
        writeln!(f, "offload {}", self.offload)?;
        if let Some(d) = &self.dsm {
            writeln!(f, "dsm {d}")?;
        }
        writeln!(f, "elapsed_ms {}", self.elapsed.as_millis())
    }
}

/// Appends a numbered snapshot to a file each time its event fires.
pub struct SnapshotWriter {
    probe: Arc<StatsProbe>,
    evt: EventFd,
    path: PathBuf,
    taken: u32,
}

impl SnapshotWriter {
    /// Writes to `path` when `evt` fires.
    pub fn new(probe: Arc<StatsProbe>, evt: EventFd, path: PathBuf) -> Self {
        Self {
            probe,
            evt,
            path,
            taken: 0,
        }
    }

    fn write(&mut self) -> std::io::Result<()> {
        self.taken += 1;
        let text = format!("snapshot {}\n{}", self.taken, self.probe.snapshot());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(text.as_bytes())
    }
}

impl MutEventSubscriber for SnapshotWriter {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.evt.read();
        if let Err(e) = self.write() {
            log::warn!("cannot write statistics to {}: {e}", self.path.display());
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.evt, EventSet::IN)) {
            log::error!("cannot watch the snapshot event: {e:?}");
        }
    }
}
