//! Assembles a VM from a [`VmConfig`], runs it, and reports how it ended.
//!
//! The calling thread becomes the event loop (console input, exit events); each vCPU runs on
//! its own thread. The VM ends when the guest resets through the i8042 (how our guests power
//! off), or when a vCPU hits something fatal (triple fault, failed entry, internal error), in
//! which case the reason and the vCPU's registers are part of the outcome.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_ioctls::IoEventAddress;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use crate::boot::{layout, loader, memory, mptable, regs};
use crate::config::{ConfigError, VmConfig};
use crate::config::{OFFLOAD_IRQ, OFFLOAD_MMIO_BASE};
use crate::devices::bus::{Bus, BusError};
use crate::devices::legacy::{I8042, I8042_BASE, I8042_LEN};
use crate::devices::offload::handler::{ClusterLink, NoCluster, OffloadHandler};
use crate::devices::offload::{NodeIdentity, OffloadDevice, OffloadStats};
use crate::devices::serial::{
    ConsoleOutput, GuestStatus, SerialDevice, SerialInput, COM1_BASE, COM1_LEN,
};
use crate::devices::virtio::mmio::{self, MmioTransport};
use crate::devices::virtio::Interrupt;
use crate::dsm::{Dsm, DsmStats};
use crate::probe::{SnapshotWriter, StatsProbe};
use crate::stats::{ExitCounters, ExitStats};
use crate::vstate::kvm_stats::KvmStats;
use crate::vstate::vcpu::{self, BootState, Vcpu, VcpuReport, VcpuStop};
use crate::vstate::vm::{Vm, VmError};

