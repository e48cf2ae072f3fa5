//! `offload serve` and `offload call`: forwarded system calls by hand, before the shim
//! exists (docs/offload-threads.md, section 4).
//!
//! - `serve` (at home) makes its thread the executor of its tid, prints
//!   `executor pid=P tid=T`, then runs every call forwarded to that tid with a raw
//!   `syscall(2)` and sends the result back (`-errno` on failure).
//! - `call` (anywhere) forwards one call to an executor of a node and prints `ret=R`.
//!
//! Pointer arguments must mean the same memory on both sides: both commands map window
//! pages at fixed addresses (`--map OFF@ADDR`), and `call --str` writes path strings there
//! first; the monitors keep those pages coherent. The logic is written against the
//! [`Offload`], [`WindowDevice`] and [`Forward`] traits and tested on a memfd standing in
//! for the window.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::abi::{name_str, ExecCall, SYSCALL_ARGS};
use crate::cli::{CallArgs, MapSpec, ServeArgs};
use crate::device::{DeviceError, Forward, Offload, WindowDevice};
use crate::report;
use crate::run::{list_nodes, RunError};

/// Window pages mapped `MAP_SHARED` at a fixed address, unmapped on drop.
#[derive(Debug)]
pub struct FixedMapping {
    addr: u64,
    len: u64,
}

impl FixedMapping {
    /// Maps `spec` (window offset, address, length: page aligned) from `fd`. Uses
    /// `MAP_FIXED_NOREPLACE`: an address already in use (this program's own memory) is an
    /// error (`EEXIST`), never silently replaced.
    pub fn new(fd: BorrowedFd<'_>, spec: &MapSpec) -> io::Result<Self> {
        let einval = || io::Error::from_raw_os_error(libc::EINVAL);
        let len = usize::try_from(spec.len).map_err(|_| einval())?;
        let off = libc::off_t::try_from(spec.off).map_err(|_| einval())?;
        // SAFETY: NOREPLACE never touches an existing mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                spec.addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
                fd.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if p as u64 != spec.addr {
            // A kernel without MAP_FIXED_NOREPLACE takes the address as a hint only.
            // SAFETY: the mapping just created, nothing refers to it.
            unsafe { libc::munmap(p, len) };
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        Ok(Self {
            addr: spec.addr,
            len: spec.len,
        })
    }

    /// Whether `[addr, addr + len)` lies inside this mapping.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.addr
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= self.addr + self.len)
    }

    /// Writes `text` and a NUL at `addr`, which with `text.len() + 1` bytes must lie in
    /// the mapping (checked: panics otherwise).
    pub fn write_cstr(&self, addr: u64, text: &str) {
        assert!(
            self.contains(addr, text.len() as u64 + 1),
            "outside the mapping"
        );
        let p = addr as *mut u8;
        // SAFETY: the bytes lie inside this live, writable mapping (checked above); nobody
        // else uses them before the call that follows is posted.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), p, text.len());
            p.add(text.len()).write(0);
        }
    }
}

impl Drop for FixedMapping {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping created in `new`; no reference into it is kept.
        unsafe {
            libc::munmap(self.addr as *mut libc::c_void, self.len as usize);
        }
    }
}

/// Maps every `--map` (each checked against the window first); `fail` shapes the error.
fn map_all(
    dev: &dyn WindowDevice,
    specs: &[MapSpec],
    fail: fn(String) -> RunError,
) -> Result<Vec<FixedMapping>, RunError> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let w = dev
        .window_info()
        .map_err(|e| fail(device_message(&e, report::window_error)))?;
    specs
        .iter()
        .map(|m| {
            if !matches!(m.off.checked_add(m.len), Some(end) if end <= w.size) {
                return Err(fail(format!(
                    "window offset {:#x} (+{} bytes) is outside the window ({} bytes)",
                    m.off, m.len, w.size
                )));
            }
            FixedMapping::new(dev.map_fd(), m).map_err(|e| {
                fail(format!(
                    "cannot map window offset {:#x} at {:#x}: {e}",
                    m.off, m.addr
                ))
            })
        })
        .collect()
}

