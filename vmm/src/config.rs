//! The monitor's configuration as given by the user, and its validation.
//!
//! Everything here is checked before any KVM object is created, so a bad argument ends with a
//! one-line error and nothing half-built.

use std::path::PathBuf;

/// Smallest guest RAM we accept: below this a 6.1 kernel with an initramfs cannot boot.
pub const MIN_MEM_BYTES: u64 = 32 << 20;
/// Largest guest RAM we accept.
pub const MAX_MEM_BYTES: u64 = 1 << 40;
/// Most vCPUs we configure (MP table APIC ids are 8 bits, one id is taken by the IOAPIC).
pub const MAX_VCPUS: u8 = 64;
/// Default size of the coherent window (`--window`).
pub const DEFAULT_WINDOW_BYTES: u64 = 256 << 20;
/// Largest window we accept.
pub const MAX_WINDOW_BYTES: u64 = 64 << 30;
/// Most pages a remote read fault may prefetch.
pub const MAX_PREFETCH: u64 = 64;
/// x86 `COMMAND_LINE_SIZE` in Linux 6.1, including the terminating NUL.
pub const MAX_CMDLINE_LEN: usize = 2048;

/// Errors in the user's configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid size '{0}': expected a number with an optional K, M, G or T suffix")]
    BadSize(String),
    #[error("memory size {0} bytes is outside the supported range 32 MiB to 1 TiB")]
    MemOutOfRange(u64),
    #[error("memory size {0} bytes is not a multiple of 4 KiB")]
    MemUnaligned(u64),
    #[error("vCPU count {0} is outside the supported range 1 to {MAX_VCPUS}")]
    VcpusOutOfRange(u64),
    #[error("cannot read {what} '{path}'")]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} '{0}' is empty", what = .1)]
    EmptyFile(PathBuf, &'static str),
    #[error("kernel '{0}' is neither an ELF vmlinux nor a bzImage")]
    NotAKernel(PathBuf),
    #[error("node index {0} is not in the cluster")]
    BadNode(u32),
    #[error("node name {0:?} must be 1 to 15 letters, digits, '-' or '_'")]
    BadNodeName(String),
    #[error("extra kernel parameters {0:?} must be printable ASCII without ' --'")]
    BadCmdline(String),
    #[error("window size {0} bytes must be a multiple of 4 KiB, at most 64 GiB, with at least one page per node")]
    BadWindow(u64),
    #[error("window prefetch {0} is more than {MAX_PREFETCH} pages")]
    BadPrefetch(u64),
    #[error("{0} bytes of RAM would reach the window at {base:#x}: use less memory", base = crate::boot::layout::WINDOW_BASE)]
    RamOverlapsWindow(u64),
    #[error("kernel command line is {0} bytes, the guest kernel accepts at most {max}", max = MAX_CMDLINE_LEN - 1)]
    CmdlineTooLong(usize),
}

/// A validated description of the VM to run.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Guest kernel: an ELF `vmlinux` or a `bzImage`.
    pub kernel: PathBuf,
    /// Initramfs image, if any.
    pub initrd: Option<PathBuf>,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Kernel command line parameters appended to the monitor's defaults.
    pub cmdline_extra: String,
    /// Command the guest init runs (passed after `--` on the kernel command line).
    pub command: Vec<String>,
    /// Every node of the cluster by index (just this node when it runs alone).
    pub nodes: Vec<String>,
    /// This node's index in `nodes`.
    pub node_index: u32,
    /// Size of the coherent window shared with the other nodes (0: no window).
    pub window_bytes: u64,
    /// Pages after a remotely faulted page that are requested with it (0: no prefetch).
    pub window_prefetch: u64,
}

/// Guest-physical base of the offload device's virtio-mmio window.
pub const OFFLOAD_MMIO_BASE: u64 = 0xd000_0000;
/// Interrupt line (IOAPIC pin / GSI) of the offload device.
pub const OFFLOAD_IRQ: u32 = 5;

