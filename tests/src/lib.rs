//! The test-host harness: every end-to-end test and benchmark runs `vmm` through it.
//!
//! Where the CPU exposes hardware virtualization (`vmx`/`svm` in /proc/cpuinfo) a script runs
//! directly on this machine (**native** host). Otherwise (the build machines, see PLATFORM.md)
//! the harness boots the **emulated** test host: QEMU TCG emulating an AMD CPU with SVM, running
//! Debian's cloud kernel with `kvm_amd`, so `/dev/kvm` inside it is real KVM. The script, the
//! `vmm` binary with its shared libraries and the guest images are appended to the test host's
//! initramfs as an extra cpio archive; the test-host init runs `/testhost/run.sh`, prints
//! `testhost: exit-status=N` and powers off. The harness parses that, tears QEMU down, and keeps
//! the console log under `build/testhost-runs/`.

use std::fmt;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod bench;

/// Marker the test-host init prints after the script: `testhost: exit-status=N`.
pub const TESTHOST_STATUS: &str = "testhost: exit-status=";
/// Marker the test-host init prints before running the script.
pub const TESTHOST_READY: &str = "testhost: ready";

/// Addresses of the two test hosts of [`Harness::run_pair`] on their private network.
const PAIR_IP_A: &str = "10.0.2.1";
const PAIR_IP_B: &str = "10.0.2.2";

/// Shell lines bringing up the test host's network card with `ip`.
fn pair_net_setup(ip: &'static str) -> &'static str {
    match ip {
        PAIR_IP_A => {
            "ip link set eth0 up && ip addr add 10.0.2.1/24 dev eth0 || echo 'testhost: net-error'"
        }
        _ => {
            "ip link set eth0 up && ip addr add 10.0.2.2/24 dev eth0 || echo 'testhost: net-error'"
        }
    }
}

/// QEMU arguments for a virtio-net card on a socket network (`listen=` or `connect=`).
fn net_args(socket: &str, mac_suffix: u8) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!("socket,id=net0,{socket}"),
        "-device".into(),
        format!("virtio-net-pci,netdev=net0,mac=52:54:00:12:34:{mac_suffix:02x}"),
    ]
}

/// A TCP port on loopback that nobody listens on right now.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// What the test-host init prints when the overlay did not arrive.
const NO_SCRIPT: &str = "testhost: no /testhost/run.sh";

/// The kind of host a run used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// This machine, which has hardware virtualization.
    Native,
    /// QEMU TCG with nested SVM, real KVM inside.
    Emulated,
}

impl fmt::Display for HostKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostKind::Native => write!(f, "native (this machine's hardware KVM)"),
            HostKind::Emulated => write!(f, "emulated (QEMU TCG with nested SVM, real KVM inside)"),
        }
    }
}

/// Which kind of host this machine needs, from the CPU flags (`TESTHOST=emulated|native`
/// overrides).
pub fn host_kind() -> HostKind {
    match std::env::var("TESTHOST").as_deref() {
        Ok("emulated") => return HostKind::Emulated,
        Ok("native") => return HostKind::Native,
        _ => {}
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if hw {
        HostKind::Native
    } else {
        HostKind::Emulated
    }
}

/// Whether `vmm` reported a guest triple fault in a script's output.
fn guest_triple_faulted(output: &str) -> bool {
    output
        .lines()
        .any(|l| l.contains("failed on vCPU") && l.ends_with(": triple fault"))
}

/// What a script needs besides `vmm` and the guest images.
#[derive(Debug, Clone, Default)]
pub struct RunOpts {
    /// Extra executables, put on the script's PATH (with their shared libraries).
    pub binaries: Vec<PathBuf>,
    /// Extra data files: (source, absolute destination in the test host).
    pub files: Vec<(PathBuf, String)>,
    /// How long the whole run may take (default 20 minutes).
    pub timeout: Option<Duration>,
    /// Name used for the run's log folder.
    pub name: String,
    /// How many times an emulated run is repeated when an L2 guest triple-faulted in it (the
    /// emulated host's own defect, docs/dsm.md); `None` = once. Native runs are never repeated.
    pub triple_fault_retries: Option<u32>,
}

/// The result of one script run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub host: HostKind,
    /// The script's exit status.
    pub status: i32,
    /// What the script printed (the test host's own boot messages are left out), `\r` removed.
    pub output: String,
    /// Wall time of the whole run, boot and teardown included.
    pub elapsed: Duration,
    /// Runs it took (more than 1 when a guest triple-faulted in the emulated host).
    pub attempts: u32,
}

