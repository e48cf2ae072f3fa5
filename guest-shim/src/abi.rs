//! The `/dev/offload` ioctl ABI: a field-by-field mirror of `guest-shim/kmod/offload_abi.h`
//! (structs in `#[repr(C)]`, ioctl numbers computed like `_IOR`/`_IOWR`). The tests check the
//! sizes and numbers against the values the C header gives, and, where a C compiler is
//! installed, against the header itself.

use std::mem::size_of;

/// ioctl magic ("type") of every offload ioctl.
pub const IOC_MAGIC: u8 = b'O';
/// Length of a node name field (NUL-padded, not terminated when full).
pub const NAME_LEN: usize = 16;
/// Entries of [`Peers::peers`].
pub const MAX_PEERS: usize = 16;
/// Largest [`Ping::data`] payload.
pub const PING_MAX: usize = 256;

/// Peer states as the device reports them.
pub const PEER_DOWN: u32 = 0;
/// The peer's monitor is connected.
pub const PEER_UP: u32 = 1;
/// The peer was connected and went silent past the heartbeat timeout.
pub const PEER_LOST: u32 = 2;

/// `struct offload_node_info`: this node.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub index: u32,
    pub num_nodes: u32,
    pub name: [u8; NAME_LEN],
}

/// `struct offload_peer`: one other node.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peer {
    pub index: u32,
    pub state: u32,
    pub name: [u8; NAME_LEN],
    pub reserved: u64,
}

/// `struct offload_peers`: the first `count` entries of `peers` are valid.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peers {
    pub count: u32,
    pub pad: u32,
    pub peers: [Peer; MAX_PEERS],
}

/// `struct offload_ping`: `node` and `data[..len]` in; the echoed bytes and `rtt_ns` out.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    pub node: u32,
    pub len: u32,
    pub rtt_ns: u64,
    pub data: [u8; PING_MAX],
}

impl Default for Ping {
    fn default() -> Self {
        Self {
            node: 0,
            len: 0,
            rtt_ns: 0,
            data: [0; PING_MAX],
        }
    }
}

/// `struct offload_window_info`: the memory window and this node's slice.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowInfo {
    /// Guest-physical address of window offset 0.
    pub base: u64,
    /// Bytes, a multiple of `page_size`.
    pub size: u64,
    /// Window offset of the pages this node manages (what `ALLOC` hands out).
    pub slice_offset: u64,
    pub slice_len: u64,
    pub page_size: u32,
    pub node_index: u32,
}

/// `struct offload_alloc`: `pages` in, `offset` (window offset of the run) out.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Alloc {
    pub pages: u64,
    pub offset: u64,
}

/// `struct offload_free`: a run (or part of one) this file allocated.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Free {
    pub offset: u64,
    pub pages: u64,
}

/// Arguments of a system call (x86_64: rdi, rsi, rdx, r10, r8, r9).
pub const SYSCALL_ARGS: usize = 6;

/// `struct offload_syscall`: a call to forward to `node`'s executor `tid`; `ret` out.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Syscall {
    pub node: u32,
    pub tid: u32,
    pub nr: u64,
    pub args: [u64; SYSCALL_ARGS],
    /// The call's return value at home (`-errno` as Linux returns it).
    pub ret: i64,
}

/// `struct offload_exec_call`: a call `EXEC_WAIT` handed to this executor.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecCall {
    /// Names the call for `EXEC_DONE`.
    pub token: u64,
    /// The caller's node.
    pub src_node: u32,
    /// In: `OFFLOAD_EXEC_SIGNALS` (signals handed out as records; `offload serve` sets 0).
    pub flags: u32,
    /// The caller's record: home node, home tid, number, arguments.
    pub node: u32,
    pub tid: u32,
    pub nr: u64,
    pub args: [u64; SYSCALL_ARGS],
}

/// `struct offload_exec_done`: the result of a handed-out call.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecDone {
    pub token: u64,
    pub ret: i64,
}

/// `struct offload_spawn`: start a shadow of the caller on `node` from the spawn record at
/// window offset `rec_off` (page aligned), `rec_len` bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spawn {
    pub node: u32,
    pub reserved: u32,
    pub rec_off: u64,
    pub rec_len: u64,
}

