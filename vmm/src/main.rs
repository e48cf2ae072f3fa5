//! The `vmm` command: argument parsing, console wiring and exit-code mapping.
//!
//! Exit codes of `vmm launch`:
//! - the guest command's exit status, when a command was given and the guest reported it;
//! - 0 when the guest powered off and no command was given;
//! - 2 for bad arguments (missing, unreadable or corrupt kernel or initrd, impossible sizes);
//! - 125 when the monitor or the VM failed (KVM error, triple fault, guest ended without
//!   reporting its command's status);
//! - 128 + N when signal N (SIGINT, SIGTERM, SIGHUP) stopped the VM.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use vmm::cluster::TransportLink;
use vmm::devices::offload::handler::ClusterLink;
use vmm::vmm::VmIo;
use vmm::{parse_size, ExitReason, VmConfig, Vmm, VmmError};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::register_signal_handler;
use vmm_sys_util::terminal::Terminal;

/// Exit code for bad arguments.
const EXIT_USAGE: u8 = 2;
/// Exit code for a failure of the monitor or the VM.
const EXIT_VMM_FAILURE: u8 = 125;

#[derive(Parser)]
#[command(
    name = "vmm",
    version,
    about = "KVM monitor for offloading threads of Linux programs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a guest; with `-- COMMAND...` the guest init runs COMMAND and vmm exits with its status.
    Launch(LaunchArgs),
}

#[derive(clap::Args)]
struct LaunchArgs {
    /// Guest kernel (ELF vmlinux or bzImage) [default: vmlinux from the image directory]
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Guest initramfs [default: initramfs.cpio.gz from the image directory]
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Guest RAM, e.g. 512M or 2G
    #[arg(long, default_value = "512M")]
    mem: String,
    /// Size of the coherent memory window shared with the other nodes (same in every node;
    /// 0 for none), e.g. 256M
    #[arg(long, default_value = "256M")]
    window: String,
    /// On a remote fault in the window, also request this many following pages (same access)
    #[arg(long, default_value_t = 0)]
    window_prefetch: u64,
    /// Number of vCPUs
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// Extra kernel command line parameters
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Write the VM exit counts and run time to this file when the VM ends (and a snapshot
    /// each time vmm gets SIGUSR1)
    #[arg(long)]
    exit_stats: Option<PathBuf>,
    /// This node's name in the cluster [default: a]
    #[arg(long)]
    node: Option<String>,
    /// The cluster's nodes: names (`a,b`, addresses from --cluster) or `a=HOST:PORT,b=HOST:PORT`
    #[arg(long)]
    peers: Option<String>,
    /// Cluster file: one `NAME HOST:PORT` per line
    #[arg(long, default_value = DEFAULT_CLUSTER_FILE)]
    cluster: PathBuf,
    /// File holding the pre-shared cluster key (at least 32 bytes)
    #[arg(long)]
    secret: Option<PathBuf>,
    /// Declare a silent peer lost after this many milliseconds
    #[arg(long, default_value_t = 3000)]
    peer_timeout_ms: u64,
    /// Command for the guest init to run
    #[arg(last = true)]
    command: Vec<String>,
}

/// Where `--peers a,b` looks up the nodes' addresses by default.
const DEFAULT_CLUSTER_FILE: &str = "/etc/vmm/cluster.conf";

/// The cluster as given on the command line: node names by index, this node's index, and
/// everything the transport needs (`None` when the node runs alone).
struct ClusterSetup {
    nodes: Vec<String>,
    index: u32,
    link: Option<(
        transport::Cluster,
        transport::NodeId,
        transport::Secret,
        transport::Config,
    )>,
}

fn cluster_from(args: &LaunchArgs) -> anyhow::Result<ClusterSetup> {
    let Some(peers) = &args.peers else {
        let name = args.node.clone().unwrap_or_else(|| "a".into());
        return Ok(ClusterSetup {
            nodes: vec![name],
            index: 0,
            link: None,
        });
    };
    let cluster = if peers.contains('=') {
        transport::Cluster::parse_inline(peers)?
    } else {
        let file = transport::Cluster::from_file(&args.cluster)
            .with_context(|| format!("cluster file {}", args.cluster.display()))?;
        let mut nodes = Vec::new();
        for name in peers.split(',').map(str::trim) {
            let id = file.require(name)?;
            let addr = file
                .addr(id)
                .context("cluster file entry without address")?;
            nodes.push((name.to_string(), addr));
        }
        transport::Cluster::new(nodes)?
    };
    let node = args
        .node
        .as_deref()
        .context("--peers needs --node NAME (this node's name)")?;
    let me = cluster.require(node)?;
    let secret_path = args
        .secret
        .as_deref()
        .context("--peers needs --secret FILE")?;
    let secret = transport::Secret::from_file(secret_path)?;
    let timeout = std::time::Duration::from_millis(args.peer_timeout_ms);
    let config = transport::Config {
        peer_timeout: timeout,
        heartbeat_interval: timeout / 6,
        ..Default::default()
    };
    let nodes = cluster
        .ids()
        .map(|id| cluster.name(id).to_string())
        .collect();
    Ok(ClusterSetup {
        nodes,
        index: u32::from(me.0),
        link: Some((cluster, me, secret, config)),
    })
}

/// Directories searched for the default guest images, in order.
fn image_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("VMM_IMAGE_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    dirs.push(PathBuf::from("/usr/share/vmm"));
    if let Ok(exe) = std::env::current_exe() {
        // target/{debug,release}/vmm in a checkout: the images are in build/images/guest.
        if let Some(root) = exe.ancestors().nth(3) {
            dirs.push(root.join("build/images/guest"));
        }
    }
    dirs
}

fn default_image(name: &str) -> anyhow::Result<PathBuf> {
    let dirs = image_dirs();
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            let list: Vec<_> = dirs.iter().map(|d| d.display().to_string()).collect();
            format!(
                "no {name} found in {}; run images/build.sh or pass it explicitly",
                list.join(", ")
            )
        })
}

