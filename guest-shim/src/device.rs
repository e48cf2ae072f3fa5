//! `/dev/offload`: opening it (telling "module not loaded" from "no device bound"), its
//! ioctls (nodes and ping: [`Offload`]; the memory window: [`WindowDevice`]; forwarded
//! system calls: [`Forward`]; shadows: [`Shadows`]) and the file the window is mapped from.
//! Errors keep the errno the driver returned; [`crate::report`] turns them into messages
//! that name the node concerned.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, RawFd};
use std::path::Path;

use crate::abi::{
    self, Alloc, ExecCall, ExecDone, Free, NodeInfo, Peers, Ping, Ps, ShadowAttach, Spawn, Syscall,
    Threads, WindowInfo, SYSCALL_ARGS,
};

/// Where the driver's misc device appears (devtmpfs) while an offload device is bound.
pub const DEVICE_PATH: &str = "/dev/offload";
/// Present whenever offload.ko is loaded, bound device or not.
pub const MODULE_PATH: &str = "/sys/module/offload";

/// Why a `/dev/offload` operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("offload.ko is not loaded (no {DEVICE_PATH})")]
    NotLoaded,
    #[error("offload.ko is loaded but no offload device was found (no {DEVICE_PATH})")]
    NoDevice,
    #[error("cannot open {DEVICE_PATH}: {0}")]
    Open(io::Error),
    /// An ioctl failed with this errno (positive).
    #[error("{op}: {}", io::Error::from_raw_os_error(*errno))]
    Ioctl { op: &'static str, errno: i32 },
}

impl DeviceError {
    /// The errno of a failed ioctl.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DeviceError::Ioctl { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// The three operations of `/dev/offload`, as a trait so the command's logic can be tested
/// without the device.
pub trait Offload {
    /// `OFFLOAD_IOC_NODE_INFO`: this node.
    fn node_info(&self) -> Result<NodeInfo, DeviceError>;
    /// `OFFLOAD_IOC_PEERS`: the other nodes and their states.
    fn peers(&self) -> Result<Peers, DeviceError>;
    /// `OFFLOAD_IOC_PING`: one round trip to `node` carrying `payload` (at most
    /// [`abi::PING_MAX`] bytes); returns the echoed bytes and the round-trip time in ns.
    fn ping(&self, node: u32, payload: &[u8]) -> Result<(Vec<u8>, u64), DeviceError>;
}

/// The memory window of `/dev/offload`, as a trait so the `mem` commands can be tested
/// against a memfd standing in for the window.
pub trait WindowDevice: Sync {
    /// `OFFLOAD_IOC_WINDOW_INFO`: the window's geometry and this node's slice.
    fn window_info(&self) -> Result<WindowInfo, DeviceError>;
    /// `OFFLOAD_IOC_ALLOC`: `pages` contiguous zeroed pages of this node's slice, owned by
    /// this open file; returns the window offset of the first.
    fn alloc(&self, pages: u64) -> Result<u64, DeviceError>;
    /// `OFFLOAD_IOC_FREE`: pages this file allocated.
    fn free(&self, offset: u64, pages: u64) -> Result<(), DeviceError>;
    /// The file to `mmap` (`MAP_SHARED`, the mmap offset is the window offset).
    fn map_fd(&self) -> BorrowedFd<'_>;
}

/// Forwarded system calls, as a trait so `offload call` and `offload serve` can be tested
/// without the device.
pub trait Forward {
    /// `OFFLOAD_IOC_SYSCALL`: runs `nr(args)` at `node` by its executor `tid`; returns the
    /// call's result there (`-errno` included). The error says why the call did not run.
    fn syscall(
        &self,
        node: u32,
        tid: u32,
        nr: u64,
        args: [u64; SYSCALL_ARGS],
    ) -> Result<i64, DeviceError>;
    /// `OFFLOAD_IOC_EXEC_WAIT` without waiting (the file in `O_NONBLOCK` mode): registers
    /// the calling thread as the executor of its tid; `None` when no call is queued yet.
    fn exec_poll(&self) -> Result<Option<ExecCall>, DeviceError>;
    /// `OFFLOAD_IOC_EXEC_WAIT`: registers the calling thread and waits for its next call.
    fn exec_wait(&self) -> Result<ExecCall, DeviceError>;
    /// `OFFLOAD_IOC_EXEC_DONE`: the result of a call `exec_wait` handed out.
    fn exec_done(&self, token: u64, ret: i64) -> Result<(), DeviceError>;
}

/// Shadows (docs/offload-threads.md, "Interfaces (v1)"), as a trait so `offload spawn`,
/// `offload shadow` and `offload ps` can be tested without the device.
pub trait Shadows {
    /// `OFFLOAD_IOC_SPAWN`: starts a shadow of this process on `node` from the spawn record
    /// at window offset `rec_off` (`rec_len` bytes).
    fn spawn(&self, node: u32, rec_off: u64, rec_len: u64) -> Result<(), DeviceError>;
    /// `OFFLOAD_IOC_SHADOW_ATTACH`: this process is the shadow of `home_pid` of `home_node`
    /// for as long as this open file lives.
    fn shadow_attach(
        &self,
        home_node: u32,
        home_pid: u32,
        home_tid: u32,
    ) -> Result<(), DeviceError>;
    /// `OFFLOAD_IOC_PS`: the marked processes of this node.
    fn ps(&self) -> Result<Ps, DeviceError>;
    /// `OFFLOAD_IOC_THREADS`: the executors of this node (threads running on other nodes).
    fn threads(&self) -> Result<Threads, DeviceError>;
}

/// An open `/dev/offload`.
#[derive(Debug)]
pub struct Device {
    file: File,
}

impl Device {
    /// Opens [`DEVICE_PATH`].
    pub fn open() -> Result<Self, DeviceError> {
        Self::open_at(Path::new(DEVICE_PATH), Path::new(MODULE_PATH))
    }

