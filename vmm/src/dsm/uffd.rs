//! A minimal userfaultfd binding for the window's backing memory: create the descriptor,
//! register a range for MISSING and WP faults, read fault messages, and resolve them (copy a
//! page in, zero it, change write protection, wake). Every `unsafe` of the DSM lives here and
//! in `backing.rs`.
//!
//! Constants and struct layouts follow `include/uapi/linux/userfaultfd.h` (x86_64).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const UFFD_API: u64 = 0xaa;
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
const UFFDIO_WAKE: libc::c_ulong = 0x8010_aa02;
const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;
const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xc018_aa06;

const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFDIO_REGISTER_MODE_WP: u64 = 2;
const UFFDIO_COPY_MODE_WP: u64 = 2;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1;
const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = 1;

const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFD_PAGEFAULT_FLAG_WRITE: u64 = 1;
const UFFD_PAGEFAULT_FLAG_WP: u64 = 2;

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

/// `struct uffd_msg` for page faults: event byte, padding, flags, address, thread id.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    flags: u64,
    address: u64,
    ptid: u64,
}

/// One page fault read from the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Faulting host address (not page aligned).
    pub address: u64,
    /// The access was a write.
    pub write: bool,
    /// The page was present but write-protected.
    pub wp: bool,
}

/// Errors of userfaultfd operations.
#[derive(Debug, thiserror::Error)]
pub enum UffdError {
    #[error("userfaultfd is not available (needs root or vm.unprivileged_userfaultfd=1)")]
    Create(#[source] io::Error),
    #[error("userfaultfd API handshake failed")]
    Api(#[source] io::Error),
    #[error("userfaultfd lacks write-protect faults on anonymous memory (kernel too old?)")]
    NoWriteProtect,
    #[error("cannot register the window with userfaultfd")]
    Register(#[source] io::Error),
    #[error("userfaultfd {op} at {addr:#x} failed")]
    Op {
        op: &'static str,
        addr: u64,
        #[source]
        source: io::Error,
    },
}

/// A userfaultfd descriptor.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
}

fn ioctl<T>(fd: RawFd, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: every request code used in this module takes a pointer to the struct type the
    // caller passes (checked by the callers' choice of `T` per request); the kernel reads and
    // writes at most `size_of::<T>()` bytes through it, and `arg` is a live exclusive borrow.
    let r = unsafe { libc::ioctl(fd, req, arg as *mut T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Uffd {
    /// Opens a non-blocking userfaultfd with write-protect fault reporting.
    pub fn new() -> Result<Self, UffdError> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: plain system call with integer arguments; a non-negative result is a new
        // descriptor that we own from here on.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        if fd < 0 {
            return Err(UffdError::Create(io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: UFFD_FEATURE_PAGEFAULT_FLAG_WP,
            ioctls: 0,
        };
        ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api).map_err(UffdError::Api)?;
        if api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP == 0 {
            return Err(UffdError::NoWriteProtect);
        }
        Ok(Self { fd })
    }

    /// Registers `[start, start + len)` (page aligned, mapped anonymous memory) for missing and
    /// write-protect faults.
    pub fn register(&self, start: u64, len: u64) -> Result<(), UffdError> {
        let mut reg = UffdioRegister {
            range: UffdioRange { start, len },
            mode: UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        ioctl(self.fd.as_raw_fd(), UFFDIO_REGISTER, &mut reg).map_err(UffdError::Register)
    }

    /// Reads the pending fault messages into `out` (cleared first); returns when none is left.
    pub fn read_faults(&self, out: &mut Vec<Fault>) -> io::Result<()> {
        out.clear();
        let mut msgs = [UffdMsg::default(); 16];
        let size = std::mem::size_of_val(&msgs);
        // SAFETY: `msgs` is a writable buffer of `size` bytes of plain-old-data structs laid
        // out as the kernel's `uffd_msg`; read(2) writes at most `size` bytes.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), msgs.as_mut_ptr().cast(), size) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(())
            } else {
                Err(e)
            };
        }
        let count = n as usize / std::mem::size_of::<UffdMsg>();
        for m in &msgs[..count] {
            if m.event == UFFD_EVENT_PAGEFAULT {
                out.push(Fault {
                    address: m.address,
                    write: m.flags & UFFD_PAGEFAULT_FLAG_WRITE != 0,
                    wp: m.flags & UFFD_PAGEFAULT_FLAG_WP != 0,
                });
            }
        }
        Ok(())
    }

    /// Atomically populates the missing page at `dst` with the 4 KiB at `src`,
    /// write-protected if `wp`, and wakes the threads faulting on it. `EEXIST` means the page
    /// was already populated.
    ///
    /// # Safety
    /// `src` must point at 4096 readable bytes for the duration of the call.
    pub unsafe fn copy(&self, dst: u64, src: *const u8, wp: bool) -> Result<(), UffdError> {
        let mut c = UffdioCopy {
            dst,
            src: src as u64,
            len: 4096,
            mode: if wp { UFFDIO_COPY_MODE_WP } else { 0 },
            copy: 0,
        };
        ioctl(self.fd.as_raw_fd(), UFFDIO_COPY, &mut c).map_err(|source| UffdError::Op {
            op: "copy",
            addr: dst,
            source,
        })
    }

    /// Sets (`wp`) or clears write protection of the populated page at `addr`; clearing wakes
    /// the threads faulting on it.
    pub fn write_protect(&self, addr: u64, wp: bool) -> Result<(), UffdError> {
        let mut w = UffdioWriteprotect {
            range: UffdioRange {
                start: addr,
                len: 4096,
            },
            mode: if wp { UFFDIO_WRITEPROTECT_MODE_WP } else { 0 },
        };
        ioctl(self.fd.as_raw_fd(), UFFDIO_WRITEPROTECT, &mut w).map_err(|source| UffdError::Op {
            op: "write-protect",
            addr,
            source,
        })
    }

    /// Wakes the threads faulting on the page at `addr` (they retry the access).
    pub fn wake(&self, addr: u64) -> Result<(), UffdError> {
        let mut r = UffdioRange {
            start: addr,
            len: 4096,
        };
        ioctl(self.fd.as_raw_fd(), UFFDIO_WAKE, &mut r).map_err(|source| UffdError::Op {
            op: "wake",
            addr,
            source,
        })
    }
}

impl AsRawFd for Uffd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Whether a userfaultfd error says the page was already populated.
pub fn is_exists(e: &UffdError) -> bool {
    matches!(e, UffdError::Op { source, .. } if source.raw_os_error() == Some(libc::EEXIST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<UffdioApi>(), 24);
        assert_eq!(std::mem::size_of::<UffdioRegister>(), 32);
        assert_eq!(std::mem::size_of::<UffdioCopy>(), 40);
        assert_eq!(std::mem::size_of::<UffdioWriteprotect>(), 24);
        assert_eq!(std::mem::size_of::<UffdMsg>(), 32);
        // _IOWR(0xAA, nr, size) = 3 << 30 | size << 16 | 0xAA << 8 | nr
        let iowr = |nr: u64, size: u64| (3u64 << 30 | size << 16 | 0xaa << 8 | nr) as libc::c_ulong;
        assert_eq!(UFFDIO_API, iowr(0x3f, 24));
        assert_eq!(UFFDIO_REGISTER, iowr(0x00, 32));
        assert_eq!(UFFDIO_COPY, iowr(0x03, 40));
        assert_eq!(UFFDIO_WRITEPROTECT, iowr(0x06, 24));
    }
}