fn config_from(args: &LaunchArgs, cluster: &ClusterSetup) -> anyhow::Result<VmConfig> {
    let kernel = match &args.kernel {
        Some(k) => k.clone(),
        None => default_image("vmlinux")?,
    };
    let initrd = match &args.initrd {
        Some(i) => Some(i.clone()),
        None => Some(default_image("initramfs.cpio.gz")?),
    };
    let config = VmConfig {
        kernel,
        initrd,
        mem_bytes: parse_size(&args.mem)?,
        vcpus: args.vcpus,
        cmdline_extra: args.cmdline.clone(),
        command: args.command.clone(),
        nodes: cluster.nodes.clone(),
        node_index: cluster.index,
        window_bytes: parse_size(&args.window)?,
        window_prefetch: args.window_prefetch,
    };
    config.validate()?;
    Ok(config)
}

/// Puts an interactive terminal in raw mode for the guest console and restores it on drop.
struct RawTerminal(Option<std::io::Stdin>);

impl RawTerminal {
    fn new() -> Self {
        let stdin = std::io::stdin();
        if stdin.is_terminal() && stdin.lock().set_raw_mode().is_ok() {
            Self(Some(stdin))
        } else {
            Self(None)
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(stdin) = &self.0 {
            let _ = stdin.lock().set_canon_mode();
        }
    }
}

fn write_stats(path: &Path, outcome: &vmm::VmOutcome) -> anyhow::Result<()> {
    use std::io::Write as _;
    let text = format!(
        "final\nuser_exits {}\nkvm_exits {}\noffload {}\ndsm {}\nelapsed_ms {}\n",
        outcome.exits,
        vmm::vstate::kvm_stats::format_exits(&outcome.kvm_stats),
        outcome.offload,
        outcome.dsm,
        outcome.elapsed.as_millis()
    );
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn launch(args: LaunchArgs) -> ExitCode {
    let setup = cluster_from(&args);
    let (config, setup) = match setup.and_then(|s| Ok((config_from(&args, &s)?, s))) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmm: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cluster: Option<Box<dyn ClusterLink>> = match setup.link {
        None => None,
        Some((cluster, me, secret, tconfig)) => {
            match transport::Transport::start(cluster, me, secret, tconfig) {
                Ok(t) => Some(Box::new(TransportLink::new(t))),
                Err(e) => {
                    eprintln!("vmm: cannot start the cluster transport: {e}");
                    return ExitCode::from(EXIT_VMM_FAILURE);
                }
            }
        }
    };
    let input = std::io::stdin().lock().tty_fd();
    let input = dup_file(input);
    let stop = match install_stop_signals() {
        Ok(evt) => Some(evt),
        Err(e) => {
            eprintln!("vmm: cannot install signal handlers: {e}");
            return ExitCode::from(EXIT_VMM_FAILURE);
        }
    };
    let snapshot = match &args.exit_stats {
        None => None,
        Some(path) => match install_snapshot_signal(path) {
            Ok(evt) => Some((evt, path.clone())),
            Err(e) => {
                eprintln!("vmm: cannot prepare {}: {e}", path.display());
                return ExitCode::from(EXIT_VMM_FAILURE);
            }
        },
    };
    let io = VmIo {
        output: Box::new(std::io::stdout()),
        input,
        stop,
        cluster,
        snapshot,
    };
    let raw = RawTerminal::new();
    let result = Vmm::run(&config, io);
    drop(raw);
    let outcome = match result {
        Ok(o) => o,
        Err(e @ (VmmError::Config(_) | VmmError::Loader(_))) => {
            eprintln!("vmm: {:#}", anyhow::Error::from(e));
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            eprintln!("vmm: {:#}", anyhow::Error::from(e));
            return ExitCode::from(EXIT_VMM_FAILURE);
        }
    };
    log::info!(
        "guest ended: {:?}; exits: {}",
        outcome.reason,
        outcome.exits
    );
    if let Some(path) = &args.exit_stats {
        if let Err(e) = write_stats(path, &outcome) {
            eprintln!("vmm: {e:#}");
        }
    }
    exit_code(&config, &outcome)
}

/// Maps the outcome to the process exit code described in the module header.
fn exit_code(config: &VmConfig, outcome: &vmm::VmOutcome) -> ExitCode {
    if outcome.reason == ExitReason::Stopped {
        let sig = STOP_SIGNAL.load(Ordering::Relaxed);
        eprintln!("vmm: stopped by signal {sig}");
        return ExitCode::from((128 + sig).clamp(0, 255) as u8);
    }
    if let ExitReason::Vcpu { id, stop } = &outcome.reason {
        if !outcome.is_clean() {
            eprintln!("vmm: the VM failed on vCPU {id}: {}", describe_stop(stop));
            return ExitCode::from(EXIT_VMM_FAILURE);
        }
    }
    match (config.command.is_empty(), outcome.guest_status) {
        (false, Some(status)) => ExitCode::from(status.clamp(0, 255) as u8),
        (false, None) => {
            eprintln!("vmm: the guest ended without reporting the exit status of its command");
            ExitCode::from(EXIT_VMM_FAILURE)
        }
        (true, _) => ExitCode::SUCCESS,
    }
}

fn describe_stop(stop: &vmm::vstate::vcpu::VcpuStop) -> String {
    use vmm::vstate::vcpu::VcpuStop as S;
    match stop {
        S::SystemEvent(k) => format!("system event {k}"),
        S::TripleFault { registers } => format!("triple fault\n{registers}"),
        S::FailedEntry { reason, registers } => {
            format!("KVM could not enter the guest (hardware reason {reason:#x})\n{registers}")
        }
        S::InternalError {
            suberror,
            registers,
        } => {
            format!("KVM internal error (suberror {suberror})\n{registers}")
        }
        S::Unexpected { exit, registers } => format!("unexpected exit {exit}\n{registers}"),
        S::RunFailed { errno, registers } => format!(
            "KVM_RUN failed: {}\n{registers}",
            std::io::Error::from_raw_os_error(*errno)
        ),
    }
}

/// A file sharing the open file description of `fd`, for the event loop to poll.
fn dup_file(fd: std::os::fd::RawFd) -> Option<std::fs::File> {
    use std::os::fd::BorrowedFd;
    // SAFETY: `fd` is the process's standard input, open for the whole life of the process.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned().ok().map(std::fs::File::from)
}

/// The eventfd the stop-signal handler writes to, and the signal that arrived.
static STOP_FD: AtomicI32 = AtomicI32::new(-1);
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(sig: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    STOP_SIGNAL.store(sig, Ordering::Relaxed);
    let fd = STOP_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) is async-signal-safe; `one` is a valid 8-byte buffer and `fd` is the
        // eventfd kept open for the whole run (its owner is leaked below).
        unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    }
}