/// Paths of everything a run needs.
#[derive(Debug, Clone)]
pub struct Harness {
    pub root: PathBuf,
    pub vmm_bin: PathBuf,
    pub guest_dir: PathBuf,
    pub testhost_dir: PathBuf,
}

impl Harness {
    /// Finds the repository, the release `vmm` binary and the built images; a clear error tells
    /// what to build when something is missing.
    pub fn locate() -> Result<Self> {
        let root = match std::env::var_os("OFFLOAD_ROOT") {
            Some(r) => PathBuf::from(r),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        };
        let root = root.canonicalize().context("repository root")?;
        let vmm_bin = std::env::var_os("VMM_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/release/vmm"));
        let h = Harness {
            guest_dir: root.join("build/images/guest"),
            testhost_dir: root.join("build/images/testhost"),
            vmm_bin,
            root,
        };
        for (p, fix) in [
            (&h.vmm_bin, "cargo build --release -p vmm"),
            (&h.guest_dir.join("vmlinux"), "images/build.sh"),
            (&h.guest_dir.join("initramfs.cpio.gz"), "images/build.sh"),
            (&h.testhost_dir.join("vmlinuz"), "images/build.sh"),
            (
                &h.testhost_dir.join("initramfs-base.cpio.gz"),
                "images/build.sh",
            ),
        ] {
            if !p.is_file() {
                bail!("{} is missing: run `{fix}` first", p.display());
            }
        }
        Ok(h)
    }

    /// The guest kernel's release string, as written by the image build.
    pub fn guest_kernel_release(&self) -> Result<String> {
        let p = self.guest_dir.join("kernel.release");
        Ok(fs::read_to_string(&p)
            .with_context(|| format!("reading {}", p.display()))?
            .trim()
            .to_string())
    }

    /// Runs `script` (POSIX sh) on a test host where `vmm` is on the PATH and finds its default
    /// guest images, and returns its status and output.
    pub fn run(&self, script: &str, opts: &RunOpts) -> Result<RunResult> {
        let kind = host_kind();
        eprintln!("[testhost] {}: host {kind}", opts.name);
        let dir = self.run_dir(&opts.name)?;
        let _lock = self.lock()?;
        match kind {
            HostKind::Native => self.run_native(script, opts, &dir),
            HostKind::Emulated => self.run_emulated(script, opts, &dir),
        }
    }

    fn run_dir(&self, name: &str) -> Result<PathBuf> {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = self
            .root
            .join("build/testhost-runs")
            .join(format!("{safe}-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).ok();
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// One test host at a time: two emulated hosts on two cores would only slow each other.
    fn lock(&self) -> Result<File> {
        let path = self.root.join("build/testhost.lock");
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        f.lock().context("locking the test host")?;
        Ok(f)
    }

    fn run_native(&self, script: &str, opts: &RunOpts, dir: &Path) -> Result<RunResult> {
        let start = Instant::now();
        let bin = dir.join("bin");
        fs::create_dir_all(&bin)?;
        fs::copy(&self.vmm_bin, bin.join("vmm"))?;
        for b in &opts.binaries {
            fs::copy(b, bin.join(file_name(b)?))?;
        }
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("PATH", path)
            .env("VMM_IMAGE_DIR", &self.guest_dir)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("running the script")?;
        let output = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        fs::write(dir.join("console.log"), &output)?;
        Ok(RunResult {
            host: HostKind::Native,
            status: out.status.code().unwrap_or(-1),
            output,
            elapsed: start.elapsed(),
            attempts: 1,
        })
    }

    /// Boots the emulated host; if it ends without the script's status (its own kernel
    /// crashed — the QEMU TCG nested-SVM defect: `BUG: TASK stack guard page was hit` in a vCPU
    /// thread — or it hung silently, or its kernel reported a soft lockup of 100 s or more),
    /// says so and boots it once more. A script that fails (has
    /// a status) is never retried; a real hang of ours hangs the second time too.
    fn run_emulated(&self, script: &str, opts: &RunOpts, dir: &Path) -> Result<RunResult> {
        let retries = opts.triple_fault_retries.unwrap_or(1);
        let mut attempt = 1;
        loop {
            let r = self.run_emulated_once(script, opts, dir)?;
            if attempt > retries || !guest_triple_faulted(&r.output) {
                return Ok(RunResult {
                    attempts: attempt,
                    ..r
                });
            }
            eprintln!(
                "[testhost] {}: WARNING: an L2 guest triple-faulted in the emulated host (its \
                 known defect, docs/dsm.md); run {attempt} kept as console-run{attempt}.log, \
                 running again",
                opts.name
            );
            let _ = fs::rename(
                dir.join("console.log"),
                dir.join(format!("console-run{attempt}.log")),
            );
            attempt += 1;
        }
    }

    /// One emulated run, booted a second time if the test host itself crashed or hung.
    fn run_emulated_once(&self, script: &str, opts: &RunOpts, dir: &Path) -> Result<RunResult> {
        match self.boot_emulated(script, opts, dir, &[]) {
            Err(e) if host_ended_without_status(&format!("{e:#}")) => {
                eprintln!(
                    "[testhost] {}: the test host crashed or hung (emulated-host defect?); \
                     retrying once. First attempt: {e:#}",
                    opts.name
                );
                // Keep the first attempt's console for diagnosis.
                let _ = fs::rename(dir.join("console.log"), dir.join("console-attempt1.log"));
                self.boot_emulated(script, opts, dir, &[])
            }
            r => r,
        }
    }

    /// Boots one emulated test host running `script`; `extra` are more QEMU arguments (a
    /// network card).
    fn boot_emulated(
        &self,
        script: &str,
        opts: &RunOpts,
        dir: &Path,
        extra: &[String],
    ) -> Result<RunResult> {
        let start = Instant::now();
        let initrd = self.build_initrd(script, opts, dir)?;
        let log_path = dir.join("console.log");
        // TESTHOST_ACCEL overrides the accelerator (e.g. `tcg,thread=single` to compare).
        let accel = std::env::var("TESTHOST_ACCEL").unwrap_or_else(|_| "tcg,thread=multi".into());
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-M", "q35", "-accel", &accel, "-smp", "2"])
            .args(["-cpu", "EPYC,+svm,+npt,+nrip-save", "-m", "2048"])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            .args(["-no-reboot", "-nodefaults"])
            .args(extra)
            .arg("-kernel")
            .arg(self.testhost_dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(&initrd)
            // loglevel=3: the test host's own warnings (for example KVM reporting an MSR the
            // guest wrote) would interleave with the script's output.
            .args(["-append", "console=ttyS0 loglevel=3 panic=-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting qemu-system-x86_64 (is qemu-system-x86 installed?)")?;
        let stdout = child.stdout.take().context("qemu stdout")?;
        let mut stderr = child.stderr.take().context("qemu stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Bytes, not `lines()`: a guest can print invalid UTF-8, which must not end the log.
            for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).replace('\r', "");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let timeout = opts.timeout.unwrap_or(Duration::from_secs(1200));
        let (log, status) = collect_console(&rx, start + timeout, &log_path);
        if status.is_none() {
            let _ = child.kill();
        }
        let exit = child.wait().context("waiting for qemu")?;
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        fs::write(&log_path, log.join("\n")).ok();
        let Some(status) = status else {
            let tail: Vec<_> = log.iter().rev().take(30).rev().cloned().collect();
            let crash = log
                .iter()
                .find(|l| host_kernel_crashed(&format!("test host ended without a status {l}")))
                .map_or(String::new(), |l| format!("host kernel crash: {l}\n"));
            bail!(
                "test host ended without a status (qemu {exit}, {}s; log {}):\n{crash}{}\n{err}",
                start.elapsed().as_secs(),
                log_path.display(),
                tail.join("\n")
            );
        };
        Ok(RunResult {
            host: HostKind::Emulated,
            status,
            output: script_output(&log),
            elapsed: start.elapsed(),
            attempts: 1,
        })
    }

    /// Runs two scripts at once on two test hosts joined by a network, as two real hosts would
    /// be. In each script `$TESTHOST_IP_A` and `$TESTHOST_IP_B` are the hosts' addresses (on a
    /// native host both scripts run on this machine and both are 127.0.0.1).
    pub fn run_pair(&self, scripts: [&str; 2], opts: &RunOpts) -> Result<[RunResult; 2]> {
        let kind = host_kind();
        eprintln!("[testhost] {}: two hosts, {kind}", opts.name);
        let _lock = self.lock()?;
        let dirs = [
            self.run_dir(&format!("{}-a", opts.name))?,
            self.run_dir(&format!("{}-b", opts.name))?,
        ];
        let (ips, prologue) = match kind {
            HostKind::Native => (["127.0.0.1", "127.0.0.1"], ["", ""]),
            HostKind::Emulated => (
                [PAIR_IP_A, PAIR_IP_B],
                [pair_net_setup(PAIR_IP_A), pair_net_setup(PAIR_IP_B)],
            ),
        };
        let full: Vec<String> = (0..2)
            .map(|i| {
                format!(
                    "export TESTHOST_IP_A={} TESTHOST_IP_B={}\n{}\n{}",
                    ips[0], ips[1], prologue[i], scripts[i]
                )
            })
            .collect();
        let port = free_port()?;
        let nets = [
            net_args(&format!("listen=127.0.0.1:{port}"), 1),
            net_args(&format!("connect=127.0.0.1:{port}"), 2),
        ];
        let results: Vec<Result<RunResult>> = std::thread::scope(|s| {
            let mut handles = Vec::new();
            for i in 0..2 {
                let (script, dir, net) = (&full[i], &dirs[i], &nets[i]);
                handles.push(s.spawn(move || match kind {
                    HostKind::Native => self.run_native(script, opts, dir),
                    HostKind::Emulated => self.boot_emulated(script, opts, dir, net),
                }));
                // The listening side must be up before the other one connects.
                std::thread::sleep(Duration::from_secs(2));
            }
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("test host thread panicked")))
                })
                .collect()
        });
        let mut it = results.into_iter();
        let (a, b) = (it.next().context("host a")??, it.next().context("host b")??);
        Ok([a, b])
    }

    /// The test host's base initramfs followed by an archive with the script, `vmm`, the guest
    /// images, extra binaries and their shared libraries.
    fn build_initrd(&self, script: &str, opts: &RunOpts, dir: &Path) -> Result<PathBuf> {
        let tree = dir.join("overlay");
        let put = |src: &Path, dest: &str| -> Result<()> {
            let to = tree.join(dest.trim_start_matches('/'));
            fs::create_dir_all(to.parent().context("destination")?)?;
            fs::copy(src, &to).with_context(|| format!("copying {}", src.display()))?;
            Ok(())
        };
        fs::create_dir_all(tree.join("testhost"))?;
        fs::write(tree.join("testhost/run.sh"), script)?;
        let mut bins = vec![self.vmm_bin.clone()];
        bins.extend(opts.binaries.iter().cloned());
        for b in &bins {
            put(b, &format!("/usr/bin/{}", file_name(b)?))?;
            for lib in shared_libs(b)? {
                put(&lib, &lib.display().to_string())?;
            }
        }
        put(&self.guest_dir.join("vmlinux"), "/usr/share/vmm/vmlinux")?;
        put(
            &self.guest_dir.join("initramfs.cpio.gz"),
            "/usr/share/vmm/initramfs.cpio.gz",
        )?;
        for (src, dest) in &opts.files {
            put(src, dest)?;
        }
        let overlay = dir.join("overlay.cpio.gz");
        let status = Command::new("sh")
            .arg("-c")
            .arg("cd \"$1\" && find . | cpio -o -H newc --quiet | gzip -1 > \"$2\"")
            .args([
                "sh",
                &tree.display().to_string(),
                &overlay.display().to_string(),
            ])
            .status()
            .context("running cpio")?;
        if !status.success() {
            bail!(
                "cpio failed building {} (is cpio installed?)",
                overlay.display()
            );
        }
        let initrd = dir.join("initrd.img");
        let mut out = File::create(&initrd)?;
        for part in [
            self.testhost_dir.join("initramfs-base.cpio.gz"),
            overlay.clone(),
        ] {
            std::io::copy(&mut File::open(&part)?, &mut out)?;
        }
        fs::remove_dir_all(&tree).ok();
        fs::remove_file(&overlay).ok();
        Ok(initrd)
    }
}

