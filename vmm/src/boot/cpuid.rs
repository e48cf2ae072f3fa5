//! Per-vCPU CPUID: what KVM supports, with this vCPU's topology and the hypervisor bit.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// Leaf with the feature flags and the initial APIC id.
const LEAF_FEATURES: u32 = 0x1;
/// Extended topology leaves (Intel, also reported by KVM on AMD hosts).
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
/// AMD extended APIC id leaf.
const LEAF_AMD_EXT_APIC: u32 = 0x8000_001e;
/// ECX bit 31 of leaf 1: running under a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// EBX bits 31..24 of leaf 1: initial APIC id; bits 23..16: logical processors per package.
const EBX_APIC_ID_SHIFT: u32 = 24;
const EBX_CPU_COUNT_SHIFT: u32 = 16;
/// EDX bit 28 of leaf 1: the logical-processor-count field is valid.
const EDX_HTT: u32 = 1 << 28;

/// Adjusts KVM's supported CPUID for vCPU `id` of `count`.
pub fn filter(cpuid: &mut CpuId, id: u8, count: u8) {
    for entry in cpuid.as_mut_slice() {
        patch_entry(entry, id, count);
    }
}

fn patch_entry(entry: &mut kvm_cpuid_entry2, id: u8, count: u8) {
    match entry.function {
        LEAF_FEATURES => {
            entry.ecx |= ECX_HYPERVISOR;
            entry.ebx = (entry.ebx & 0x0000_ffff)
                | (u32::from(id) << EBX_APIC_ID_SHIFT)
                | (u32::from(count) << EBX_CPU_COUNT_SHIFT);
            if count > 1 {
                entry.edx |= EDX_HTT;
            }
        }
        LEAF_TOPOLOGY | LEAF_TOPOLOGY_V2 => entry.edx = u32::from(id),
        LEAF_AMD_EXT_APIC => entry.eax = u32::from(id),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apic_ids_and_hypervisor_bit_are_set() {
        let mut e = kvm_cpuid_entry2 {
            function: LEAF_FEATURES,
            ebx: 0xaabb_1234,
            ..Default::default()
        };
        patch_entry(&mut e, 3, 4);
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_eq!(e.ebx & 0xffff, 0x1234);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        let mut t = kvm_cpuid_entry2 {
            function: LEAF_TOPOLOGY,
            index: 1,
            ..Default::default()
        };
        patch_entry(&mut t, 5, 8);
        assert_eq!(t.edx, 5);
    }
}