static SNAPSHOT_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_snapshot_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let fd = SNAPSHOT_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) is async-signal-safe; `one` is a valid 8-byte buffer and `fd` is the
        // eventfd kept open for the whole run (its owner is leaked below).
        unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
    }
}

/// With `--exit-stats FILE`: empties FILE, then every SIGUSR1 appends a numbered statistics
/// snapshot to it (benchmarks bracket a phase with two signals); the end of the run appends
/// the `final` block.
fn install_snapshot_signal(path: &Path) -> std::io::Result<EventFd> {
    std::fs::write(path, b"")?;
    let evt = EventFd::new(libc::EFD_NONBLOCK)?;
    let for_handler = evt.try_clone()?;
    SNAPSHOT_FD.store(for_handler.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(for_handler);
    register_signal_handler(libc::SIGUSR1, on_snapshot_signal)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    Ok(evt)
}

/// SIGINT, SIGTERM and SIGHUP stop the VM cleanly (the terminal is restored) instead of
/// killing the monitor; the returned event is what the VM's event loop watches.
fn install_stop_signals() -> std::io::Result<EventFd> {
    let evt = EventFd::new(libc::EFD_NONBLOCK)?;
    let for_handler = evt.try_clone()?;
    STOP_FD.store(for_handler.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(for_handler);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        register_signal_handler(sig, on_stop_signal)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    }
    Ok(evt)
}

fn main() -> ExitCode {
    // Peers coming and going are worth seeing by default; the rest only when asked.
    env_logger::Builder::from_env(
        env_logger::Env::default()
            .default_filter_or("warn,vmm::cluster=info,transport::link=error"),
    )
    .format_timestamp_millis()
    .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Launch(args) => launch(args),
    }
}
