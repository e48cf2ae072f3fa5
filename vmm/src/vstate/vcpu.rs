//! vCPUs: configuration for boot, the thread that runs one, and the handling of each exit.
//!
//! A vCPU thread moves through explicit states: `Running` (in `KVM_RUN` or handling an exit)
//! until either the VM asks it to stop (`stop` flag plus a kick signal that interrupts
//! `KVM_RUN`) or the guest does something that ends the VM (reset, triple fault, failed entry),
//! which the thread reports on a channel before it ends. [`Vcpu::handle_kvm_exit`] runs the
//! guest once and turns the exit into a [`VcpuEmulation`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::boot::{cpuid, regs};
use crate::devices::bus::Bus;
use crate::stats::{ExitCounters, ExitKind};
use crate::vstate::kvm_stats;

/// Errors creating or configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("cannot create vCPU {0}")]
    Create(u8, #[source] kvm_ioctls::Error),
    #[error("cannot set {what} of vCPU {id}")]
    Configure {
        id: u8,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM accepted only {set} of {total} boot MSRs on vCPU {id}")]
    Msrs { id: u8, set: usize, total: usize },
    #[error("boot state")]
    Regs(#[from] regs::RegsError),
    #[error("cannot install the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
    #[error("cannot start the thread of vCPU {0}")]
    Spawn(u8, #[source] std::io::Error),
}

/// How a vCPU ended the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuStop {
    /// The guest asked for a reset or power-off through KVM (`KVM_EXIT_SYSTEM_EVENT`).
    SystemEvent(u32),
    /// Triple fault.
    TripleFault { registers: String },
    /// KVM could not enter the guest.
    FailedEntry { reason: u64, registers: String },
    /// KVM hit an internal error (for example an instruction it cannot emulate).
    InternalError { suberror: u32, registers: String },
    /// An exit the monitor does not know how to handle.
    Unexpected { exit: String, registers: String },
    /// `KVM_RUN` itself failed.
    RunFailed { errno: i32, registers: String },
}

/// What one run of the guest amounted to.
#[derive(Debug, PartialEq, Eq)]
pub enum VcpuEmulation {
    /// The exit was handled; run again.
    Handled,
    /// `KVM_RUN` was interrupted by a signal; check whether to stop.
    Interrupted,
    /// The VM must end.
    Stopped(VcpuStop),
}

/// A report from a vCPU thread that ended the VM.
#[derive(Debug)]
pub struct VcpuReport {
    pub id: u8,
    pub stop: VcpuStop,
}

/// One vCPU and the buses its exits are routed to.
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    counters: Arc<ExitCounters>,
}

/// Everything a vCPU needs to start at the kernel's entry point.
pub struct BootState<'a> {
    pub cpuid: &'a CpuId,
    pub count: u8,
    pub entry: u64,
    pub zero_page: u64,
}

impl Vcpu {
    /// Creates vCPU `id` in `vm`.
    pub fn new(
        vm: &kvm_ioctls::VmFd,
        id: u8,
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        counters: Arc<ExitCounters>,
    ) -> Result<Self, VcpuError> {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(|e| VcpuError::Create(id, e))?;
        Ok(Self {
            id,
            fd,
            pio,
            mmio,
            counters,
        })
    }

    /// The vCPU's KVM statistics file, if the kernel offers one.
    pub fn stats_file(&self) -> Option<std::fs::File> {
        match kvm_stats::open_vcpu_stats(&self.fd) {
            Ok(f) => Some(f),
            Err(e) => {
                log::debug!("vcpu{}: no KVM statistics: {e}", self.id);
                None
            }
        }
    }

