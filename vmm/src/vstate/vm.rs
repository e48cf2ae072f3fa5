//! The KVM VM: creation, the in-kernel irqchip and PIT, and guest memory slots.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Errors setting up the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not supported (need 12)")]
    ApiVersion(i32),
    #[error("KVM lacks the capability {0}")]
    MissingCap(&'static str),
    #[error("cannot create the VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("cannot set up the {0}")]
    Setup(&'static str, #[source] kvm_ioctls::Error),
    #[error("cannot register guest memory at {addr:#x}")]
    MemorySlot {
        addr: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("cannot read the CPUID supported by KVM")]
    Cpuid(#[source] kvm_ioctls::Error),
}

/// Address of the three pages KVM needs for the TSS on Intel hosts (inside the MMIO gap).
const KVM_TSS_ADDR: usize = 0xfffb_d000;

/// A KVM VM with an in-kernel irqchip and PIT.
pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
}

impl Vm {
    /// Opens `/dev/kvm`, checks what the monitor relies on, and creates the VM and its irqchip.
    pub fn new() -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        if kvm.get_api_version() != 12 {
            return Err(VmError::ApiVersion(kvm.get_api_version()));
        }
        for (cap, name) in [
            (kvm_ioctls::Cap::Irqchip, "IRQCHIP"),
            (kvm_ioctls::Cap::Irqfd, "IRQFD"),
            (kvm_ioctls::Cap::Ioeventfd, "IOEVENTFD"),
            (kvm_ioctls::Cap::Pit2, "PIT2"),
            (kvm_ioctls::Cap::UserMemory, "USER_MEMORY"),
            (kvm_ioctls::Cap::ImmediateExit, "IMMEDIATE_EXIT"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCap(name));
            }
        }
        let fd = kvm.create_vm().map_err(VmError::CreateVm)?;
        fd.set_tss_address(KVM_TSS_ADDR)
            .map_err(|e| VmError::Setup("TSS address", e))?;
        fd.create_irq_chip()
            .map_err(|e| VmError::Setup("in-kernel irqchip", e))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(|e| VmError::Setup("PIT", e))?;
        Ok(Self { kvm, fd })
    }

    /// Registers every region of `mem` as a KVM memory slot.
    pub fn register_memory(&self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let addr = region.start_addr().raw_value();
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| VmError::MemorySlot {
                    addr,
                    source: kvm_ioctls::Error::new(libc::EINVAL),
                })?;
            let slot_desc = kvm_userspace_memory_region {
                slot: slot as u32,
                guest_phys_addr: addr,
                memory_size: region.len(),
                userspace_addr: host as u64,
                flags: 0,
            };
            // SAFETY: `host` points at a mapping of `region.len()` bytes owned by `mem`, which
            // the caller keeps alive for as long as the VM runs (the Vmm owns both).
            unsafe { self.fd.set_user_memory_region(slot_desc) }
                .map_err(|source| VmError::MemorySlot { addr, source })?;
        }
        Ok(())
    }

    /// Registers `len` bytes of host memory at `host` as memory slot `slot` at guest-physical
    /// `gpa`.
    ///
    /// # Safety
    /// `host..host + len` must stay mapped for as long as the VM can run.
    pub unsafe fn register_slot(
        &self,
        slot: u32,
        gpa: u64,
        host: u64,
        len: u64,
    ) -> Result<(), VmError> {
        let region = kvm_userspace_memory_region {
            slot,
            guest_phys_addr: gpa,
            memory_size: len,
            userspace_addr: host,
            flags: 0,
        };
        // SAFETY: the caller guarantees the mapping outlives the VM's use of it.
        unsafe { self.fd.set_user_memory_region(region) }
            .map_err(|source| VmError::MemorySlot { addr: gpa, source })
    }

    /// The CPUID KVM supports on this host, the base of every vCPU's CPUID.
    pub fn supported_cpuid(&self) -> Result<kvm_bindings::CpuId, VmError> {
        self.kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(VmError::Cpuid)
    }

    /// The VM file descriptor.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }
}