/// The message for a failed ioctl: `errno_message(errno)`, or the device error itself.
fn device_message(e: &DeviceError, errno_message: fn(i32) -> String) -> String {
    match e.errno() {
        Some(errno) => errno_message(errno),
        None => e.to_string(),
    }
}

/// Writes each `--str` into the mapping that holds it.
fn write_strs(maps: &[FixedMapping], strs: &[(u64, String)]) -> Result<(), RunError> {
    for (addr, text) in strs {
        let need = text.len() as u64 + 1;
        let m = maps
            .iter()
            .find(|m| m.contains(*addr, need))
            .ok_or_else(|| {
                RunError::Call(format!(
                    "--str at {addr:#x}: {need} bytes do not fit inside a --map"
                ))
            })?;
        m.write_cstr(*addr, text);
    }
    Ok(())
}

/// Runs the call with a raw `syscall(2)`: its return value, or `-errno`.
pub fn execute(call: &ExecCall) -> i64 {
    let a = call.args;
    // SAFETY: this is the executor's purpose: it runs whatever number and arguments it was
    // sent, as the forwarding thread would have run them itself. Pointer arguments are
    // meant to name window pages this process mapped at the same addresses.
    let r = unsafe { libc::syscall(call.nr as libc::c_long, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r == -1 {
        -i64::from(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    } else {
        r
    }
}

/// This thread's id and its process id.
fn ids() -> (u32, u32) {
    // SAFETY: getpid and gettid have no preconditions.
    unsafe { (libc::getpid() as u32, libc::gettid() as u32) }
}

/// The next call: the one `exec_poll` found, else `exec_wait` (signals just retry).
fn next_call(dev: &dyn Forward, first: &mut Option<ExecCall>) -> Result<ExecCall, DeviceError> {
    if let Some(call) = first.take() {
        return Ok(call);
    }
    loop {
        match dev.exec_wait() {
            Err(e) if e.errno() == Some(libc::EINTR) => continue,
            r => return r,
        }
    }
}

/// Sends a result back (signals just retry: the call stays ours until it is sent).
fn answer(dev: &dyn Forward, token: u64, ret: i64) -> Result<(), DeviceError> {
    loop {
        match dev.exec_done(token, ret) {
            Err(e) if e.errno() == Some(libc::EINTR) => continue,
            r => return r,
        }
    }
}

/// `offload serve`. Registers before it prints its ids, so a call sent as soon as the line
/// is read finds the executor.
pub fn serve<D: WindowDevice + Forward>(
    dev: &D,
    args: &ServeArgs,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    let _maps = map_all(dev, &args.maps, RunError::Serve)?;
    let (pid, tid) = ids();
    let serve_err = |e: DeviceError| {
        RunError::Serve(match e.errno() {
            Some(errno) => report::exec_error(errno, tid),
            None => e.to_string(),
        })
    };
    let mut first = dev.exec_poll().map_err(serve_err)?;
    writeln!(out, "{}", report::executor_line(pid, tid))?;
    out.flush()?;
    let mut served = 0u64;
    // Without --count: u64::MAX calls, for ever in practice.
    while served < args.count.unwrap_or(u64::MAX) {
        let call = next_call(dev, &mut first).map_err(serve_err)?;
        let ret = execute(&call);
        answer(dev, call.token, ret).map_err(serve_err)?;
        writeln!(out, "{}", report::served_line(call.nr, ret))?;
        out.flush()?;
        served += 1;
    }
    Ok(())
}

/// The index of NODE: a number as is (the device judges it), else a name of the node list
/// (this node included: the device then says it cannot forward there).
fn node_index(dev: &dyn Offload, given: &str) -> Result<u32, RunError> {
    if let Ok(i) = given.parse::<u32>() {
        return Ok(i);
    }
    let me = dev
        .node_info()
        .map_err(|e| RunError::Call(device_message(&e, report::common_error)))?;
    if name_str(&me.name) == given {
        return Ok(me.index);
    }
    let nodes = list_nodes(dev).map_err(|e| RunError::Call(e.to_string()))?;
    nodes
        .iter()
        .find(|n| n.name == given)
        .map(|n| n.index)
        .ok_or_else(|| RunError::Call(format!("no node named {given}")))
}

/// `offload call`: prints `ret=R`; an error says why the call did not run.
pub fn call<D: Offload + WindowDevice + Forward>(
    dev: &D,
    args: &CallArgs,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    let node = node_index(dev, &args.node)?;
    let maps = map_all(dev, &args.maps, RunError::Call)?;
    write_strs(&maps, &args.strs)?;
    let mut regs = [0u64; SYSCALL_ARGS];
    regs[..args.args.len()].copy_from_slice(&args.args);
    let ret = dev
        .syscall(node, args.tid, args.nr, regs)
        .map_err(|e| match e.errno() {
            Some(errno) => RunError::Call(report::call_error(errno, &args.node, args.tid)),
            None => RunError::Device(e),
        })?;
    writeln!(out, "ret={ret}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{NodeInfo, Peer, Peers, WindowInfo, NAME_LEN, PEER_UP};
    use crate::cli::PAGE;
    use std::fs::File;
    use std::os::fd::{AsFd, FromRawFd};
    use std::os::unix::fs::FileExt;
    use std::sync::Mutex;

    fn name(s: &str) -> [u8; NAME_LEN] {
        let mut n = [0; NAME_LEN];
        n[..s.len()].copy_from_slice(s.as_bytes());
        n
    }

    /// A forwarded record: node, tid, nr, args.
    type Sent = (u32, u32, u64, [u64; SYSCALL_ARGS]);

    /// A device: node a (index 0, self) and b (1, up); a 64-page window on a memfd;
    /// `calls` are handed out by EXEC_WAIT in order, EXEC_DONE results land in `done`;
    /// SYSCALL records land in `sent` and are answered with `answer`.
    struct Fake {
        window: File,
        calls: Mutex<Vec<ExecCall>>,
        done: Mutex<Vec<(u64, i64)>>,
        sent: Mutex<Vec<Sent>>,
        answer: Result<i64, i32>,
    }

    impl Fake {
        fn new(calls: Vec<ExecCall>, answer: Result<i64, i32>) -> Self {
            // SAFETY: a NUL-terminated name; the fd is checked and owned by `File`.
            let fd = unsafe { libc::memfd_create(c"offload-test-forward".as_ptr(), 0) };
            assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
            // SAFETY: a fresh fd nobody else owns.
            let window = unsafe { File::from_raw_fd(fd) };
            window.set_len(64 * PAGE).unwrap();
            Self {
                window,
                calls: Mutex::new(calls),
                done: Mutex::default(),
                sent: Mutex::default(),
                answer,
            }
        }
    }

    fn ioctl_err(op: &'static str, errno: i32) -> DeviceError {
        DeviceError::Ioctl { op, errno }
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
            Err(ioctl_err("PING", libc::ENOTTY))
        }
    }

    impl WindowDevice for Fake {
        fn window_info(&self) -> Result<WindowInfo, DeviceError> {
            Ok(WindowInfo {
                base: 0x10_0000_0000,
                size: 64 * PAGE,
                slice_offset: 0,
                slice_len: 32 * PAGE,
                page_size: PAGE as u32,
                node_index: 0,
            })
        }
        fn alloc(&self, _: u64) -> Result<u64, DeviceError> {
            Err(ioctl_err("ALLOC", libc::ENOTTY))
        }
        fn free(&self, _: u64, _: u64) -> Result<(), DeviceError> {
            Err(ioctl_err("FREE", libc::ENOTTY))
        }
        fn map_fd(&self) -> BorrowedFd<'_> {
            self.window.as_fd()
        }
    }

    impl Forward for Fake {
        fn syscall(
            &self,
            node: u32,
            tid: u32,
            nr: u64,
            args: [u64; SYSCALL_ARGS],
        ) -> Result<i64, DeviceError> {
            self.sent.lock().unwrap().push((node, tid, nr, args));
            self.answer.map_err(|e| ioctl_err("SYSCALL", e))
        }
        fn exec_poll(&self) -> Result<Option<ExecCall>, DeviceError> {
            Ok(None)
        }
        /// Hands out the next call; with none left, ENODEV (a test asked for too many).
        fn exec_wait(&self) -> Result<ExecCall, DeviceError> {
            let mut calls = self.calls.lock().unwrap();
            if calls.is_empty() {
                return Err(ioctl_err("EXEC_WAIT", libc::ENODEV));
            }
            Ok(calls.remove(0))
        }
        fn exec_done(&self, token: u64, ret: i64) -> Result<(), DeviceError> {
            self.done.lock().unwrap().push((token, ret));
            Ok(())
        }
    }

    fn exec_call(token: u64, nr: i64, args: &[u64]) -> ExecCall {
        let mut c = ExecCall {
            token,
            src_node: 1,
            tid: 9,
            nr: nr as u64,
            ..Default::default()
        };
        c.args[..args.len()].copy_from_slice(args);
        c
    }

    fn map(off: u64, addr: u64) -> MapSpec {
        MapSpec {
            off,
            addr,
            len: PAGE,
        }
    }

    /// Distinct addresses per test: the tests run as threads of one process.
    const SERVE_ADDR: u64 = 0x2100_0000_0000;
    const CALL_ADDR: u64 = 0x2200_0000_0000;
    const ERR_ADDR: u64 = 0x2300_0000_0000;

    /// serve runs what it is sent, with pointers into its window mapping: mkdir of a path
    /// in the window (twice: the second gives -EEXIST), getpid, and a write of window bytes
    /// to a pipe; each result goes back with its token.
    #[test]
    fn serve_runs_calls_with_window_pointers() {
        let dir = std::env::temp_dir().join(format!("offload-serve-{}", std::process::id()));
        let path = format!("{}\0", dir.display());
        let fake = Fake::new(vec![], Ok(0));
        fake.window.write_at(path.as_bytes(), 3 * PAGE).unwrap();
        fake.window.write_at(b"hello", 3 * PAGE + 256).unwrap();
        let mut pipe = [0; 2];
        // SAFETY: a valid array of two fds.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        let (r, w) = (pipe[0], pipe[1] as u64);
        *fake.calls.lock().unwrap() = vec![
            exec_call(11, libc::SYS_mkdir, &[SERVE_ADDR, 0o755]),
            exec_call(12, libc::SYS_mkdir, &[SERVE_ADDR, 0o755]),
            exec_call(13, libc::SYS_getpid, &[]),
            exec_call(14, libc::SYS_write, &[w, SERVE_ADDR + 256, 5]),
        ];
        let args = ServeArgs {
            count: Some(4),
            maps: vec![map(3 * PAGE, SERVE_ADDR)],
        };
        let mut out = Vec::new();
        serve(&fake, &args, &mut out).unwrap();
        assert!(dir.is_dir());
        std::fs::remove_dir(&dir).unwrap();
        let pid = i64::from(std::process::id());
        assert_eq!(
            *fake.done.lock().unwrap(),
            vec![(11, 0), (12, -i64::from(libc::EEXIST)), (13, pid), (14, 5)]
        );
        let mut buf = [0u8; 5];
        // SAFETY: reading into a live buffer of 5 bytes; then closing our own fds.
        unsafe {
            assert_eq!(libc::read(r, buf.as_mut_ptr().cast(), 5), 5);
            libc::close(r);
            libc::close(w as i32);
        }
        assert_eq!(&buf, b"hello");
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<_> = out.lines().collect();
        assert!(
            lines[0].starts_with(&format!("executor pid={pid} tid=")),
            "{out}"
        );
        assert_eq!(lines[1], "served nr=83 ret=0");
        assert_eq!(lines[2], "served nr=83 ret=-17");
        assert_eq!(lines[3], format!("served nr=39 ret={pid}"));
        assert_eq!(lines[4], "served nr=1 ret=5");
        assert_eq!(lines.len(), 5);
        // The mapping is gone: the address can be mapped again.
        drop(FixedMapping::new(fake.window.as_fd(), &map(0, SERVE_ADDR)).unwrap());
    }

    /// call writes its strings into the window (NUL-terminated), resolves the node by
    /// name or index, forwards the record and prints the result.
    #[test]
    fn call_writes_strings_and_forwards_the_record() {
        let fake = Fake::new(vec![], Ok(5));
        let args = CallArgs {
            node: "b".into(),
            tid: 9,
            maps: vec![map(2 * PAGE, CALL_ADDR)],
            strs: vec![(CALL_ADDR + 8, "/tmp/d".into())],
            nr: 83,
            args: vec![CALL_ADDR + 8, 0o755],
        };
        let mut out = Vec::new();
        call(&fake, &args, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "ret=5\n");
        let mut buf = [0xffu8; 8];
        fake.window.read_exact_at(&mut buf, 2 * PAGE + 8).unwrap();
        assert_eq!(&buf[..7], b"/tmp/d\0");
        let mut regs = [0; SYSCALL_ARGS];
        regs[..2].copy_from_slice(&[CALL_ADDR + 8, 0o755]);
        assert_eq!(fake.sent.lock().unwrap()[0], (1, 9, 83, regs));
        let by_index = CallArgs {
            node: "7".into(),
            maps: vec![],
            strs: vec![],
            ..args
        };
        call(&fake, &by_index, &mut Vec::new()).unwrap();
        assert_eq!(fake.sent.lock().unwrap()[1].0, 7);
    }

    fn call_err(fake: &Fake, args: &CallArgs) -> String {
        call(fake, args, &mut Vec::new()).unwrap_err().to_string()
    }

    /// Routing errors and bad maps/strings come back as `call: <message>`.
    #[test]
    fn call_errors_are_reported() {
        let args = CallArgs {
            node: "a".into(),
            tid: 4242,
            maps: vec![],
            strs: vec![],
            nr: 39,
            args: vec![],
        };
        assert_eq!(
            call_err(&Fake::new(vec![], Err(libc::ESRCH)), &args),
            "call: no executor for tid 4242 on node a (-ESRCH)"
        );
        let seven = CallArgs {
            node: "7".into(),
            ..args.clone()
        };
        assert_eq!(
            call_err(&Fake::new(vec![], Err(libc::EHOSTUNREACH)), &seven),
            "call: no node with index 7, or it is this node (-EHOSTUNREACH)"
        );
        let fake = Fake::new(vec![], Ok(0));
        let zz = CallArgs {
            node: "zz".into(),
            ..args.clone()
        };
        assert_eq!(call_err(&fake, &zz), "call: no node named zz");
        let outside = CallArgs {
            maps: vec![map(64 * PAGE, ERR_ADDR)],
            ..args.clone()
        };
        assert!(call_err(&fake, &outside).contains("outside the window"));
        let loose = CallArgs {
            maps: vec![map(0, ERR_ADDR)],
            strs: vec![(ERR_ADDR + PAGE - 2, "ab".into())],
            ..args
        };
        assert!(call_err(&fake, &loose).contains("do not fit inside a --map"));
        assert!(fake.sent.lock().unwrap().is_empty());
    }

    /// A fixed mapping never replaces memory already mapped there.
    #[test]
    fn fixed_mappings_do_not_replace_memory() {
        let fake = Fake::new(vec![], Ok(0));
        let here = vec![0u8; 2 * PAGE as usize];
        let addr = (here.as_ptr() as u64).next_multiple_of(PAGE);
        let e = FixedMapping::new(fake.window.as_fd(), &map(0, addr)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    }

    #[test]
    fn execute_returns_minus_errno() {
        let c = exec_call(1, libc::SYS_close, &[u64::MAX >> 33]);
        assert_eq!(execute(&c), -i64::from(libc::EBADF));
    }
}
