//! Shadows (docs/offload-threads.md, "Interfaces for migration and shadows (v1)"):
//!
//! - `offload shadow NODE PID TID REC_OFF REC_LEN UID GID`, started by offload.ko for a
//!   `SPAWN` from node NODE: reads the spawn record from the window (read-only), checks it,
//!   attaches this process as the shadow of PID with `OFFLOAD_IOC_SHADOW_ATTACH` on an fd
//!   that stays open across exec (its number goes into `OFFLOAD_FD`), drops to UID/GID,
//!   turns address-space randomization off and execs the record's program with exactly the
//!   record's environment plus `OFFLOAD_SHADOW=NODE:PID:TID:REC_OFF:REC_LEN` and
//!   `OFFLOAD_FD=N`, stdin/stdout/stderr on /dev/null (the process's real fds are at home).
//!   It has no terminal: errors go to the kernel log (/dev/kmsg), exit status 1.
//! - `offload spawn --on NODE --exe PATH [--env NAME=VALUE]... [--exit]`, a test helper:
//!   writes a minimal record (no maps, no context) into window pages it allocates, calls
//!   `OFFLOAD_IOC_SPAWN`, prints `spawned ...` and waits to be killed (or exits with
//!   `--exit`), so its end shows what the driver does with the shadows of a process that ends.
//! - `offload ps`: the marked processes of this node (`OFFLOAD_IOC_PS`), one line each.

use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use crate::abi::{PsEntry, NODE_UNKNOWN, ROLE_HOME};
use crate::cli::PAGE;
use crate::device::{Device, DeviceError, Offload, Shadows, WindowDevice};
use crate::mem::Mapping;
use crate::record::{self, MAX_RECORD};
use crate::report;
use crate::run::{list_nodes, resolve, RunError};

/// Arguments of `offload spawn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnArgs {
    /// The target node as given: a name or an index.
    pub on: String,
    pub exe: String,
    /// `NAME=VALUE` strings, the whole environment of the shadow's program.
    pub env: Vec<String>,
    /// Exit right after the spawn instead of waiting.
    pub exit: bool,
}

/// Arguments of `offload shadow` (as offload.ko passes them, decimal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowArgs {
    pub node: u32,
    pub pid: u32,
    pub tid: u32,
    pub rec_off: u64,
    pub rec_len: u64,
    pub uid: u32,
    pub gid: u32,
}

/// Parses what follows `spawn`.
pub fn parse_spawn(args: &[&str]) -> Result<SpawnArgs, String> {
    let (mut on, mut exe, mut env, mut exit) = (None, None, Vec::new(), false);
    let mut it = args.iter();
    while let Some(&arg) = it.next() {
        let mut value = || {
            it.next()
                .map(|v| v.to_string())
                .ok_or(format!("spawn: {arg} needs a value"))
        };
        match arg {
            "--on" => on = Some(value()?),
            "--exe" => exe = Some(value()?),
            "--env" => {
                let v = value()?;
                if v.find('=').unwrap_or(0) == 0 {
                    return Err(format!("spawn: --env {v}: expected NAME=VALUE"));
                }
                env.push(v);
            }
            "--exit" => exit = true,
            other => return Err(format!("spawn: unexpected '{other}'")),
        }
    }
    Ok(SpawnArgs {
        on: on.ok_or("spawn needs --on NODE")?,
        exe: exe.ok_or("spawn needs --exe PATH")?,
        env,
        exit,
    })
}

/// Parses what follows `shadow`: exactly seven numbers.
pub fn parse_shadow(args: &[&str]) -> Result<ShadowArgs, String> {
    const NAMES: [&str; 7] = ["NODE", "PID", "TID", "REC_OFF", "REC_LEN", "UID", "GID"];
    if args.len() != NAMES.len() {
        return Err(format!("shadow needs {}", NAMES.join(" ")));
    }
    let mut n = [0u64; 7];
    for (i, a) in args.iter().enumerate() {
        n[i] = crate::cli::parse_number(a, false)
            .filter(|&v| i == 3 || i == 4 || v <= u64::from(u32::MAX))
            .ok_or_else(|| format!("shadow: bad {} '{a}'", NAMES[i]))?;
    }
    Ok(ShadowArgs {
        node: n[0] as u32,
        pid: n[1] as u32,
        tid: n[2] as u32,
        rec_off: n[3],
        rec_len: n[4],
        uid: n[5] as u32,
        gid: n[6] as u32,
    })
}

// ---- offload spawn ----

