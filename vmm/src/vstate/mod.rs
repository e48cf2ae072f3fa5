//! KVM state: the VM (memory slots, irqchip, PIT) and its vCPUs (state, threads, exit handling).

pub mod kvm_stats;
pub mod vcpu;
pub mod vm;