/// Parameters the monitor always puts on the kernel command line.
///
/// `reboot=k` makes the guest reset through the i8042 controller, which the monitor emulates
/// and treats as power-off; `panic=-1` turns a guest panic into an immediate reset instead of a
/// hang.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 quiet";

impl VmConfig {
    /// This node's name.
    pub fn node_name(&self) -> &str {
        self.nodes
            .get(self.node_index as usize)
            .map_or("a", String::as_str)
    }

    /// Checks sizes and files, so that later steps only fail for reasons outside the user's control.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_MEM_BYTES..=MAX_MEM_BYTES).contains(&self.mem_bytes) {
            return Err(ConfigError::MemOutOfRange(self.mem_bytes));
        }
        if !self.mem_bytes.is_multiple_of(4096) {
            return Err(ConfigError::MemUnaligned(self.mem_bytes));
        }
        if self.node_index as usize >= self.nodes.len().max(1) {
            return Err(ConfigError::BadNode(self.node_index));
        }
        if let Some(bad) = self.nodes.iter().find(|n| !valid_node_name(n)) {
            return Err(ConfigError::BadNodeName(bad.clone()));
        }
        self.validate_window()?;
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::VcpusOutOfRange(self.vcpus.into()));
        }
        check_file(&self.kernel, "kernel")?;
        check_kernel_format(&self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_file(initrd, "initrd")?;
        }
        let len = self.cmdline()?.len();
        if len >= MAX_CMDLINE_LEN {
            return Err(ConfigError::CmdlineTooLong(len));
        }
        Ok(())
    }

    fn validate_window(&self) -> Result<(), ConfigError> {
        let w = self.window_bytes;
        if self.window_prefetch > MAX_PREFETCH {
            return Err(ConfigError::BadPrefetch(self.window_prefetch));
        }
        if w == 0 {
            return Ok(());
        }
        let nodes = self.nodes.len().max(1) as u64;
        if !w.is_multiple_of(4096) || w > MAX_WINDOW_BYTES || w / 4096 < nodes {
            return Err(ConfigError::BadWindow(w));
        }
        let ram_end = crate::boot::memory::ram_ranges(self.mem_bytes)
            .last()
            .map_or(0, |(a, len)| a.0 + *len as u64);
        if ram_end > crate::boot::layout::WINDOW_BASE {
            return Err(ConfigError::RamOverlapsWindow(self.mem_bytes));
        }
        Ok(())
    }

    /// The full kernel command line: defaults, the user's extra parameters, then
    /// `-- vmm.argv64 xARG...` where each `xARG` is `x` followed by the argument in base64.
    ///
    /// The kernel splits init arguments on spaces and cannot carry quotes or control
    /// characters, so each argument travels encoded and the guest init decodes it: any
    /// argument a shell can pass arrives byte for byte.
    pub fn cmdline(&self) -> Result<String, ConfigError> {
        let mut line = String::from(DEFAULT_CMDLINE);
        // Device and node parameters go before `--`: after it everything belongs to init.
        line.push_str(&format!(
            " virtio_mmio.device=4K@{OFFLOAD_MMIO_BASE:#x}:{OFFLOAD_IRQ} vmm.node={}",
            self.node_name()
        ));
        let extra = self.cmdline_extra.trim();
        if !extra.is_empty() {
            if !extra.chars().all(|c| c.is_ascii_graphic() || c == ' ') || extra.contains(" --") {
                return Err(ConfigError::BadCmdline(extra.to_string()));
            }
            line.push(' ');
            line.push_str(extra);
        }
        if !self.command.is_empty() {
            line.push_str(" -- ");
            line.push_str(ARGV_MARKER);
            for arg in &self.command {
                line.push_str(" x");
                line.push_str(&base64(arg.as_bytes()));
            }
        }
        Ok(line)
    }
}