/// `offload spawn`: allocates the record's pages (they belong to this process's open file),
/// writes the record, spawns, prints `spawned node=N pid=P rec_off=0x.. rec_len=L`; then
/// waits for a signal unless `--exit`.
pub fn spawn<D: Offload + WindowDevice + Shadows>(
    dev: &D,
    args: &SpawnArgs,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    let fail = |m: String| RunError::Mem(format!("spawn: {m}"));
    let target = match resolve(&list_nodes(dev)?, &args.on) {
        Err(RunError::IsSelf(n)) => return Err(fail(format!("{n} is this node"))),
        r => r?,
    };
    let env: Vec<Vec<u8>> = args.env.iter().map(|e| e.as_bytes().to_vec()).collect();
    let rec = record::encode(args.exe.as_bytes(), &env);
    let len = rec.len() as u64;
    let off = dev
        .alloc(len.div_ceil(PAGE))
        .map_err(|e| fail(format!("allocating the record: {e}")))?;
    let mut m = Mapping::new(dev.map_fd(), off, len)
        .map_err(|e| fail(format!("mapping the record: {e}")))?;
    // SAFETY: pages just allocated by this file, not published to anyone yet.
    unsafe { m.bytes_mut(off, len) }.copy_from_slice(&rec);
    drop(m);
    dev.spawn(target.index, off, len).map_err(|e| {
        fail(match e.errno() {
            Some(errno) => report::spawn_error(errno, &target.name),
            None => e.to_string(),
        })
    })?;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    writeln!(
        out,
        "spawned node={} pid={pid} rec_off={off:#x} rec_len={len}",
        report::word(&target.name)
    )?;
    out.flush()?;
    if args.exit {
        return Ok(());
    }
    loop {
        // SAFETY: pause(2) only waits for a signal.
        unsafe { libc::pause() };
    }
}

// ---- offload ps ----

/// `offload ps`: one line per marked process ([`report::ps_line`], then its thread count
/// and name from /proc: for a home, `threads` includes its executors, each standing for a
/// thread on another node); under a home's first line, one line per thread with its node
/// ([`report::thread_line`]); then a note if the driver left some out.
pub fn ps<D: Offload + Shadows>(dev: &D, out: &mut dyn Write) -> Result<(), RunError> {
    ps_with(dev, out, &proc_info, &proc_tasks)
}

/// ` threads=N comm=NAME` of a process from /proc (`?` for what cannot be read: it ended).
fn proc_info(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map_or("?".to_string(), |v| {
                v.trim().replace(char::is_whitespace, "_")
            })
    };
    format!(" threads={} comm={}", field("Threads:"), field("Name:"))
}

/// The tids of a process from /proc, in order (none when it ended).
fn proc_tasks(pid: u32) -> Vec<u32> {
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    tids
}

fn ps_with<D: Offload + Shadows>(
    dev: &D,
    out: &mut dyn Write,
    info: &dyn Fn(u32) -> String,
    tasks: &dyn Fn(u32) -> Vec<u32>,
) -> Result<(), RunError> {
    let nodes = list_nodes(dev)?;
    let ioctl = |e: DeviceError| match e.errno() {
        Some(errno) => RunError::Ioctl { errno },
        None => RunError::Device(e),
    };
    let ps = dev.ps().map_err(ioctl)?;
    let execs = dev.threads().map_err(ioctl)?;
    let name = |i: u32| {
        nodes
            .iter()
            .find(|n| n.index == i)
            .map_or_else(|| i.to_string(), |n| n.name.clone())
    };
    let here = nodes.iter().find(|n| n.state.is_none()).map(|n| n.index);
    let mut listed = Vec::new();
    for e in ps.valid() {
        writeln!(out, "{}{}", report::ps_line(e, &name), info(e.pid))?;
        if e.role != ROLE_HOME || listed.contains(&e.pid) {
            continue;
        }
        listed.push(e.pid);
        for tid in tasks(e.pid) {
            let exec = execs
                .valid()
                .iter()
                .find(|x| x.tid == tid && x.pid == e.pid);
            let (node, calls) = match exec {
                Some(x) => ((x.node != NODE_UNKNOWN).then_some(x.node), Some(x.calls)),
                None => (here, None),
            };
            writeln!(out, "{}", report::thread_line(tid, node, calls, &name))?;
        }
    }
    if ps.total > ps.count {
        writeln!(out, "({} more not shown)", ps.total - ps.count)?;
    }
    if execs.total > execs.count {
        writeln!(
            out,
            "({} threads on other nodes not shown)",
            execs.total - execs.count
        )?;
    }
    Ok(())
}