    /// Opens `dev`; when it does not exist, `module` (a /sys/module directory) tells
    /// whether the driver is loaded.
    pub fn open_at(dev: &Path, module: &Path) -> Result<Self, DeviceError> {
        match OpenOptions::new().read(true).write(true).open(dev) {
            Ok(file) => Ok(Self { file }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(if module.exists() {
                DeviceError::NoDevice
            } else {
                DeviceError::NotLoaded
            }),
            Err(e) => Err(DeviceError::Open(e)),
        }
    }

    /// Issues ioctl `request` with `arg` as its argument struct. `T` must be the struct the
    /// request number encodes (the callers above pair them as abi.rs defines them).
    fn ioctl<T>(&self, op: &'static str, request: u32, arg: &mut T) -> Result<(), DeviceError> {
        // SAFETY: the fd is open for the life of `self.file`; `arg` is a valid, exclusive
        // pointer to a `#[repr(C)]` struct of exactly the size encoded in `request`, so the
        // driver reads and writes only inside it.
        let rc = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                request as libc::Ioctl,
                arg as *mut T as *mut libc::c_void,
            )
        };
        if rc < 0 {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            return Err(DeviceError::Ioctl { op, errno });
        }
        Ok(())
    }
}

impl Offload for Device {
    fn node_info(&self) -> Result<NodeInfo, DeviceError> {
        let mut info = NodeInfo::default();
        self.ioctl("NODE_INFO", abi::IOC_NODE_INFO, &mut info)?;
        Ok(info)
    }

    fn peers(&self) -> Result<Peers, DeviceError> {
        let mut peers = Peers::default();
        self.ioctl("PEERS", abi::IOC_PEERS, &mut peers)?;
        Ok(peers)
    }

    fn ping(&self, node: u32, payload: &[u8]) -> Result<(Vec<u8>, u64), DeviceError> {
        let mut p = Ping {
            node,
            len: payload.len().min(abi::PING_MAX) as u32,
            ..Default::default()
        };
        let n = p.len as usize;
        p.data[..n].copy_from_slice(&payload[..n]);
        self.ioctl("PING", abi::IOC_PING, &mut p)?;
        let len = (p.len as usize).min(abi::PING_MAX);
        Ok((p.data[..len].to_vec(), p.rtt_ns))
    }
}

impl Shadows for Device {
    fn spawn(&self, node: u32, rec_off: u64, rec_len: u64) -> Result<(), DeviceError> {
        let mut sp = Spawn {
            node,
            reserved: 0,
            rec_off,
            rec_len,
        };
        self.ioctl("SPAWN", abi::IOC_SPAWN, &mut sp)
    }

    fn shadow_attach(
        &self,
        home_node: u32,
        home_pid: u32,
        home_tid: u32,
    ) -> Result<(), DeviceError> {
        let mut a = ShadowAttach {
            home_node,
            home_pid,
            home_tid,
            reserved: 0,
        };
        self.ioctl("SHADOW_ATTACH", abi::IOC_SHADOW_ATTACH, &mut a)
    }

    fn ps(&self) -> Result<Ps, DeviceError> {
        let mut ps = Ps::default();
        self.ioctl("PS", abi::IOC_PS, &mut ps)?;
        Ok(ps)
    }

    fn threads(&self) -> Result<Threads, DeviceError> {
        let mut t = Threads::default();
        self.ioctl("THREADS", abi::IOC_THREADS, &mut t)?;
        Ok(t)
    }
}