/// `struct offload_shadow_attach`: the caller is the shadow of `home_pid` of `home_node`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShadowAttach {
    pub home_node: u32,
    pub home_pid: u32,
    pub home_tid: u32,
    pub reserved: u32,
}

/// `OFFLOAD_ROLE_HOME`: the file's process spawned shadows on other nodes.
pub const ROLE_HOME: u32 = 1;
/// `OFFLOAD_ROLE_SHADOW`: the file's process hosts threads of another node's process.
pub const ROLE_SHADOW: u32 = 2;
/// Entries of [`Ps::procs`].
pub const PS_MAX: usize = 32;

/// `struct offload_ps_entry`: one marked open file and its counters.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PsEntry {
    /// The process that spawned or attached (this VM's pid).
    pub pid: u32,
    /// [`ROLE_HOME`] or [`ROLE_SHADOW`].
    pub role: u32,
    /// Home: this node; shadow: its home.
    pub home_node: u32,
    /// Home: `pid`; shadow: the process's pid at home.
    pub home_pid: u32,
    /// Home: bit N set = it spawned on node N.
    pub nodes: u64,
    /// Executors registered through the file.
    pub executors: u32,
    pub reserved: u32,
    /// `SYSCALL`s through the file that came back with a result.
    pub forwarded: u64,
    /// `EXEC_DONE` answers sent through the file.
    pub served: u64,
    /// Window page faults in the file's mappings, on this node.
    pub faults: u64,
    pub reserved2: u64,
}

/// `struct offload_ps`: the first `count` entries are valid; `total` marked files exist.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ps {
    pub count: u32,
    pub total: u32,
    pub procs: [PsEntry; PS_MAX],
}

impl Default for Ps {
    fn default() -> Self {
        Self {
            count: 0,
            total: 0,
            procs: [PsEntry::default(); PS_MAX],
        }
    }
}

impl Ps {
    /// The valid entries (`count` bounded by the array).
    pub fn valid(&self) -> &[PsEntry] {
        &self.procs[..(self.count as usize).min(PS_MAX)]
    }
}

/// Entries of [`Threads::threads`].
pub const THREADS_MAX: usize = 128;
/// `OFFLOAD_NODE_UNKNOWN`: an executor that has not served a call yet.
pub const NODE_UNKNOWN: u32 = u32::MAX;

/// `struct offload_thread_entry`: one executor of this VM, the home side of a thread that runs
/// on another node.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadEntry {
    /// The executor's tid, which is the tid the program sees.
    pub tid: u32,
    /// Its process (0: the thread is gone).
    pub pid: u32,
    /// The node its calls come from ([`NODE_UNKNOWN`] before the first).
    pub node: u32,
    pub reserved: u32,
    /// Calls queued for it.
    pub calls: u64,
}

/// `struct offload_threads`: the first `count` entries are valid; `total` executors exist.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads {
    pub count: u32,
    pub total: u32,
    pub threads: [ThreadEntry; THREADS_MAX],
}

impl Default for Threads {
    fn default() -> Self {
        Self {
            count: 0,
            total: 0,
            threads: [ThreadEntry::default(); THREADS_MAX],
        }
    }
}

impl Threads {
    /// The valid entries (`count` bounded by the array).
    pub fn valid(&self) -> &[ThreadEntry] {
        &self.threads[..(self.count as usize).min(THREADS_MAX)]
    }
}