// ---- offload shadow ----

/// Why `offload shadow` did not exec the program.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error("{0}")]
    Args(String),
    #[error("{0}")]
    Device(#[from] DeviceError),
    #[error("reading the record at window offset {off:#x} ({len} bytes): {err}")]
    Map { off: u64, len: u64, err: io::Error },
    #[error("{0}")]
    Record(#[from] record::RecordError),
    #[error("{what}: {err}")]
    Sys { what: &'static str, err: io::Error },
}

fn sys(what: &'static str) -> ShadowError {
    ShadowError::Sys {
        what,
        err: io::Error::last_os_error(),
    }
}

/// Checks what the driver passed before anything is mapped.
pub fn check_args(a: &ShadowArgs) -> Result<(), ShadowError> {
    if !a.rec_off.is_multiple_of(PAGE) || a.rec_len == 0 || a.rec_len > MAX_RECORD {
        return Err(ShadowError::Args(format!(
            "record at {:#x} with {} bytes: not page aligned, empty, or above {MAX_RECORD}",
            a.rec_off, a.rec_len
        )));
    }
    Ok(())
}

/// The record's bytes: window `[off, off + len)` mapped read-only (`MAP_SHARED`) from `fd`
/// and copied, so nothing of the window stays mapped in this process.
pub fn read_record(fd: BorrowedFd<'_>, off: u64, len: u64) -> Result<Vec<u8>, ShadowError> {
    let map_err = |err| ShadowError::Map { off, len, err };
    let einval = || map_err(io::Error::from_raw_os_error(libc::EINVAL));
    let map_len = usize::try_from(len.next_multiple_of(PAGE)).map_err(|_| einval())?;
    let file_off = libc::off_t::try_from(off).map_err(|_| einval())?;
    // SAFETY: a new read-only mapping where the kernel chooses; checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            file_off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(map_err(io::Error::last_os_error()));
    }
    // SAFETY: `len <= map_len` bytes of the live mapping; the home wrote them before the
    // SPAWN and does not change them.
    let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) }.to_vec();
    // SAFETY: exactly the mapping made above; `bytes` is a copy.
    unsafe { libc::munmap(p, map_len) };
    Ok(bytes)
}

/// The program's environment: the record's, without `OFFLOAD_SHADOW`/`OFFLOAD_FD` (this
/// command sets them), plus `OFFLOAD_SHADOW=NODE:PID:TID:REC_OFF:REC_LEN` and
/// `OFFLOAD_FD=fd` (decimal).
pub fn shadow_env(record_env: &[Vec<u8>], a: &ShadowArgs, fd: RawFd) -> Vec<Vec<u8>> {
    let ours = |e: &Vec<u8>| e.starts_with(b"OFFLOAD_SHADOW=") || e.starts_with(b"OFFLOAD_FD=");
    let mut env: Vec<Vec<u8>> = record_env.iter().filter(|e| !ours(e)).cloned().collect();
    env.push(
        format!(
            "OFFLOAD_SHADOW={}:{}:{}:{}:{}",
            a.node, a.pid, a.tid, a.rec_off, a.rec_len
        )
        .into_bytes(),
    );
    env.push(format!("OFFLOAD_FD={fd}").into_bytes());
    env
}

/// stdin, stdout and stderr on /dev/null (a helper started by the kernel has none).
fn stdio_to_null() -> Result<(), ShadowError> {
    // SAFETY: open/dup2/close on fds this process owns; the path is a C string literal.
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if fd < 0 {
            return Err(sys("opening /dev/null"));
        }
        for target in 0..3 {
            if fd != target && libc::dup2(fd, target) < 0 {
                return Err(sys("dup2 onto stdio"));
            }
        }
        if fd > 2 {
            libc::close(fd);
        }
    }
    Ok(())
}

/// No supplementary groups, then `gid`, then `uid` (in that order: after setuid the
/// process may no longer change its groups).
fn drop_privileges(uid: u32, gid: u32) -> Result<(), ShadowError> {
    // SAFETY: credential calls without pointers (setgroups with an empty list).
    unsafe {
        if libc::setgroups(0, std::ptr::null()) < 0 {
            return Err(sys("setgroups"));
        }
        if libc::setgid(gid) < 0 {
            return Err(sys("setgid"));
        }
        if libc::setuid(uid) < 0 {
            return Err(sys("setuid"));
        }
    }
    Ok(())
}