/// Whether a failed run ended without the script's status (crash or hang of the test host).
fn host_ended_without_status(report: &str) -> bool {
    report.contains("test host ended without a status")
}

/// Whether a failed run's report shows the test host's own kernel crashing (before or around
/// the script; the script's status never came).
fn host_kernel_crashed(report: &str) -> bool {
    report.contains("test host ended without a status")
        && [
            "BUG: ",
            "Kernel panic",
            "stack guard page",
            "general protection fault",
        ]
        .iter()
        .any(|m| report.contains(m))
}

fn file_name(p: &Path) -> Result<String> {
    Ok(p.file_name()
        .with_context(|| format!("{} has no file name", p.display()))?
        .to_string_lossy()
        .into_owned())
}

/// Collects the console's lines until the status marker or the deadline; each line is also
/// appended to `live` as it arrives, so a long run can be watched (`tail -f`).
fn collect_console(
    rx: &mpsc::Receiver<String>,
    deadline: Instant,
    live: &Path,
) -> (Vec<String>, Option<i32>) {
    let mut log = Vec::new();
    let mut live = File::create(live).ok();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            log.push("[harness] timeout: killing the test host".into());
            return (log, None);
        }
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(f) = live.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let status = parse_marker(&line, TESTHOST_STATUS);
                let no_script = line.contains(NO_SCRIPT);
                let stuck = stuck_seconds(&line).is_some_and(|s| s >= STUCK_LIMIT_SECS);
                log.push(line);
                if no_script {
                    log.push("[harness] the test host found no script: stopping it".into());
                    return (log, None);
                }
                if stuck {
                    log.push(format!(
                        "[harness] the test host's kernel is stuck (soft lockup for \
                         {STUCK_LIMIT_SECS} s or more): stopping it"
                    ));
                    return (log, None);
                }
                if let Some(s) = status {
                    return (log, Some(s));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return (log, None),
        }
    }
}