/// Node names travel on the kernel command line and in 16-byte fields of the device.
pub fn valid_node_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// First init argument when the command is base64-encoded (see [`VmConfig::cmdline`]).
pub const ARGV_MARKER: &str = "vmm.argv64";

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn check_file(path: &std::path::Path, what: &'static str) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Unreadable {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Err(ConfigError::Unreadable {
            what,
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::IsADirectory),
        });
    }
    if meta.len() == 0 {
        return Err(ConfigError::EmptyFile(path.to_path_buf(), what));
    }
    std::fs::File::open(path).map_err(|source| ConfigError::Unreadable {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}

fn check_kernel_format(path: &std::path::Path) -> Result<(), ConfigError> {
    let unreadable = |source| ConfigError::Unreadable {
        what: "kernel",
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    match crate::boot::loader::detect_format(&mut file).map_err(unreadable)? {
        Some(_) => Ok(()),
        None => Err(ConfigError::NotAKernel(path.to_path_buf())),
    }
}

/// Parses a size such as `512M`, `2G`, `65536` or `1.5G` into bytes (binary units).
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::BadSize(text.to_string());
    let t = text.trim();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let (num, shift) = match t.chars().last().ok_or_else(bad)? {
        'k' | 'K' => (&t[..t.len() - 1], 10),
        'm' | 'M' => (&t[..t.len() - 1], 20),
        'g' | 'G' => (&t[..t.len() - 1], 30),
        't' | 'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(1u64 << shift).ok_or_else(bad);
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let bytes = f * (1u64 << shift) as f64;
    if !f.is_finite() || f < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> VmConfig {
        VmConfig {
            kernel: PathBuf::from("/nonexistent"),
            initrd: None,
            mem_bytes: 256 << 20,
            vcpus: 1,
            cmdline_extra: String::new(),
            command: vec![],
            nodes: vec!["a".into()],
            node_index: 0,
            window_bytes: DEFAULT_WINDOW_BYTES,
            window_prefetch: 0,
        }
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(
            parse_size("64MiB".trim_end_matches("iB")).unwrap(),
            64 << 20
        );
        for bad in [
            "",
            "M",
            "-1G",
            "12Q",
            "1e400",
            "99999999999999999999T",
            "NaN",
        ] {
            assert!(parse_size(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn impossible_memory_and_vcpus_are_rejected() {
        let mut c = cfg();
        c.mem_bytes = 1 << 20;
        assert!(matches!(c.validate(), Err(ConfigError::MemOutOfRange(_))));
        c.mem_bytes = (256 << 20) + 1;
        assert!(matches!(c.validate(), Err(ConfigError::MemUnaligned(_))));
        c.mem_bytes = 256 << 20;
        c.vcpus = 0;
        assert!(matches!(c.validate(), Err(ConfigError::VcpusOutOfRange(0))));
        c.vcpus = 1;
        assert!(matches!(c.validate(), Err(ConfigError::Unreadable { .. })));
    }

    #[test]
    fn command_is_appended_encoded_after_double_dash() {
        let mut c = cfg();
        c.cmdline_extra = " loglevel=8 ".into();
        c.command = vec![
            "sh".into(),
            "-c".into(),
            "echo \"a b\"\n".into(),
            String::new(),
        ];
        assert_eq!(
            c.cmdline().unwrap(),
            format!("{DEFAULT_CMDLINE} virtio_mmio.device=4K@0xd0000000:5 vmm.node=a loglevel=8 -- vmm.argv64 xc2g= xLWM= xZWNobyAiYSBiIgo= x")
        );
        c.cmdline_extra = "a\tb".into();
        assert!(matches!(c.cmdline(), Err(ConfigError::BadCmdline(_))));
        c.cmdline_extra = "a -- b".into();
        assert!(matches!(c.cmdline(), Err(ConfigError::BadCmdline(_))));
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn overlong_command_line_is_rejected() {
        let dir = std::env::temp_dir().join(format!("vmm-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kernel = dir.join("k");
        std::fs::write(&kernel, b"not a kernel").unwrap();
        let mut c = cfg();
        c.kernel = kernel.clone();
        assert!(matches!(c.validate(), Err(ConfigError::NotAKernel(_))));
        std::fs::write(&kernel, b"\x7fELF").unwrap();
        c.command = vec!["x".repeat(3000)];
        assert!(matches!(c.validate(), Err(ConfigError::CmdlineTooLong(_))));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