/// Execs `exe` with argv `[exe]` and exactly `env`; returns only on failure.
fn exec(exe: &[u8], env: &[Vec<u8>]) -> ShadowError {
    let cstr = |b: &[u8]| CString::new(b).map_err(|_| ShadowError::Args("NUL in a string".into()));
    let (path, env) = match (
        cstr(exe),
        env.iter().map(|e| cstr(e)).collect::<Result<Vec<_>, _>>(),
    ) {
        (Ok(p), Ok(e)) => (p, e),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let argv = [path.as_ptr(), std::ptr::null()];
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: SIGPIPE back to its default (std ignores it, and an ignored signal stays
    // ignored across exec); then execve with NUL-terminated arrays of live C strings.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    sys("exec")
}

/// `offload shadow`: returns only on failure (the caller logs it and exits 1).
pub fn shadow(a: &ShadowArgs) -> ShadowError {
    match prepare_and_exec(a) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn prepare_and_exec(a: &ShadowArgs) -> Result<std::convert::Infallible, ShadowError> {
    check_args(a)?;
    stdio_to_null()?;
    let dev = Device::open()?;
    let rec = record::decode(&read_record(dev.map_fd(), a.rec_off, a.rec_len)?)?;
    dev.shadow_attach(a.node, a.pid, a.tid)?;
    let fd = dev.into_inherited_fd().map_err(|err| ShadowError::Sys {
        what: "keeping /dev/offload open",
        err,
    })?;
    let env = shadow_env(&rec.env, a, fd);
    drop_privileges(a.uid, a.gid)?;
    crate::launch::no_randomization();
    Err(exec(&rec.exe, &env))
}

/// Writes `offload shadow: MESSAGE` to the kernel log at error level (best effort: there
/// is nowhere else to say it).
pub fn log_to_kmsg(a: &ShadowArgs, e: &ShadowError) {
    let line = format!(
        "<3>offload shadow: home node {} pid {}: {e}\n",
        a.node, a.pid
    );
    if let Ok(mut k) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = k.write_all(line.as_bytes());
    }
}

/// The role word of a PS entry.
pub fn role_name(e: &PsEntry) -> &'static str {
    match e.role {
        crate::abi::ROLE_HOME => "home",
        crate::abi::ROLE_SHADOW => "shadow",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_arguments() {
        let a = parse_spawn(&["--on", "b", "--exe", "/bin/sh", "--env", "A=1", "--exit"]).unwrap();
        assert_eq!(
            a,
            SpawnArgs {
                on: "b".into(),
                exe: "/bin/sh".into(),
                env: vec!["A=1".into()],
                exit: true
            }
        );
        assert!(parse_spawn(&["--exe", "/x"]).unwrap_err().contains("--on"));
        assert!(parse_spawn(&["--on", "b"]).unwrap_err().contains("--exe"));
        assert!(parse_spawn(&["--on"])
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse_spawn(&["--on", "b", "--exe", "/x", "--env", "=1"])
            .unwrap_err()
            .contains("NAME=VALUE"));
        assert!(parse_spawn(&["--on", "b", "x"])
            .unwrap_err()
            .contains("'x'"));
    }

    #[test]
    fn shadow_arguments() {
        let a = parse_shadow(&["0", "12", "13", "4096", "200", "1000", "0x3e8"]).unwrap();
        assert_eq!((a.node, a.pid, a.tid), (0, 12, 13));
        assert_eq!(
            (a.rec_off, a.rec_len, a.uid, a.gid),
            (4096, 200, 1000, 1000)
        );
        assert!(parse_shadow(&["0"]).unwrap_err().contains("NODE PID TID"));
        assert!(parse_shadow(&["0", "x", "1", "0", "1", "0", "0"])
            .unwrap_err()
            .contains("bad PID"));
        assert!(parse_shadow(&["0", "1", "1", "0", "1", "4294967296", "0"])
            .unwrap_err()
            .contains("bad UID"));
    }

    fn args(rec_off: u64, rec_len: u64) -> ShadowArgs {
        ShadowArgs {
            node: 1,
            pid: 50,
            tid: 51,
            rec_off,
            rec_len,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn the_driver_arguments_are_checked_before_mapping() {
        assert!(check_args(&args(4096, 100)).is_ok());
        assert!(check_args(&args(100, 100)).is_err());
        assert!(check_args(&args(0, 0)).is_err());
        assert!(check_args(&args(0, MAX_RECORD + 1)).is_err());
    }

    #[test]
    fn the_environment_is_the_records_plus_ours() {
        let rec = vec![
            b"A=1".to_vec(),
            b"OFFLOAD_SHADOW=stale".to_vec(),
            b"B=2".to_vec(),
        ];
        let env = shadow_env(&rec, &args(8192, 300), 3);
        let env: Vec<String> = env
            .into_iter()
            .map(|e| String::from_utf8(e).unwrap())
            .collect();
        assert_eq!(
            env,
            [
                "A=1",
                "B=2",
                "OFFLOAD_SHADOW=1:50:51:8192:300",
                "OFFLOAD_FD=3"
            ]
        );
    }

    use crate::abi::{
        NodeInfo, Peer, Peers, Ps, ThreadEntry, Threads, WindowInfo, NAME_LEN, PEER_UP, ROLE_SHADOW,
    };
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    use std::sync::Mutex;

    fn memfd(pages: u64) -> OwnedFd {
        // SAFETY: memfd_create with a C string literal; the fd is owned at once.
        let fd = unsafe { libc::memfd_create(c"window".as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        std::fs::File::from(fd.try_clone().unwrap())
            .set_len(pages * PAGE)
            .unwrap();
        fd
    }

    fn name(s: &str) -> [u8; NAME_LEN] {
        let mut n = [0; NAME_LEN];
        n[..s.len()].copy_from_slice(s.as_bytes());
        n
    }

    /// Node a (0, self) and b (1, up); a memfd window of 8 pages whose ALLOC hands out
    /// page 2; SPAWNs recorded and answered with `spawn_errno`.
    struct Fake {
        window: OwnedFd,
        spawns: Mutex<Vec<(u32, u64, u64)>>,
        spawn_errno: Option<i32>,
        ps: Ps,
        threads: Threads,
    }

    impl Fake {
        fn new(spawn_errno: Option<i32>) -> Self {
            Self {
                window: memfd(8),
                spawns: Mutex::default(),
                spawn_errno,
                ps: Ps::default(),
                threads: Threads::default(),
            }
        }
    }

    impl Offload for Fake {
        fn node_info(&self) -> Result<NodeInfo, DeviceError> {
            Ok(NodeInfo {
                index: 0,
                num_nodes: 2,
                name: name("a"),
            })
        }
        fn peers(&self) -> Result<Peers, DeviceError> {
            let mut p = Peers {
                count: 1,
                ..Default::default()
            };
            p.peers[0] = Peer {
                index: 1,
                state: PEER_UP,
                name: name("b"),
                reserved: 0,
            };
            Ok(p)
        }
        fn ping(&self, _: u32, _: &[u8]) -> Result<(Vec<u8>, u64), DeviceError> {
            unreachable!()
        }
    }

    impl WindowDevice for Fake {
        fn window_info(&self) -> Result<WindowInfo, DeviceError> {
            unreachable!()
        }
        fn alloc(&self, pages: u64) -> Result<u64, DeviceError> {
            assert_eq!(pages, 1);
            Ok(2 * PAGE)
        }
        fn free(&self, _: u64, _: u64) -> Result<(), DeviceError> {
            unreachable!()
        }
        fn map_fd(&self) -> BorrowedFd<'_> {
            self.window.as_fd()
        }
    }

    impl Shadows for Fake {
        fn spawn(&self, node: u32, rec_off: u64, rec_len: u64) -> Result<(), DeviceError> {
            self.spawns.lock().unwrap().push((node, rec_off, rec_len));
            match self.spawn_errno {
                Some(errno) => Err(DeviceError::Ioctl { op: "SPAWN", errno }),
                None => Ok(()),
            }
        }
        fn shadow_attach(&self, _: u32, _: u32, _: u32) -> Result<(), DeviceError> {
            unreachable!()
        }
        fn ps(&self) -> Result<Ps, DeviceError> {
            Ok(self.ps)
        }
        fn threads(&self) -> Result<Threads, DeviceError> {
            Ok(self.threads)
        }
    }

    fn spawn_args(on: &str) -> SpawnArgs {
        SpawnArgs {
            on: on.into(),
            exe: "/bin/sh".into(),
            env: vec!["A=1".into()],
            exit: true,
        }
    }

    #[test]
    fn spawn_writes_the_record_into_its_pages_and_names_them() {
        let fake = Fake::new(None);
        let mut out = Vec::new();
        spawn(&fake, &spawn_args("b"), &mut out).unwrap();
        let (node, off, len) = fake.spawns.lock().unwrap()[0];
        assert_eq!((node, off), (1, 2 * PAGE));
        let back = read_record(fake.window.as_fd(), off, len).unwrap();
        let rec = record::decode(&back).unwrap();
        assert_eq!(
            (rec.exe, rec.env),
            (b"/bin/sh".to_vec(), vec![b"A=1".to_vec()])
        );
        let pid = std::process::id();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("spawned node=b pid={pid} rec_off=0x2000 rec_len={len}\n")
        );
    }

    #[test]
    fn spawn_errors_name_the_node_and_the_errno() {
        let e = spawn(&Fake::new(None), &spawn_args("a"), &mut Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "spawn: a is this node");
        let e = spawn(&Fake::new(None), &spawn_args("x"), &mut Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "no node named x");
        let fake = Fake::new(Some(libc::ENOENT));
        let e = spawn(&fake, &spawn_args("b"), &mut Vec::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spawn: node b has no /usr/bin/offload to start the shadow (-ENOENT)"
        );
    }

    #[test]
    fn ps_prints_one_line_per_entry_with_node_names() {
        let mut fake = Fake::new(None);
        fake.ps.count = 1;
        fake.ps.total = 3;
        fake.ps.procs[0] = PsEntry {
            pid: 9,
            role: ROLE_SHADOW,
            home_node: 1,
            home_pid: 70,
            forwarded: 4,
            ..Default::default()
        };
        let mut out = Vec::new();
        let info = |pid| format!(" threads=2 comm=p{pid}");
        ps_with(&fake, &mut out, &info, &|_| vec![9, 10]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "shadow pid=9 home=b:70 nodes=- executors=0 forwarded=4 served=0 faults=0 \
             threads=2 comm=p9\n(2 more not shown)\n"
        );
        let me = proc_info(std::process::id());
        assert!(me.starts_with(" threads=") && !me.contains('?'), "{me}");
        assert_eq!(proc_info(u32::MAX), " threads=? comm=?");
        assert_eq!(proc_tasks(std::process::id())[0], std::process::id());
        assert!(proc_tasks(u32::MAX).is_empty());
    }

    /// A home with two SPAWN files (`--place`): its threads are listed once, each with its
    /// node: executors where their calls come from, the others here.
    #[test]
    fn ps_lists_each_thread_of_a_home_with_its_node() {
        let mut fake = Fake::new(None);
        fake.ps.count = 2;
        fake.ps.total = 2;
        let home = PsEntry {
            pid: 40,
            role: ROLE_HOME,
            home_node: 0,
            home_pid: 40,
            nodes: 0b10,
            executors: 1,
            ..Default::default()
        };
        fake.ps.procs[0] = home;
        fake.ps.procs[1] = home;
        fake.threads.count = 3;
        fake.threads.total = 3;
        let exec = |tid, pid, node, calls| ThreadEntry {
            tid,
            pid,
            node,
            calls,
            ..Default::default()
        };
        fake.threads.threads[0] = exec(42, 40, 1, 7);
        fake.threads.threads[1] = exec(43, 40, NODE_UNKNOWN, 0);
        fake.threads.threads[2] = exec(41, 77, 1, 3); // same tid space, another process
        let mut out = Vec::new();
        ps_with(&fake, &mut out, &|_| String::new(), &|_| {
            vec![40, 41, 42, 43]
        })
        .unwrap();
        let line = "home pid=40 home=a:40 nodes=b executors=1 forwarded=0 served=0 faults=0\n";
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "{line}  thread 40 node=a\n  thread 41 node=a\n  thread 42 node=b calls=7\n  \
                 thread 43 node=? calls=0\n{line}"
            )
        );
    }

    /// A memfd stands in for the window: the record is read back through a read-only map.
    #[test]
    fn records_are_read_through_a_read_only_mapping() {
        use std::os::unix::fs::FileExt;
        let fd = memfd(3);
        let rec = record::encode(b"/bin/true", &[b"X=y".to_vec()]);
        let file = std::fs::File::from(fd.try_clone().unwrap());
        file.write_all_at(&rec, PAGE).unwrap();
        let back = read_record(fd.as_fd(), PAGE, rec.len() as u64).unwrap();
        assert_eq!(record::decode(&back).unwrap().exe, b"/bin/true");
        // The record's bytes do not fit the length the driver gave: refused.
        let short = read_record(fd.as_fd(), PAGE, 70).unwrap();
        assert!(record::decode(&short).is_err());
    }
}