    /// The KVM vCPU, for callers that set up state other than the Linux boot state.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    fn cfg_err(&self, what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
        let id = self.id;
        move |source| VcpuError::Configure { id, what, source }
    }

    /// Sets CPUID, MSRs, FPU, local APIC and registers for the 64-bit boot protocol. Only the
    /// boot vCPU starts at the entry point; the others wait for the kernel's INIT/SIPI.
    pub fn configure(&self, boot: &BootState<'_>) -> Result<(), VcpuError> {
        let mut cpuid = boot.cpuid.clone();
        cpuid::filter(&mut cpuid, self.id, boot.count);
        self.fd.set_cpuid2(&cpuid).map_err(self.cfg_err("CPUID"))?;
        let msrs = regs::boot_msrs()?;
        let set = self.fd.set_msrs(&msrs).map_err(self.cfg_err("MSRs"))?;
        if set != msrs.as_slice().len() {
            let total = msrs.as_slice().len();
            return Err(VcpuError::Msrs {
                id: self.id,
                set,
                total,
            });
        }
        self.fd
            .set_fpu(&regs::boot_fpu())
            .map_err(self.cfg_err("FPU"))?;
        self.set_lint()?;
        if self.id == 0 {
            self.fd
                .set_regs(&regs::boot_regs(boot.entry, boot.zero_page))
                .map_err(self.cfg_err("registers"))?;
            let mut sregs = self.fd.get_sregs().map_err(self.cfg_err("sregs"))?;
            regs::setup_sregs(&mut sregs);
            self.fd.set_sregs(&sregs).map_err(self.cfg_err("sregs"))?;
        }
        Ok(())
    }

    /// Wires LINT0 to ExtINT (the PIC) and LINT1 to NMI, as firmware would.
    fn set_lint(&self) -> Result<(), VcpuError> {
        const APIC_LVT0: usize = 0x350;
        const APIC_LVT1: usize = 0x360;
        const MODE_EXTINT: u32 = 0x7;
        const MODE_NMI: u32 = 0x4;
        let mut lapic = self.fd.get_lapic().map_err(self.cfg_err("local APIC"))?;
        for (off, mode) in [(APIC_LVT0, MODE_EXTINT), (APIC_LVT1, MODE_NMI)] {
            let mut b = [0u8; 4];
            for (d, s) in b.iter_mut().zip(&lapic.regs[off..off + 4]) {
                *d = *s as u8;
            }
            let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
            for (d, s) in lapic.regs[off..off + 4].iter_mut().zip(v.to_le_bytes()) {
                *d = s as _;
            }
        }
        self.fd
            .set_lapic(&lapic)
            .map_err(self.cfg_err("local APIC"))
    }

    /// Runs the guest until its next exit to user space and handles that exit.
    pub fn handle_kvm_exit(&mut self) -> VcpuEmulation {
        let (kind, outcome) = match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                if !self.pio.read(u64::from(port), data) {
                    data.fill(0xff); // nothing there: an open bus reads as all ones
                }
                (ExitKind::IoIn, VcpuEmulation::Handled)
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                self.pio.write(u64::from(port), data);
                (ExitKind::IoOut, VcpuEmulation::Handled)
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !self.mmio.read(addr, data) {
                    data.fill(0xff);
                }
                (ExitKind::MmioRead, VcpuEmulation::Handled)
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                self.mmio.write(addr, data);
                (ExitKind::MmioWrite, VcpuEmulation::Handled)
            }
            Ok(VcpuExit::Hlt) => (ExitKind::Hlt, VcpuEmulation::Handled),
            Ok(VcpuExit::Shutdown) => (ExitKind::Shutdown, self.stop_triple_fault()),
            Ok(VcpuExit::SystemEvent(kind, _)) => (
                ExitKind::SystemEvent,
                VcpuEmulation::Stopped(VcpuStop::SystemEvent(kind)),
            ),
            Ok(VcpuExit::FailEntry(reason, _)) => (ExitKind::Other, self.stop_failed_entry(reason)),
            Ok(VcpuExit::InternalError) => (ExitKind::Other, self.stop_internal_error()),
            Ok(VcpuExit::Intr) => (ExitKind::Interrupted, VcpuEmulation::Interrupted),
            Ok(other) => {
                let exit = format!("{other:?}");
                (ExitKind::Other, self.stop_unexpected(exit))
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                (ExitKind::Interrupted, VcpuEmulation::Interrupted)
            }
            Err(e) => {
                let registers = self.dump_registers();
                let stop = VcpuStop::RunFailed {
                    errno: e.errno(),
                    registers,
                };
                (ExitKind::Other, VcpuEmulation::Stopped(stop))
            }
        };
        self.counters.record(kind);
        outcome
    }

    fn stop_triple_fault(&self) -> VcpuEmulation {
        let registers = self.dump_registers();
        VcpuEmulation::Stopped(VcpuStop::TripleFault { registers })
    }

    fn stop_failed_entry(&self, reason: u64) -> VcpuEmulation {
        let registers = self.dump_registers();
        VcpuEmulation::Stopped(VcpuStop::FailedEntry { reason, registers })
    }

    fn stop_internal_error(&mut self) -> VcpuEmulation {
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active member.
        let suberror = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
        let registers = self.dump_registers();
        VcpuEmulation::Stopped(VcpuStop::InternalError {
            suberror,
            registers,
        })
    }

    fn stop_unexpected(&self, exit: String) -> VcpuEmulation {
        let registers = self.dump_registers();
        VcpuEmulation::Stopped(VcpuStop::Unexpected { exit, registers })
    }

    /// The vCPU's registers, formatted for an error report.
    pub fn dump_registers(&self) -> String {
        let mut out = format!("vCPU {}:", self.id);
        match self.fd.get_regs() {
            Ok(r) => out.push_str(&format!(
                "\n  rip={:#018x} rsp={:#018x} rflags={:#x}\n  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n  rsi={:#018x} rdi={:#018x} rbp={:#018x}",
                r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp
            )),
            Err(e) => out.push_str(&format!(" registers unavailable ({e})")),
        }
        match self.fd.get_sregs() {
            Ok(s) => out.push_str(&format!(
                "\n  cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} cs={:#x} (dpl {})",
                s.cr0, s.cr2, s.cr3, s.cr4, s.efer, s.cs.selector, s.cs.dpl
            )),
            Err(e) => out.push_str(&format!(" sregs unavailable ({e})")),
        }
        out
    }

    /// Runs this vCPU on its own thread until `stop` is set or the guest ends the VM; in the
    /// latter case the reason goes to `reports` and `exit_evt` wakes the monitor.
    pub fn start(
        mut self,
        stop: Arc<AtomicBool>,
        reports: Sender<VcpuReport>,
        exit_evt: EventFd,
    ) -> Result<JoinHandle<()>, VcpuError> {
        let id = self.id;
        std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    match self.handle_kvm_exit() {
                        VcpuEmulation::Handled | VcpuEmulation::Interrupted => {}
                        VcpuEmulation::Stopped(reason) => {
                            let _ = reports.send(VcpuReport { id, stop: reason });
                            if let Err(e) = exit_evt.write(1) {
                                log::error!("vcpu{id}: cannot signal the exit event: {e}");
                            }
                            break;
                        }
                    }
                }
                log::debug!("vcpu{id}: thread ends");
            })
            .map_err(|e| VcpuError::Spawn(id, e))
    }
}

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler so the signal interrupts `KVM_RUN` instead of killing us.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    register_signal_handler(kick_signal(), handle_kick).map_err(VcpuError::Signal)
}
