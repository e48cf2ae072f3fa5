//! The window's backing memory in the monitor: one anonymous private mapping that KVM maps at
//! the window's guest-physical base, and the few raw operations the DSM engine needs on it
//! (read a populated page, drop a page). Population and protection go through userfaultfd.

use std::io;

use super::protocol::{PageNo, PAGE_SIZE};

/// Anonymous memory backing the window.
#[derive(Debug)]
pub struct WindowMemory {
    addr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this struct; the pointer is only used for
// address arithmetic and for reads/madvise whose synchronisation the DSM engine provides (one
// page is only touched under that page's lock).
unsafe impl Send for WindowMemory {}
// SAFETY: as above; shared references only read pages or call madvise, both thread-safe at
// the kernel level.
unsafe impl Sync for WindowMemory {}

impl WindowMemory {
    /// Maps `len` bytes (a multiple of 4 KiB) of anonymous memory, populated lazily.
    pub fn new(len: usize) -> io::Result<Self> {
        if len == 0 || !len.is_multiple_of(PAGE_SIZE) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: a fresh anonymous mapping chosen by the kernel; no existing memory is affected.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // The protocol moves 4 KiB pages: a huge page here would be mapped (and collapsed by
        // khugepaged) across pages that other nodes own. A kernel without THP says EINVAL.
        // SAFETY: advice on the mapping just created, of exactly its length.
        if unsafe { libc::madvise(addr, len, libc::MADV_NOHUGEPAGE) } != 0 {
            log::debug!("window: MADV_NOHUGEPAGE: {}", io::Error::last_os_error());
        }
        Ok(Self {
            addr: addr.cast(),
            len,
        })
    }

    /// Host address of the mapping.
    pub fn host_addr(&self) -> u64 {
        self.addr as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: `new` refuses a zero length).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pages.
    pub fn pages(&self) -> u64 {
        (self.len / PAGE_SIZE) as u64
    }

    /// Host address of `page`, or `None` outside the window.
    pub fn page_addr(&self, page: PageNo) -> Option<u64> {
        (page < self.pages()).then(|| self.host_addr() + page * PAGE_SIZE as u64)
    }

    /// Page number of a host address inside the window.
    pub fn page_of(&self, addr: u64) -> Option<PageNo> {
        let off = addr.checked_sub(self.host_addr())?;
        (off < self.len as u64).then_some(off / PAGE_SIZE as u64)
    }

    /// Copies a populated page out.
    ///
    /// The caller must know the page is populated (reading an unpopulated page would fault
    /// into the monitor's own userfaultfd) and hold the page's lock, with the page
    /// write-protected or owned so that the guest does not write it meanwhile.
    pub fn read_page(&self, page: PageNo, out: &mut [u8; PAGE_SIZE]) -> bool {
        let Some(addr) = self.page_addr(page) else {
            return false;
        };
        // SAFETY: `addr..addr + 4096` lies inside our mapping (checked by `page_addr`); the
        // page is populated (caller's contract), so the read cannot block on userfaultfd;
        // concurrent guest writes are excluded by the caller, and a racing write would only
        // produce stale bytes, never undefined behaviour for plain `u8` data read volatilely.
        unsafe {
            std::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), PAGE_SIZE);
        }
        true
    }

    /// Drops a page's contents (MADV_DONTNEED): the next access faults as missing.
    pub fn discard(&self, page: PageNo) -> io::Result<()> {
        let addr = self
            .page_addr(page)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the range is one page inside our own mapping; MADV_DONTNEED on private
        // anonymous memory only discards its contents.
        let r = unsafe { libc::madvise(addr as *mut libc::c_void, PAGE_SIZE, libc::MADV_DONTNEED) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for WindowMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`; nothing uses it afterwards (KVM
        // is gone before the Vmm drops the window).
        unsafe {
            libc::munmap(self.addr.cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_map_to_addresses_and_back() {
        let m = WindowMemory::new(8 * PAGE_SIZE).unwrap();
        assert_eq!(m.pages(), 8);
        let a = m.page_addr(3).unwrap();
        assert_eq!(m.page_of(a + 17), Some(3));
        assert_eq!(m.page_addr(8), None);
        assert_eq!(m.page_of(m.host_addr() + 8 * PAGE_SIZE as u64), None);
        assert!(WindowMemory::new(100).is_err());
    }

    #[test]
    fn discard_zeroes_a_page() {
        let m = WindowMemory::new(2 * PAGE_SIZE).unwrap();
        let mut buf = [0u8; PAGE_SIZE];
        // Populate page 1 by writing through the mapping (no userfaultfd registered here).
        // SAFETY: page 1 lies inside the test's own mapping.
        unsafe { *((m.page_addr(1).unwrap() + 5) as *mut u8) = 7 };
        assert!(m.read_page(1, &mut buf));
        assert_eq!(buf[5], 7);
        m.discard(1).unwrap();
        assert!(m.read_page(1, &mut buf));
        assert_eq!(buf[5], 0);
    }
}