/// A soft lockup this long in the test host's own kernel (QEMU TCG's nested SVM: seen in a
/// `vmm` tearing its VM down, and in khugepaged) does not end by itself in practice: the
/// run is stopped and, as for a crash, booted again instead of waiting for its timeout.
const STUCK_LIMIT_SECS: u64 = 100;

/// The seconds of a kernel `soft lockup - CPU#N stuck for Ss!` report.
fn stuck_seconds(line: &str) -> Option<u64> {
    let rest = line.split("soft lockup - CPU#").nth(1)?;
    let secs = rest.split("stuck for ").nth(1)?;
    secs.split('s').next()?.parse().ok()
}

fn parse_marker(line: &str, marker: &str) -> Option<i32> {
    line.trim().strip_prefix(marker)?.trim().parse().ok()
}

/// The lines between the ready marker and the status marker.
fn script_output(log: &[String]) -> String {
    let start = log
        .iter()
        .position(|l| l.contains(TESTHOST_READY))
        .map_or(0, |i| i + 1);
    let mut out = String::new();
    for line in &log[start..] {
        if line.trim().starts_with(TESTHOST_STATUS) {
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Shared libraries a dynamically linked binary loads, from `ldd`.
pub fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(parse_ldd(&text))
}

fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_soft_lockups_stop_the_run() {
        let line = "[  116.590930] watchdog: BUG: soft lockup - CPU#0 stuck for 104s! [vmm:127]";
        assert_eq!(stuck_seconds(line), Some(104));
        assert_eq!(
            stuck_seconds("watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [khugepaged:30]"),
            Some(22)
        );
        assert_eq!(stuck_seconds("a| soft lockup - CPU#0 stuck for many"), None);
        assert_eq!(stuck_seconds("vmm-guest: exit-status=0"), None);
        let (tx, rx) = mpsc::channel();
        for l in [
            "testhost: ready",
            "[ 52.5] watchdog: BUG: soft lockup - CPU#0 stuck for 44s! [vmm:127]",
            line,
            "never read",
        ] {
            tx.send(l.to_string()).unwrap();
        }
        let live = std::env::temp_dir().join(format!("stuck-{}.log", std::process::id()));
        let (log, status) = collect_console(&rx, Instant::now() + Duration::from_secs(5), &live);
        assert_eq!(status, None);
        assert_eq!(log.len(), 4, "{log:?}");
        assert!(log[3].contains("stuck"), "{log:?}");
        assert!(host_kernel_crashed(&format!(
            "test host ended without a status\n{}",
            log.join("\n")
        )));
        fs::remove_file(live).ok();
    }

    #[test]
    fn host_crashes_and_hangs_are_told_apart_from_failures() {
        assert!(host_kernel_crashed(
            "test host ended without a status (qemu signal: 9)\n[ 9.5] BUG: TASK stack guard page was hit"
        ));
        assert!(!host_kernel_crashed(
            "test host ended without a status (timeout)"
        ));
        assert!(!host_kernel_crashed("a-status=125 BUG: in the guest"));
        assert!(host_ended_without_status(
            "test host ended without a status (timeout)"
        ));
        assert!(!host_ended_without_status("script exit status 1"));
    }

    #[test]
    fn only_a_vmm_triple_fault_report_counts_as_one() {
        assert!(guest_triple_faulted(
            "x\nb| vmm: the VM failed on vCPU 0: triple fault\nvCPU 0:"
        ));
        assert!(!guest_triple_faulted(
            "qemu: reboot=t triple fault ends microvm"
        ));
        assert!(!guest_triple_faulted(
            "vmm: the VM failed on vCPU 1: internal error"
        ));
    }

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n\tlibx.so => not found\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn script_output_is_cut_between_markers() {
        let log: Vec<String> = [
            "[ 0.1] boot",
            "testhost: ready kernel=x",
            "a",
            "b",
            "testhost: exit-status=3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(script_output(&log), "a\nb\n");
        assert_eq!(parse_marker(&log[4], TESTHOST_STATUS), Some(3));
        assert_eq!(
            parse_marker("testhost: exit-status=x", TESTHOST_STATUS),
            None
        );
    }
}