impl Peers {
    /// The valid entries (`count` bounded by the array, should the driver misbehave).
    pub fn valid(&self) -> &[Peer] {
        &self.peers[..(self.count as usize).min(MAX_PEERS)]
    }
}

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, type, nr, size)` of `<asm-generic/ioctl.h>` (x86: 2 direction bits at 30,
/// 14 size bits at 16, type at 8, number at 0).
const fn ioc(dir: u32, nr: u8, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((IOC_MAGIC as u32) << 8) | nr as u32
}

/// `OFFLOAD_IOC_NODE_INFO`: `_IOR('O', 0x40, struct offload_node_info)`.
pub const IOC_NODE_INFO: u32 = ioc(IOC_READ, 0x40, size_of::<NodeInfo>());
/// `OFFLOAD_IOC_PEERS`: `_IOR('O', 0x41, struct offload_peers)`.
pub const IOC_PEERS: u32 = ioc(IOC_READ, 0x41, size_of::<Peers>());
/// `OFFLOAD_IOC_PING`: `_IOWR('O', 0x42, struct offload_ping)`.
pub const IOC_PING: u32 = ioc(IOC_READ | IOC_WRITE, 0x42, size_of::<Ping>());
/// `OFFLOAD_IOC_WINDOW_INFO`: `_IOR('O', 0x43, struct offload_window_info)`.
pub const IOC_WINDOW_INFO: u32 = ioc(IOC_READ, 0x43, size_of::<WindowInfo>());
/// `OFFLOAD_IOC_ALLOC`: `_IOWR('O', 0x44, struct offload_alloc)`.
pub const IOC_ALLOC: u32 = ioc(IOC_READ | IOC_WRITE, 0x44, size_of::<Alloc>());
/// `OFFLOAD_IOC_FREE`: `_IOW('O', 0x45, struct offload_free)`.
pub const IOC_FREE: u32 = ioc(IOC_WRITE, 0x45, size_of::<Free>());
/// `OFFLOAD_IOC_SYSCALL`: `_IOWR('O', 0x46, struct offload_syscall)`.
pub const IOC_SYSCALL: u32 = ioc(IOC_READ | IOC_WRITE, 0x46, size_of::<Syscall>());
/// `OFFLOAD_IOC_EXEC_WAIT`: `_IOR('O', 0x47, struct offload_exec_call)`.
pub const IOC_EXEC_WAIT: u32 = ioc(IOC_READ, 0x47, size_of::<ExecCall>());
/// `OFFLOAD_IOC_EXEC_DONE`: `_IOW('O', 0x48, struct offload_exec_done)`.
pub const IOC_EXEC_DONE: u32 = ioc(IOC_WRITE, 0x48, size_of::<ExecDone>());
/// `OFFLOAD_IOC_SPAWN`: `_IOWR('O', 0x49, struct offload_spawn)`.
pub const IOC_SPAWN: u32 = ioc(IOC_READ | IOC_WRITE, 0x49, size_of::<Spawn>());
/// `OFFLOAD_IOC_SHADOW_ATTACH`: `_IOW('O', 0x4a, struct offload_shadow_attach)`.
pub const IOC_SHADOW_ATTACH: u32 = ioc(IOC_WRITE, 0x4a, size_of::<ShadowAttach>());
/// `OFFLOAD_IOC_PS`: `_IOR('O', 0x4b, struct offload_ps)`.
pub const IOC_PS: u32 = ioc(IOC_READ, 0x4b, size_of::<Ps>());
/// `OFFLOAD_IOC_THREADS`: `_IOR('O', 0x4c, struct offload_threads)`.
pub const IOC_THREADS: u32 = ioc(IOC_READ, 0x4c, size_of::<Threads>());

/// A name field as text: up to the first NUL, invalid UTF-8 replaced.
pub fn name_str(name: &[u8; NAME_LEN]) -> String {
    let end = name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    String::from_utf8_lossy(&name[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of};

    /// Values printed by a C program including offload_abi.h (gcc 12, x86_64).
    #[test]
    fn layout_matches_the_c_header() {
        assert_eq!(size_of::<NodeInfo>(), 24);
        assert_eq!(size_of::<Peer>(), 32);
        assert_eq!(size_of::<Peers>(), 520);
        assert_eq!(size_of::<Ping>(), 272);
        assert_eq!(align_of::<Ping>(), 8);
        assert_eq!(offset_of!(Peer, reserved), 24);
        assert_eq!(offset_of!(Peers, peers), 8);
        assert_eq!(offset_of!(Ping, rtt_ns), 8);
        assert_eq!(offset_of!(Ping, data), 16);
        assert_eq!(size_of::<WindowInfo>(), 40);
        assert_eq!(offset_of!(WindowInfo, slice_len), 24);
        assert_eq!(offset_of!(WindowInfo, page_size), 32);
        assert_eq!(offset_of!(WindowInfo, node_index), 36);
        assert_eq!(size_of::<Alloc>(), 16);
        assert_eq!(offset_of!(Alloc, offset), 8);
        assert_eq!(size_of::<Free>(), 16);
        assert_eq!(offset_of!(Free, pages), 8);
        assert_eq!(size_of::<Syscall>(), 72);
        assert_eq!(offset_of!(Syscall, nr), 8);
        assert_eq!(offset_of!(Syscall, args), 16);
        assert_eq!(offset_of!(Syscall, ret), 64);
        assert_eq!(size_of::<ExecCall>(), 80);
        assert_eq!(offset_of!(ExecCall, src_node), 8);
        assert_eq!(offset_of!(ExecCall, node), 16);
        assert_eq!(offset_of!(ExecCall, tid), 20);
        assert_eq!(offset_of!(ExecCall, nr), 24);
        assert_eq!(offset_of!(ExecCall, args), 32);
        assert_eq!(size_of::<ExecDone>(), 16);
        assert_eq!(offset_of!(ExecDone, ret), 8);
        assert_eq!(size_of::<Spawn>(), 24);
        assert_eq!(offset_of!(Spawn, rec_off), 8);
        assert_eq!(offset_of!(Spawn, rec_len), 16);
        assert_eq!(size_of::<ShadowAttach>(), 16);
        assert_eq!(offset_of!(ShadowAttach, home_tid), 8);
        assert_eq!(size_of::<PsEntry>(), 64);
        assert_eq!(offset_of!(PsEntry, nodes), 16);
        assert_eq!(offset_of!(PsEntry, executors), 24);
        assert_eq!(offset_of!(PsEntry, forwarded), 32);
        assert_eq!(offset_of!(PsEntry, served), 40);
        assert_eq!(offset_of!(PsEntry, faults), 48);
        assert_eq!(size_of::<Ps>(), 2056);
        assert_eq!(offset_of!(Ps, procs), 8);
        assert_eq!(size_of::<ThreadEntry>(), 24);
        assert_eq!(offset_of!(ThreadEntry, node), 8);
        assert_eq!(offset_of!(ThreadEntry, calls), 16);
        assert_eq!(size_of::<Threads>(), 3080);
    }

    #[test]
    fn ioctl_numbers_match_the_c_header() {
        assert_eq!(IOC_NODE_INFO, 0x8018_4f40);
        assert_eq!(IOC_PEERS, 0x8208_4f41);
        assert_eq!(IOC_PING, 0xc110_4f42);
        assert_eq!(IOC_WINDOW_INFO, 0x8028_4f43);
        assert_eq!(IOC_ALLOC, 0xc010_4f44);
        assert_eq!(IOC_FREE, 0x4010_4f45);
        assert_eq!(IOC_SYSCALL, 0xc048_4f46);
        assert_eq!(IOC_EXEC_WAIT, 0x8050_4f47);
        assert_eq!(IOC_EXEC_DONE, 0x4010_4f48);
        assert_eq!(IOC_SPAWN, 0xc018_4f49);
        assert_eq!(IOC_SHADOW_ATTACH, 0x4010_4f4a);
        assert_eq!(IOC_PS, 0x8808_4f4b);
        assert_eq!(IOC_THREADS, 0x8c08_4f4c);
    }

    #[test]
    fn ps_valid_is_bounded() {
        let p = Ps {
            count: 99,
            ..Default::default()
        };
        assert_eq!(p.valid().len(), PS_MAX);
        let t = Threads {
            count: 999,
            ..Default::default()
        };
        assert_eq!(t.valid().len(), THREADS_MAX);
    }

    #[test]
    fn names_stop_at_nul() {
        let mut n = [0u8; NAME_LEN];
        n[..2].copy_from_slice(b"ab");
        assert_eq!(name_str(&n), "ab");
        assert_eq!(name_str(&[b'x'; NAME_LEN]), "x".repeat(16));
    }

    #[test]
    fn peers_valid_is_bounded() {
        let p = Peers {
            count: 99,
            ..Default::default()
        };
        assert_eq!(p.valid().len(), MAX_PEERS);
    }

    /// Compiles a program against the real header and compares its output with ours (skipped
    /// when no C compiler or kernel UAPI headers are installed).
    #[test]
    fn header_compiled_by_cc_agrees() {
        let Some(out) = c_header_values() else {
            eprintln!("skipped: no working `cc` with <linux/ioctl.h>");
            return;
        };
        let ours = format!(
            "{} {} {} {} {:#x} {:#x} {:#x} {} {} {} {} {:#x} {:#x} {:#x} \
             {} {} {} {} {} {:#x} {:#x} {:#x} \
             {} {} {} {} {} {} {:#x} {:#x} {:#x} {} {} {} {:#x}",
            size_of::<NodeInfo>(),
            size_of::<Peer>(),
            size_of::<Peers>(),
            size_of::<Ping>(),
            IOC_NODE_INFO,
            IOC_PEERS,
            IOC_PING,
            size_of::<WindowInfo>(),
            offset_of!(WindowInfo, node_index),
            size_of::<Alloc>(),
            size_of::<Free>(),
            IOC_WINDOW_INFO,
            IOC_ALLOC,
            IOC_FREE,
            size_of::<Syscall>(),
            offset_of!(Syscall, ret),
            size_of::<ExecCall>(),
            offset_of!(ExecCall, args),
            size_of::<ExecDone>(),
            IOC_SYSCALL,
            IOC_EXEC_WAIT,
            IOC_EXEC_DONE,
            size_of::<Spawn>(),
            size_of::<ShadowAttach>(),
            size_of::<PsEntry>(),
            offset_of!(PsEntry, faults),
            size_of::<Ps>(),
            offset_of!(Ps, procs),
            IOC_SPAWN,
            IOC_SHADOW_ATTACH,
            IOC_PS,
            size_of::<ThreadEntry>(),
            offset_of!(ThreadEntry, calls),
            size_of::<Threads>(),
            IOC_THREADS
        );
        assert_eq!(out.trim(), ours);
    }

    fn c_header_values() -> Option<String> {
        use std::process::Command;
        let kmod = concat!(env!("CARGO_MANIFEST_DIR"), "/kmod");
        let dir = std::env::temp_dir().join(format!("offload-abi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let src = dir.join("abi.c");
        std::fs::write(
            &src,
            "#include <stdio.h>\n#include <stddef.h>\n#include \"offload_abi.h\"\n\
             int main(void) {\n\
             printf(\"%zu %zu %zu %zu %#x %#x %#x \", sizeof(struct offload_node_info),\n\
             sizeof(struct offload_peer), sizeof(struct offload_peers),\n\
             sizeof(struct offload_ping), (unsigned)OFFLOAD_IOC_NODE_INFO,\n\
             (unsigned)OFFLOAD_IOC_PEERS, (unsigned)OFFLOAD_IOC_PING);\n\
             printf(\"%zu %zu %zu %zu %#x %#x %#x \", sizeof(struct offload_window_info),\n\
             offsetof(struct offload_window_info, node_index), sizeof(struct offload_alloc),\n\
             sizeof(struct offload_free), (unsigned)OFFLOAD_IOC_WINDOW_INFO,\n\
             (unsigned)OFFLOAD_IOC_ALLOC, (unsigned)OFFLOAD_IOC_FREE);\n\
             printf(\"%zu %zu %zu %zu %zu %#x %#x %#x \", sizeof(struct offload_syscall),\n\
             offsetof(struct offload_syscall, ret), sizeof(struct offload_exec_call),\n\
             offsetof(struct offload_exec_call, args), sizeof(struct offload_exec_done),\n\
             (unsigned)OFFLOAD_IOC_SYSCALL, (unsigned)OFFLOAD_IOC_EXEC_WAIT,\n\
             (unsigned)OFFLOAD_IOC_EXEC_DONE);\n\
             printf(\"%zu %zu %zu %zu %zu %zu %#x %#x %#x \", sizeof(struct offload_spawn),\n\
             sizeof(struct offload_shadow_attach), sizeof(struct offload_ps_entry),\n\
             offsetof(struct offload_ps_entry, faults), sizeof(struct offload_ps),\n\
             offsetof(struct offload_ps, procs), (unsigned)OFFLOAD_IOC_SPAWN,\n\
             (unsigned)OFFLOAD_IOC_SHADOW_ATTACH, (unsigned)OFFLOAD_IOC_PS);\n\
             printf(\"%zu %zu %zu %#x\\n\", sizeof(struct offload_thread_entry),\n\
             offsetof(struct offload_thread_entry, calls), sizeof(struct offload_threads),\n\
             (unsigned)OFFLOAD_IOC_THREADS);\nreturn 0;\n}\n",
        )
        .ok()?;
        let exe = dir.join("abi");
        let built = Command::new("cc")
            .arg("-I")
            .arg(kmod)
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .output()
            .ok()?;
        let out = if built.status.success() {
            Command::new(&exe).output().ok()
        } else {
            None
        };
        let _ = std::fs::remove_dir_all(&dir);
        String::from_utf8(out?.stdout).ok()
    }
}