/// Errors building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("guest memory")]
    Memory(#[from] memory::MemoryError),
    #[error("KVM")]
    Vm(#[from] VmError),
    #[error("loading the guest")]
    Loader(#[from] loader::LoaderError),
    #[error("MP table")]
    MpTable(#[from] mptable::MpTableError),
    #[error("boot page tables")]
    Regs(#[from] regs::RegsError),
    #[error("vCPU")]
    Vcpu(#[from] vcpu::VcpuError),
    #[error("device bus")]
    Bus(#[from] BusError),
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    #[error("cannot connect a device interrupt")]
    Irqfd(#[source] kvm_ioctls::Error),
    #[error("cannot register a queue notification eventfd")]
    Ioevent(#[source] kvm_ioctls::Error),
    #[error("event loop")]
    EventLoop(#[source] event_manager::Error),
    #[error("coherent window")]
    Dsm(#[from] crate::dsm::DsmError),
}

/// Why the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reset through the i8042 controller: a reboot or power-off.
    GuestReset,
    /// A vCPU ended the VM.
    Vcpu { id: u8, stop: VcpuStop },
    /// The embedder's stop event fired (for example `vmm` got SIGTERM).
    Stopped,
}

/// How a VM run ended.
#[derive(Debug, Clone)]
pub struct VmOutcome {
    pub reason: ExitReason,
    /// The exit status the guest init printed for its command, if it did.
    pub guest_status: Option<i32>,
    /// Exits to user space, by kind, over the whole run.
    pub exits: ExitStats,
    /// KVM's own counters summed over all vCPUs (every exit, also those handled in the kernel).
    pub kvm_stats: KvmStats,
    /// What the offload device did.
    pub offload: OffloadStats,
    /// What the coherent window's engine did (zero without a window).
    pub dsm: DsmStats,
    /// Time from the start of `run` to the end of the VM.
    pub elapsed: Duration,
}

impl VmOutcome {
    /// Whether the guest shut down normally (as opposed to a KVM or guest failure).
    pub fn is_clean(&self) -> bool {
        matches!(
            self.reason,
            ExitReason::GuestReset
                | ExitReason::Vcpu {
                    stop: VcpuStop::SystemEvent(_),
                    ..
                }
        )
    }
}

/// The VM's connections to the host: console, stop event, cluster link.
pub struct VmIo {
    /// Receives everything the guest writes to its serial port.
    pub output: Box<dyn Write + Send>,
    /// Host input for the guest; `None` gives the guest no input.
    pub input: Option<File>,
    /// Writing to this event stops the VM (`ExitReason::Stopped`).
    pub stop: Option<EventFd>,
    /// The other monitors; `None` runs this node alone.
    pub cluster: Option<Box<dyn ClusterLink>>,
    /// When this event fires, a statistics snapshot is appended to the file.
    pub snapshot: Option<(EventFd, std::path::PathBuf)>,
}

/// A running or finished VM.
pub struct Vmm;

/// How long stopping vCPU threads may take before the monitor gives up on them.
const VCPU_STOP_TIMEOUT: Duration = Duration::from_secs(5);

impl Vmm {
    /// Builds the VM described by `config`, runs it to its end and reports the outcome.
    pub fn run(config: &VmConfig, io: VmIo) -> Result<VmOutcome, VmmError> {
        let start = Instant::now();
        config.validate()?;
        let mem = memory::create_guest_memory(config.mem_bytes)?;
        let vm = Vm::new()?;
        vm.register_memory(&mem)?;
        let cmdline = config.cmdline()?;
        let e820 = memory::e820_map(config.mem_bytes, config.window_bytes);
        let images = loader::BootImages {
            kernel: &config.kernel,
            initrd: config.initrd.as_deref(),
            cmdline: &cmdline,
            e820: &e820,
        };
        let entry = loader::load(&mem, &images)?;
        mptable::setup(&mem, config.vcpus)?;
        regs::write_boot_tables(&mem)?;
        log::debug!("kernel entry {:#x}, command line: {cmdline}", entry.entry.0);

        let evt = || EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::EventFd);
        let reset_evt = evt()?;
        let exit_evt = evt()?;
        let status = GuestStatus::default();
        // Set by the i8042 on reset (so no vCPU re-enters the guest) and when the VM ends.
        let stop = Arc::new(AtomicBool::new(false));
        let (pio, serial, drained_evt) =
            build_devices(&vm, (&reset_evt, &stop), io.output, &status)?;
        let pio = Arc::new(pio);
        let cluster = io.cluster.unwrap_or_else(|| Box::new(NoCluster));
        let (mmio, mut offload) = build_offload(&vm, &mem, config, cluster)?;
        let mmio = Arc::new(mmio);
        let dsm = build_window(
            &vm,
            config,
            vm_memory::GuestMemoryBackend::num_regions(&mem) as u32,
        )?;
        if let Some(d) = &dsm {
            offload.attach_dsm(d.clone());
        }
        let dsm_threads = dsm.as_ref().map(Dsm::start).transpose()?;

        let counters = Arc::new(ExitCounters::default());
        let cpuid = vm.supported_cpuid()?;
        vcpu::install_kick_handler()?;
        let mut vcpus = Vec::new();
        for id in 0..config.vcpus {
            let v = Vcpu::new(vm.fd(), id, pio.clone(), mmio.clone(), counters.clone())?;
            v.configure(&BootState {
                cpuid: &cpuid,
                count: config.vcpus,
                entry: entry.entry.0,
                zero_page: entry.zero_page.0,
            })?;
            vcpus.push(v);
        }
        let (report_tx, report_rx) = channel();
        let probe = Arc::new(StatsProbe {
            start,
            counters: counters.clone(),
            kvm_files: vcpus.iter().filter_map(Vcpu::stats_file).collect(),
            device: offload.device(),
            dsm: dsm.clone(),
        });
        let mut threads = Vec::new();
        for v in vcpus {
            let exit = exit_evt.try_clone().map_err(VmmError::EventFd)?;
            threads.push(v.start(stop.clone(), report_tx.clone(), exit)?);
        }

        let input = SerialInput::new(serial, io.input, drained_evt);
        let events = ExitEvents {
            reset_evt,
            exit_evt,
            stop_evt: io.stop,
            seen: None,
        };
        let snapshots = io
            .snapshot
            .map(|(evt, path)| SnapshotWriter::new(probe.clone(), evt, path));
        let reason = run_event_loop(input, offload, snapshots, events, &report_rx);
        stop_vcpus(&stop, threads);
        if let Some(d) = &dsm {
            d.shutdown();
        }
        for t in dsm_threads.into_iter().flatten() {
            let _ = t.join();
        }
        let reason = reason?;
        let guest_status = *status.lock().unwrap_or_else(|p| p.into_inner());
        let last = probe.snapshot();
        // Keep the memory mapped until every vCPU thread is gone.
        drop(mem);
        Ok(VmOutcome {
            reason,
            guest_status,
            exits: last.exits,
            kvm_stats: last.kvm,
            offload: last.offload,
            dsm: last.dsm.unwrap_or_default(),
            elapsed: last.elapsed,
        })
    }
}

/// Creates the port-I/O devices: the console UART (with its irqfd) and the i8042, whose reset
/// raises the vCPU stop flag and writes the reset event.
fn build_devices(
    vm: &Vm,
    (reset_evt, halt): (&EventFd, &Arc<AtomicBool>),
    output: Box<dyn Write + Send>,
    status: &GuestStatus,
) -> Result<(Bus, Arc<Mutex<SerialDevice>>, EventFd), VmmError> {
    let evt = || EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::EventFd);
    let serial_irq = evt()?;
    vm.fd()
        .register_irqfd(&serial_irq, layout::SERIAL_IRQ)
        .map_err(VmmError::Irqfd)?;
    let drained = evt()?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        serial_irq,
        drained.try_clone().map_err(VmmError::EventFd)?,
        ConsoleOutput::new(output, status.clone()),
    )));
    let i8042 = Arc::new(Mutex::new(I8042::new(
        reset_evt.try_clone().map_err(VmmError::EventFd)?,
        halt.clone(),
    )));
    let mut pio = Bus::new();
    pio.insert(serial.clone(), COM1_BASE, COM1_LEN)?;
    pio.insert(i8042, I8042_BASE, I8042_LEN)?;
    Ok((pio, serial, drained))
}

/// Creates the coherent window (if configured): its DSM engine and the KVM memory slot that
/// maps its backing memory at [`layout::WINDOW_BASE`].
fn build_window(vm: &Vm, config: &VmConfig, slot: u32) -> Result<Option<Arc<Dsm>>, VmmError> {
    if config.window_bytes == 0 {
        return Ok(None);
    }
    let nodes = config.nodes.len().max(1) as u16;
    let dsm = Arc::new(
        Dsm::new(config.window_bytes, config.node_index as u16, nodes)?
            .with_prefetch(config.window_prefetch),
    );
    let (host, len) = dsm.backing();
    // SAFETY: the backing memory is owned by `dsm`, which `Vmm::run` keeps alive until every
    // vCPU thread has ended.
    unsafe { vm.register_slot(slot, layout::WINDOW_BASE, host, len) }?;
    Ok(Some(dsm))
}

/// Creates the offload device on the MMIO bus: its virtio-mmio window, the irqfd of its
/// interrupt line and one ioeventfd per queue, so queue notifications never exit to user space.
fn build_offload(
    vm: &Vm,
    mem: &vm_memory::GuestMemoryMmap,
    config: &VmConfig,
    cluster: Box<dyn ClusterLink>,
) -> Result<(Bus, OffloadHandler), VmmError> {
    let evt = || EventFd::new(libc::EFD_NONBLOCK).map_err(VmmError::EventFd);
    let identity = NodeIdentity {
        index: config.node_index,
        names: if config.nodes.is_empty() {
            vec![config.node_name().to_string()]
        } else {
            config.nodes.clone()
        },
    };
    let device = Arc::new(Mutex::new(OffloadDevice::new(identity)));
    let irqfd = evt()?;
    vm.fd()
        .register_irqfd(&irqfd, OFFLOAD_IRQ)
        .map_err(VmmError::Irqfd)?;
    let queue_evts = [evt()?, evt()?];
    let notify = IoEventAddress::Mmio(OFFLOAD_MMIO_BASE + mmio::QUEUE_NOTIFY_OFFSET);
    let mut clones = Vec::new();
    for (i, e) in queue_evts.iter().enumerate() {
        vm.fd()
            .register_ioevent(e, &notify, i as u32)
            .map_err(VmmError::Ioevent)?;
        clones.push(e.try_clone().map_err(VmmError::EventFd)?);
    }
    let transport = MmioTransport::new(device.clone(), mem.clone(), Interrupt::new(irqfd), clones);
    let mut bus = Bus::new();
    bus.insert(
        Arc::new(Mutex::new(transport)),
        OFFLOAD_MMIO_BASE,
        mmio::MMIO_LEN,
    )?;
    Ok((bus, OffloadHandler::new(device, queue_evts, cluster)))
}

/// Runs the event loop until the guest resets, a vCPU reports the end of the VM, or the
/// caller's stop event fires.
fn run_event_loop(
    input: SerialInput,
    offload: OffloadHandler,
    snapshots: Option<SnapshotWriter>,
    events: ExitEvents,
    reports: &Receiver<VcpuReport>,
) -> Result<ExitReason, VmmError> {
    let mut manager: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().map_err(VmmError::EventLoop)?;
    let watcher = Arc::new(Mutex::new(events));
    manager.add_subscriber(watcher.clone());
    manager.add_subscriber(Arc::new(Mutex::new(input)));
    manager.add_subscriber(Arc::new(Mutex::new(offload)));
    if let Some(s) = snapshots {
        manager.add_subscriber(Arc::new(Mutex::new(s)));
    }
    loop {
        manager.run_with_timeout(100).map_err(VmmError::EventLoop)?;
        // A reset or stop seen in the same round wins over a vCPU report: what a vCPU does
        // after the guest asked for its reset is not a failure of the VM.
        if let Some(reason) = watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .clone()
        {
            return Ok(reason);
        }
        if let Ok(report) = reports.try_recv() {
            return Ok(ExitReason::Vcpu {
                id: report.id,
                stop: report.stop,
            });
        }
    }
}

/// The events that end a VM, watched by the event loop.
struct ExitEvents {
    /// Written by the i8042 when the guest resets.
    reset_evt: EventFd,
    /// Written by a vCPU thread after it reported why the VM ends.
    exit_evt: EventFd,
    /// Written by the embedder (for example on SIGTERM) to stop the VM.
    stop_evt: Option<EventFd>,
    seen: Option<ExitReason>,
}

impl MutEventSubscriber for ExitEvents {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        use std::os::fd::AsRawFd;
        let fd = events.fd();
        if fd == self.reset_evt.as_raw_fd() {
            let _ = self.reset_evt.read();
            self.seen.get_or_insert(ExitReason::GuestReset);
        } else if let Some(stop) = self.stop_evt.as_ref().filter(|e| e.as_raw_fd() == fd) {
            let _ = stop.read();
            self.seen.get_or_insert(ExitReason::Stopped);
        } else {
            let _ = self.exit_evt.read();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let fds = [
            Some(&self.reset_evt),
            Some(&self.exit_evt),
            self.stop_evt.as_ref(),
        ];
        for fd in fds.into_iter().flatten() {
            if let Err(e) = ops.add(Events::new(fd, EventSet::IN)) {
                log::error!("cannot watch the VM exit events: {e:?}");
            }
        }
    }
}

/// Asks every vCPU thread to stop, kicking it out of `KVM_RUN` until it has ended.
fn stop_vcpus(stop: &AtomicBool, mut threads: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    let deadline = Instant::now() + VCPU_STOP_TIMEOUT;
    while !threads.is_empty() && Instant::now() < deadline {
        threads.retain(|t| {
            if t.is_finished() {
                return false;
            }
            // A kick that lands outside KVM_RUN is lost; the loop sends another.
            let _ = t.kill(vcpu::kick_signal());
            true
        });
        std::thread::sleep(Duration::from_millis(2));
    }
    for t in threads.iter() {
        log::warn!("vCPU thread {:?} did not stop in time", t.thread().name());
    }
    // Finished threads are joined here; stragglers are detached (the process is ending).
}
