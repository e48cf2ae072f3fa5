//! KVM's own per-vCPU statistics (the binary stats interface, `KVM_GET_STATS_FD`), read when a
//! vCPU ends. Unlike [`crate::stats`], these count every exit, including the ones KVM handles
//! in the kernel (HLT, interrupts, NPT faults), so they say what a guest really costs.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;

use kvm_ioctls::VcpuFd;
use vmm_sys_util::ioctl::ioctl;
use vmm_sys_util::ioctl_io_nr;

const KVMIO: u32 = 0xae;
ioctl_io_nr!(KVM_GET_STATS_FD, KVMIO, 0xce);

/// Size of `struct kvm_stats_header` and of the fixed part of `struct kvm_stats_desc`.
const HEADER_LEN: usize = 24;
const DESC_FIXED_LEN: usize = 16;
/// Most descriptors we accept from the kernel, to bound what a bad header can make us read.
const MAX_DESCS: u32 = 4096;

/// Counter values by name; only cumulative counters of one 64-bit value are kept.
pub type KvmStats = BTreeMap<String, u64>;

/// Errors reading KVM statistics.
#[derive(Debug, thiserror::Error)]
pub enum KvmStatsError {
    #[error("KVM_GET_STATS_FD failed")]
    Open(#[source] std::io::Error),
    #[error("cannot read the stats file")]
    Read(#[source] std::io::Error),
    #[error("malformed stats header")]
    Malformed,
}

/// Opens a vCPU's stats file. Reading it later does not involve the vCPU (no ioctl, so no
/// wait for a running vCPU to exit), so it can be sampled at any time from any thread.
pub fn open_vcpu_stats(vcpu: &VcpuFd) -> Result<File, KvmStatsError> {
    // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new file descriptor or -1; the
    // vCPU fd is valid for the duration of the call.
    let fd = unsafe { ioctl(vcpu, KVM_GET_STATS_FD()) };
    if fd < 0 {
        return Err(KvmStatsError::Open(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Reads every single-value cumulative counter from stats files, summed.
pub fn read_all(files: &[File]) -> KvmStats {
    let mut total = KvmStats::new();
    for f in files {
        match parse(f) {
            Ok(s) => merge(&mut total, &s),
            Err(e) => log::debug!("KVM statistics unreadable: {e}"),
        }
    }
    total
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Parses the stats file (header, descriptors, data) read through `file`.
fn parse(file: &impl FileExt) -> Result<KvmStats, KvmStatsError> {
    let mut header = [0u8; HEADER_LEN];
    file.read_exact_at(&mut header, 0)
        .map_err(KvmStatsError::Read)?;
    let field = |i: usize| u32_at(&header, 4 * i).ok_or(KvmStatsError::Malformed);
    let (name_size, num_desc, desc_off, data_off) = (field(1)?, field(2)?, field(4)?, field(5)?);
    if num_desc > MAX_DESCS || name_size == 0 || name_size > 256 {
        return Err(KvmStatsError::Malformed);
    }
    let desc_len = DESC_FIXED_LEN + name_size as usize;
    let mut descs = vec![0u8; desc_len * num_desc as usize];
    file.read_exact_at(&mut descs, u64::from(desc_off))
        .map_err(KvmStatsError::Read)?;
    let mut stats = KvmStats::new();
    for d in descs.chunks_exact(desc_len) {
        let flags = u32_at(d, 0).ok_or(KvmStatsError::Malformed)?;
        let size = u16::from_le_bytes([d[6], d[7]]);
        let offset = u32_at(d, 8).ok_or(KvmStatsError::Malformed)?;
        const TYPE_MASK: u32 = 0xf;
        const TYPE_CUMULATIVE: u32 = 0;
        if flags & TYPE_MASK != TYPE_CUMULATIVE || size != 1 {
            continue;
        }
        let name_bytes = &d[DESC_FIXED_LEN..];
        let end = name_bytes
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(name_bytes.len());
        let name = String::from_utf8_lossy(&name_bytes[..end]).into_owned();
        let mut value = [0u8; 8];
        file.read_exact_at(&mut value, u64::from(data_off) + u64::from(offset))
            .map_err(KvmStatsError::Read)?;
        stats.insert(name, u64::from_le_bytes(value));
    }
    Ok(stats)
}

/// Adds `other` into `total`, counter by counter.
pub fn merge(total: &mut KvmStats, other: &KvmStats) {
    for (k, v) in other {
        *total.entry(k.clone()).or_default() += v;
    }
}

/// The exit-related counters, as `name=value` pairs separated by spaces.
pub fn format_exits(stats: &KvmStats) -> String {
    stats
        .iter()
        .filter(|(k, _)| {
            k.contains("exits") || k.as_str() == "insn_emulation" || k.as_str() == "hypercalls"
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stats file image in memory.
    struct Mem(Vec<u8>);
    impl FileExt for Mem {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
            let off = offset as usize;
            if off >= self.0.len() {
                return Ok(0);
            }
            let n = buf.len().min(self.0.len() - off);
            buf[..n].copy_from_slice(&self.0[off..off + n]);
            Ok(n)
        }
        fn write_at(&self, _: &[u8], _: u64) -> std::io::Result<usize> {
            unimplemented!()
        }
    }

    fn image(descs: &[(&str, u32, u16, u64)]) -> Vec<u8> {
        let name_size = 48u32;
        let desc_off = HEADER_LEN as u32 + 16;
        let desc_len = DESC_FIXED_LEN + name_size as usize;
        let data_off = desc_off + (desc_len * descs.len()) as u32;
        let mut b = vec![];
        for v in [
            0,
            name_size,
            descs.len() as u32,
            HEADER_LEN as u32,
            desc_off,
            data_off,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.resize(desc_off as usize, 0);
        for (i, (name, flags, size, _)) in descs.iter().enumerate() {
            b.extend_from_slice(&flags.to_le_bytes());
            b.extend_from_slice(&0i16.to_le_bytes());
            b.extend_from_slice(&size.to_le_bytes());
            b.extend_from_slice(&(8 * i as u32).to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            let mut n = name.as_bytes().to_vec();
            n.resize(name_size as usize, 0);
            b.extend_from_slice(&n);
        }
        for (_, _, _, v) in descs {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn cumulative_single_counters_are_read() {
        let img = image(&[
            ("exits", 0, 1, 42),
            ("io_exits", 0, 1, 7),
            ("halt_poll_hist", 0x30, 32, 1),
            ("max_x", 3, 1, 9),
        ]);
        let stats = parse(&Mem(img)).unwrap();
        assert_eq!(stats.len(), 2);
        assert_eq!(stats["exits"], 42);
        assert_eq!(format_exits(&stats), "exits=42 io_exits=7");
    }

    #[test]
    fn malformed_headers_are_errors() {
        let mut img = image(&[("exits", 0, 1, 1)]);
        img[8..12].copy_from_slice(&100_000u32.to_le_bytes());
        assert!(parse(&Mem(img)).is_err());
        assert!(parse(&Mem(vec![1, 2, 3])).is_err());
        let mut img = image(&[("exits", 0, 1, 1)]);
        img.truncate(img.len() - 4);
        assert!(parse(&Mem(img)).is_err());
    }
}