impl Device {
    /// Gives up the file as a raw fd that stays open across `exec` (`FD_CLOEXEC` cleared):
    /// a shadow's attachment belongs to the open file, so the program exec'd keeps it.
    pub fn into_inherited_fd(self) -> io::Result<RawFd> {
        let fd = self.file.into_raw_fd();
        // SAFETY: F_SETFD on the fd just taken over; no memory is passed.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    /// Sets or clears `O_NONBLOCK` on the open file (it is the file's, not the thread's).
    fn set_nonblock(&self, on: bool) -> Result<(), DeviceError> {
        let fd = self.file.as_raw_fd();
        let fcntl_err = || DeviceError::Ioctl {
            op: "fcntl",
            errno: io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        };
        // SAFETY: F_GETFL/F_SETFL on an fd this struct owns; no memory is passed.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(fcntl_err());
        }
        let flags = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
            return Err(fcntl_err());
        }
        Ok(())
    }
}

impl Forward for Device {
    fn syscall(
        &self,
        node: u32,
        tid: u32,
        nr: u64,
        args: [u64; SYSCALL_ARGS],
    ) -> Result<i64, DeviceError> {
        let mut sc = Syscall {
            node,
            tid,
            nr,
            args,
            ret: 0,
        };
        self.ioctl("SYSCALL", abi::IOC_SYSCALL, &mut sc)?;
        Ok(sc.ret)
    }

    fn exec_poll(&self) -> Result<Option<ExecCall>, DeviceError> {
        self.set_nonblock(true)?;
        let r = self.exec_wait();
        self.set_nonblock(false)?;
        match r {
            Ok(call) => Ok(Some(call)),
            Err(e) if e.errno() == Some(libc::EAGAIN) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn exec_wait(&self) -> Result<ExecCall, DeviceError> {
        let mut call = ExecCall::default();
        self.ioctl("EXEC_WAIT", abi::IOC_EXEC_WAIT, &mut call)?;
        Ok(call)
    }

    fn exec_done(&self, token: u64, ret: i64) -> Result<(), DeviceError> {
        let mut d = ExecDone { token, ret };
        self.ioctl("EXEC_DONE", abi::IOC_EXEC_DONE, &mut d)
    }
}

impl WindowDevice for Device {
    fn window_info(&self) -> Result<WindowInfo, DeviceError> {
        let mut info = WindowInfo::default();
        self.ioctl("WINDOW_INFO", abi::IOC_WINDOW_INFO, &mut info)?;
        Ok(info)
    }

    fn alloc(&self, pages: u64) -> Result<u64, DeviceError> {
        let mut a = Alloc { pages, offset: 0 };
        self.ioctl("ALLOC", abi::IOC_ALLOC, &mut a)?;
        Ok(a.offset)
    }

    fn free(&self, offset: u64, pages: u64) -> Result<(), DeviceError> {
        let mut f = Free { offset, pages };
        self.ioctl("FREE", abi::IOC_FREE, &mut f)
    }

    fn map_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_device_says_whether_the_module_is_loaded() {
        let dir = std::env::temp_dir();
        let absent = dir.join(format!("no-such-offload-{}", std::process::id()));
        let err = Device::open_at(&absent, &absent).unwrap_err();
        assert!(matches!(err, DeviceError::NotLoaded));
        assert_eq!(
            err.to_string(),
            "offload.ko is not loaded (no /dev/offload)"
        );
        let err = Device::open_at(&absent, &dir).unwrap_err();
        assert!(matches!(err, DeviceError::NoDevice));
        assert!(err.to_string().contains("no offload device was found"));
    }

    #[test]
    fn an_ioctl_on_a_non_offload_file_fails_cleanly() {
        let dev = Device::open_at(Path::new("/dev/null"), Path::new("/")).unwrap();
        let err = dev.node_info().unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOTTY));
        assert_eq!(dev.window_info().unwrap_err().errno(), Some(libc::ENOTTY));
        assert_eq!(dev.alloc(1).unwrap_err().errno(), Some(libc::ENOTTY));
        assert_eq!(dev.free(0, 1).unwrap_err().errno(), Some(libc::ENOTTY));
        assert_eq!(
            dev.syscall(0, 1, 39, [0; 6]).unwrap_err().errno(),
            Some(libc::ENOTTY)
        );
        assert_eq!(dev.exec_poll().unwrap_err().errno(), Some(libc::ENOTTY));
        assert_eq!(dev.exec_done(1, 0).unwrap_err().errno(), Some(libc::ENOTTY));
        assert_eq!(dev.spawn(1, 0, 1).unwrap_err().errno(), Some(libc::ENOTTY));
        assert_eq!(
            dev.shadow_attach(1, 2, 3).unwrap_err().errno(),
            Some(libc::ENOTTY)
        );
        assert_eq!(dev.ps().unwrap_err().errno(), Some(libc::ENOTTY));
    }
}
