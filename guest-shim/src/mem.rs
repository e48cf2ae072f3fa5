//! `offload mem ...`: the memory window from user space. Every command maps what it needs
//! with `mmap(MAP_SHARED)` of `/dev/offload` at the window offset ([`Mapping`]) and works on
//! it with plain loads and stores and atomics, as programs sharing the window across VMs
//! will: the monitors keep the pages coherent, the guest sees ordinary memory.
//!
//! The commands are written against [`WindowDevice`], so the tests run them on a memfd that
//! stands in for the window (same `mmap` offset semantics), threads playing the nodes.
//!
//! Layouts (all u64, native endian, in one page):
//! - `counter OFF`: OFF lock word (0 free, 1 held), OFF+8 counter, OFF+16 arrivals,
//!   OFF+24 finished.
//! - mailbox OFF (`fill` / `sum`): OFF ready flag, OFF+8 window offset of the run, OFF+16
//!   its length in bytes, OFF+24 done flag (set by the reader).
//!
//! Data of `fill` / `sum`: word i (bytes 8i..8i+8, little endian; a last partial word
//! truncated) is [`pattern_word`]`(seed, i)`; the checksum is FNV-1a 64 over the region's
//! little-endian u64 words, a last partial word zero-padded ([`checksum`]).

use std::hint::{black_box, spin_loop};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{sleep, yield_now};
use std::time::{Duration, Instant};

use crate::abi::WindowInfo;
use crate::cli::{MemCommand, BLOCK_LEN, PAGE};
use crate::device::{DeviceError, WindowDevice};
use crate::report;
use crate::run::RunError;

/// Pause between two polls of a word someone else will change (`wait`, barriers, mailbox).
pub const POLL_PAUSE: Duration = Duration::from_micros(100);
/// Spins on a held lock between two `sched_yield`s (a vCPU may be shared with the holder).
const SPINS_PER_YIELD: u32 = 1024;

/// FNV-1a 64 offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A `MAP_SHARED` read/write mapping of whole window pages, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
    /// Window offset of `base` (page aligned).
    offset: u64,
}

impl Mapping {
    /// Maps the pages holding window bytes `[offset, offset + len)` of `fd` (`len` ≥ 1;
    /// the range must lie inside the window: the caller checks).
    pub fn new(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<Self> {
        let start = offset - offset % PAGE;
        let end = offset
            .checked_add(len.max(1))
            .and_then(|e| e.checked_next_multiple_of(PAGE))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let map_len =
            usize::try_from(end - start).map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
        let file_off =
            libc::off_t::try_from(start).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a new mapping at an address the kernel picks: no existing memory is
        // affected; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                file_off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self {
            base,
            len: map_len,
            offset: start,
        })
    }

    /// The address of window offset `off`, which must lie in the mapping with `len` bytes.
    fn at(&self, off: u64, len: u64) -> *mut u8 {
        let rel = off
            .checked_sub(self.offset)
            .filter(|r| r.checked_add(len).is_some_and(|e| e <= self.len as u64))
            .expect("window offset outside the mapping");
        // SAFETY: `rel + len <= self.len`: the result stays inside the mapping.
        unsafe { self.base.as_ptr().add(rel as usize) }
    }

    /// The u64 at window offset `off` (8-byte aligned, inside the mapping).
    pub fn word(&self, off: u64) -> &AtomicU64 {
        assert_eq!(off % 8, 0, "unaligned u64");
        let p = self.at(off, 8);
        // SAFETY: `p` is 8-byte aligned (page-aligned base + aligned offset), inside a
        // mapping that lives as long as the borrow of `self`; atomics are how every user of
        // the shared page accesses these words.
        unsafe { &*p.cast::<AtomicU64>() }
    }

    /// The bytes `[off, off + len)` for reading.
    ///
    /// # Safety
    /// Nobody may write them while the slice lives (the callers' protocols ensure it: the
    /// writer published them with a release store and waits for the reader's answer).
    pub unsafe fn bytes(&self, off: u64, len: u64) -> &[u8] {
        let p = self.at(off, len);
        // SAFETY: inside the mapping (checked by `at`); no concurrent writer (caller).
        unsafe { std::slice::from_raw_parts(p, len as usize) }
    }

    /// The bytes `[off, off + len)` for writing.
    ///
    /// # Safety
    /// Nobody else may access them while the slice lives (freshly allocated, unpublished).
    pub unsafe fn bytes_mut(&mut self, off: u64, len: u64) -> &mut [u8] {
        let p = self.at(off, len);
        // SAFETY: inside the mapping (checked by `at`); exclusive (caller).
        unsafe { std::slice::from_raw_parts_mut(p, len as usize) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping created in `new`; no reference into it outlives
        // `self` (every accessor borrows `self`).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// Word `i` of the data `fill` writes for `seed`: splitmix64 of `seed + (i + 1) * φ`.
pub fn pattern_word(seed: u64, i: u64) -> u64 {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fnv_step(h: u64, word: u64) -> u64 {
    (h ^ word).wrapping_mul(FNV_PRIME)
}

/// FNV-1a 64 over the little-endian u64 words of `bytes`, a last partial word zero-padded.
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    let mut h = FNV_OFFSET;
    for c in &mut chunks {
        h = fnv_step(h, u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = fnv_step(h, u64::from_le_bytes(w));
    }
    h
}

/// Writes the pattern of `seed` into `buf`; returns its [`checksum`].
pub fn fill_pattern(buf: &mut [u8], seed: u64) -> u64 {
    let mut chunks = buf.chunks_exact_mut(8);
    let mut h = FNV_OFFSET;
    let mut i = 0;
    for c in &mut chunks {
        let w = pattern_word(seed, i);
        c.copy_from_slice(&w.to_le_bytes());
        h = fnv_step(h, w);
        i += 1;
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut w = pattern_word(seed, i).to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&w[..n]);
        w[n..].fill(0);
        h = fnv_step(h, u64::from_le_bytes(w));
    }
    h
}

/// `window base=0x1000000000 size=268435456 slice_offset=0x0 slice_len=134217728 node=0`.
pub fn info_line(w: &WindowInfo) -> String {
    format!(
        "window base={:#x} size={} slice_offset={:#x} slice_len={} node={}",
        w.base, w.size, w.slice_offset, w.slice_len, w.node_index
    )
}

/// `offset=0x... checksum=0x...` (the checksum always 16 hex digits).
pub fn region_line(offset: u64, sum: u64) -> String {
    format!("offset={offset:#x} checksum={sum:#018x}")
}

fn fail(msg: String) -> RunError {
    RunError::Mem(msg)
}

/// A failed window ioctl as a message.
fn device_error(e: DeviceError) -> RunError {
    match e.errno() {
        Some(errno) => fail(report::window_error(errno)),
        None => RunError::Device(e),
    }
}

/// The window's geometry, checked to have the page size these commands assume.
fn window(dev: &dyn WindowDevice) -> Result<WindowInfo, RunError> {
    let w = dev.window_info().map_err(device_error)?;
    if u64::from(w.page_size) != PAGE {
        return Err(fail(format!(
            "the window's page size is {}, not {PAGE}",
            w.page_size
        )));
    }
    Ok(w)
}

/// `[off, off + len)` lies inside the window.
fn check_range(w: &WindowInfo, off: u64, len: u64) -> Result<(), RunError> {
    match off.checked_add(len) {
        Some(end) if end <= w.size => Ok(()),
        _ => Err(fail(format!(
            "window offset {off:#x} (+{len} bytes) is outside the window ({} bytes)",
            w.size
        ))),
    }
}

/// Maps `[off, off + len)` of the window (checked against it first).
fn map(dev: &dyn WindowDevice, w: &WindowInfo, off: u64, len: u64) -> Result<Mapping, RunError> {
    check_range(w, off, len)?;
    Mapping::new(dev.map_fd(), off, len).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(errno) => report::window_error(errno),
            None => e.to_string(),
        };
        fail(format!(
            "cannot map window offset {off:#x} (+{len} bytes): {why}"
        ))
    })
}

/// Polls `word` (acquire loads, [`POLL_PAUSE`] apart) until `done(value)`; `Err(last value)`
/// after `timeout`.
fn poll(word: &AtomicU64, timeout: Duration, done: impl Fn(u64) -> bool) -> Result<u64, u64> {
    let start = Instant::now();
    loop {
        let v = word.load(Ordering::Acquire);
        if done(v) {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(v);
        }
        sleep(POLL_PAUSE);
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Runs one `mem` subcommand; its output goes to `out`. `Err` means exit status 1.
pub fn run(dev: &dyn WindowDevice, cmd: &MemCommand, out: &mut dyn Write) -> Result<(), RunError> {
    match *cmd {
        MemCommand::Info => {
            let w = dev.window_info().map_err(device_error)?;
            writeln!(out, "{}", info_line(&w))?;
        }
        MemCommand::Read { off } => {
            let w = window(dev)?;
            let m = map(dev, &w, off, 8)?;
            writeln!(out, "{}", m.word(off).load(Ordering::Acquire))?;
        }
        MemCommand::Write { off, value } => {
            let w = window(dev)?;
            let m = map(dev, &w, off, 8)?;
            m.word(off).store(value, Ordering::Release);
        }
        MemCommand::Wait {
            off,
            value,
            timeout,
        } => {
            let w = window(dev)?;
            let m = map(dev, &w, off, 8)?;
            poll(m.word(off), timeout, |v| v == value).map_err(|last| {
                fail(format!(
                    "timed out after {} ms: the u64 at {off:#x} is {last}, not {value}",
                    ms(timeout)
                ))
            })?;
        }
        MemCommand::Counter {
            off,
            iters,
            parties,
            timeout,
        } => counter(dev, off, iters, parties, timeout, out)?,
        MemCommand::Fill {
            bytes,
            seed,
            mailbox,
            timeout,
        } => fill(dev, bytes, seed, mailbox, timeout, out)?,
        MemCommand::Sum { mailbox, timeout } => sum(dev, mailbox, timeout, out)?,
        MemCommand::Touch {
            off,
            bytes,
            write,
            stride,
        } => touch(dev, off, bytes, write, stride, out)?,
        MemCommand::Hold {
            off,
            write,
            seconds,
        } => {
            let w = window(dev)?;
            let m = map(dev, &w, off, if write.is_some() { 8 } else { 1 })?;
            if let Some(v) = write {
                m.word(off).store(v, Ordering::Release);
            }
            writeln!(out, "holding")?;
            out.flush()?;
            sleep(Duration::from_secs(seconds));
            drop(m);
        }
    }
    Ok(())
}

/// Test-and-test-and-set: compare_exchange on the lock word, spinning on plain loads.
fn lock(word: &AtomicU64) {
    let mut spins = 0u32;
    while word
        .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        while word.load(Ordering::Relaxed) != 0 {
            spin_loop();
            spins += 1;
            if spins == SPINS_PER_YIELD {
                spins = 0;
                yield_now();
            }
        }
    }
}

fn unlock(word: &AtomicU64) {
    word.store(0, Ordering::Release);
}

/// `mem counter`: a barrier, `iters` increments under the spinlock, a second barrier.
fn counter(
    dev: &dyn WindowDevice,
    off: u64,
    iters: u64,
    parties: u64,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    let w = window(dev)?;
    let m = map(dev, &w, off, BLOCK_LEN)?;
    let (lock_w, count, arrived, finished) = (
        m.word(off),
        m.word(off + 8),
        m.word(off + 16),
        m.word(off + 24),
    );
    arrived.fetch_add(1, Ordering::AcqRel);
    poll(arrived, timeout, |v| v >= parties).map_err(|n| {
        fail(format!(
            "timed out after {} ms waiting for {parties} parties at {off:#x} ({n} arrived)",
            ms(timeout)
        ))
    })?;
    for _ in 0..iters {
        lock(lock_w);
        // Plain load and store: the lock orders them.
        let v = count.load(Ordering::Relaxed);
        count.store(v.wrapping_add(1), Ordering::Relaxed);
        unlock(lock_w);
    }
    finished.fetch_add(1, Ordering::AcqRel);
    poll(finished, timeout, |v| v >= parties).map_err(|n| {
        fail(format!(
            "timed out after {} ms waiting for {parties} parties to finish at {off:#x} ({n} did)",
            ms(timeout)
        ))
    })?;
    writeln!(out, "counter={}", count.load(Ordering::Acquire))?;
    Ok(())
}

/// `mem fill`: allocate, fill, publish in the mailbox, wait for the reader, free.
fn fill(
    dev: &dyn WindowDevice,
    bytes: u64,
    seed: u64,
    mailbox: u64,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    let w = window(dev)?;
    check_range(&w, mailbox, BLOCK_LEN)?;
    let pages = bytes.div_ceil(PAGE);
    let off = dev.alloc(pages).map_err(|e| match e.errno() {
        Some(errno) => fail(report::alloc_error(errno, pages)),
        None => RunError::Device(e),
    })?;
    let result = fill_allocated(dev, &w, off, bytes, seed, mailbox, timeout, out);
    let freed = dev.free(off, pages).map_err(device_error);
    result.and(freed)
}

#[allow(clippy::too_many_arguments)]
fn fill_allocated(
    dev: &dyn WindowDevice,
    w: &WindowInfo,
    off: u64,
    bytes: u64,
    seed: u64,
    mailbox: u64,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    let mut region = map(dev, w, off, bytes)?;
    let mb = map(dev, w, mailbox, BLOCK_LEN)?;
    // SAFETY: the run is freshly allocated and not published yet: nobody else uses it.
    let sum = fill_pattern(unsafe { region.bytes_mut(off, bytes) }, seed);
    writeln!(out, "{}", region_line(off, sum))?;
    out.flush()?;
    let (ready, at, len, done) = (
        mb.word(mailbox),
        mb.word(mailbox + 8),
        mb.word(mailbox + 16),
        mb.word(mailbox + 24),
    );
    done.store(0, Ordering::Relaxed);
    at.store(off, Ordering::Relaxed);
    len.store(bytes, Ordering::Relaxed);
    ready.store(1, Ordering::Release);
    let waited = poll(done, timeout, |v| v == 1);
    drop(region);
    if waited.is_err() {
        ready.store(0, Ordering::Release); // withdrawn: the pages are about to be freed
        return Err(fail(format!(
            "timed out after {} ms waiting for a reader of the mailbox at {mailbox:#x}",
            ms(timeout)
        )));
    }
    done.store(0, Ordering::Release); // the mailbox is free for the next exchange
    Ok(())
}

/// `mem sum`: wait for the mailbox, checksum the run it names, answer.
fn sum(
    dev: &dyn WindowDevice,
    mailbox: u64,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    let w = window(dev)?;
    let mb = map(dev, &w, mailbox, BLOCK_LEN)?;
    let (ready, at, len, done) = (
        mb.word(mailbox),
        mb.word(mailbox + 8),
        mb.word(mailbox + 16),
        mb.word(mailbox + 24),
    );
    poll(ready, timeout, |v| v == 1).map_err(|_| {
        fail(format!(
            "timed out after {} ms waiting for the mailbox at {mailbox:#x}",
            ms(timeout)
        ))
    })?;
    let (off, bytes) = (at.load(Ordering::Relaxed), len.load(Ordering::Relaxed));
    if bytes == 0 {
        return Err(fail(format!(
            "the mailbox at {mailbox:#x} names an empty run"
        )));
    }
    let start = Instant::now();
    let region = map(dev, &w, off, bytes)?;
    // SAFETY: the writer published the run (release store of `ready`, acquired above) and
    // leaves it alone until we set `done`.
    let sum = checksum(unsafe { region.bytes(off, bytes) });
    let ns = start.elapsed().as_nanos();
    drop(region);
    ready.store(0, Ordering::Relaxed); // consumed
    done.store(1, Ordering::Release);
    writeln!(out, "{} bytes={bytes} ns={ns}", region_line(off, sum))?;
    Ok(())
}

/// `mem touch`: one volatile u64 read or write per stride; times the loop only.
fn touch(
    dev: &dyn WindowDevice,
    off: u64,
    bytes: u64,
    write: bool,
    stride: u64,
    out: &mut dyn Write,
) -> Result<(), RunError> {
    let w = window(dev)?;
    let m = map(dev, &w, off, bytes)?;
    let n = bytes.div_ceil(stride);
    // Every touched word lies in the mapping: off + i*stride < off + bytes, 8-aligned, and
    // the mapping extends to the next page boundary.
    let base = m.at(off, bytes).cast::<u64>();
    let step = (stride / 8) as usize;
    let mut acc = 0u64;
    let start = Instant::now();
    for i in 0..n as usize {
        // SAFETY: word i*stride of the mapping (see above); volatile so each access
        // really happens; other processes may use the page (a benchmark, not a protocol).
        unsafe {
            let p = base.add(i * step);
            if write {
                p.write_volatile(i as u64 + 1);
            } else {
                acc = acc.wrapping_add(p.read_volatile());
            }
        }
    }
    let ns = start.elapsed().as_nanos();
    black_box(acc);
    drop(m);
    writeln!(
        out,
        "pages={n} ns={ns} ns_per_page={}",
        ns / u128::from(n.max(1))
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::{AsFd, FromRawFd};
    use std::sync::Mutex;

    /// A window of `pages` pages backed by a memfd; node 0 of 2 (slice = first half);
    /// ALLOC hands out runs upward from the slice start; FREE records what it got.
    struct FakeWindow {
        file: File,
        info: WindowInfo,
        next: Mutex<u64>,
        freed: Mutex<Vec<(u64, u64)>>,
    }

    impl FakeWindow {
        fn new(pages: u64) -> Self {
            // SAFETY: a NUL-terminated name; the fd is checked and owned by `File`.
            let fd = unsafe { libc::memfd_create(c"offload-test-window".as_ptr(), 0) };
            assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
            // SAFETY: a fresh fd nobody else owns.
            let file = unsafe { File::from_raw_fd(fd) };
            file.set_len(pages * PAGE).unwrap();
            Self {
                file,
                info: WindowInfo {
                    base: 0x10_0000_0000,
                    size: pages * PAGE,
                    slice_offset: 0,
                    slice_len: pages / 2 * PAGE,
                    page_size: PAGE as u32,
                    node_index: 0,
                },
                next: Mutex::new(0),
                freed: Mutex::default(),
            }
        }
    }

    impl WindowDevice for FakeWindow {
        fn window_info(&self) -> Result<WindowInfo, DeviceError> {
            Ok(self.info)
        }
        fn alloc(&self, pages: u64) -> Result<u64, DeviceError> {
            let mut next = self.next.lock().unwrap();
            if *next + pages * PAGE > self.info.slice_len {
                return Err(DeviceError::Ioctl {
                    op: "ALLOC",
                    errno: libc::ENOMEM,
                });
            }
            let off = *next;
            *next += pages * PAGE;
            Ok(off)
        }
        fn free(&self, offset: u64, pages: u64) -> Result<(), DeviceError> {
            self.freed.lock().unwrap().push((offset, pages));
            Ok(())
        }
        fn map_fd(&self) -> BorrowedFd<'_> {
            self.file.as_fd()
        }
    }

    fn run_ok(dev: &dyn WindowDevice, cmd: MemCommand) -> String {
        let mut out = Vec::new();
        run(dev, &cmd, &mut out).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        String::from_utf8(out).unwrap()
    }

    fn run_err(dev: &dyn WindowDevice, cmd: MemCommand) -> String {
        let mut out = Vec::new();
        run(dev, &cmd, &mut out).unwrap_err().to_string()
    }

    const T: Duration = Duration::from_secs(20);

    #[test]
    fn checksum_is_fnv1a_over_words() {
        assert_eq!(checksum(&[]), FNV_OFFSET);
        let one = fnv_step(FNV_OFFSET, 0x0807_0605_0403_0201);
        assert_eq!(checksum(&[1, 2, 3, 4, 5, 6, 7, 8]), one);
        // A partial word is zero-padded.
        assert_eq!(checksum(&[1, 2, 3]), fnv_step(FNV_OFFSET, 0x03_0201));
        assert_ne!(checksum(&[0; 16]), checksum(&[0; 8]));
    }

    #[test]
    fn the_pattern_is_deterministic_and_checksummed() {
        for len in [1usize, 7, 8, 9, 4096, 4100] {
            let mut a = vec![0u8; len];
            let mut b = vec![0u8; len];
            let sa = fill_pattern(&mut a, 7);
            assert_eq!(fill_pattern(&mut b, 7), sa);
            assert_eq!(a, b);
            assert_eq!(checksum(&a), sa, "len {len}");
            assert_ne!(fill_pattern(&mut b, 8), sa);
        }
        // Known values, so both sides of a test agree across builds.
        assert_eq!(pattern_word(0, 0), 0xe220_a839_7b1d_cdaf);
        let mut page = vec![0u8; 4096];
        assert_eq!(fill_pattern(&mut page, 1), checksum(&page));
    }

    #[test]
    fn lines() {
        let w = WindowInfo {
            base: 0x10_0000_0000,
            size: 256 << 20,
            slice_offset: 0,
            slice_len: 128 << 20,
            page_size: 4096,
            node_index: 0,
        };
        assert_eq!(
            info_line(&w),
            "window base=0x1000000000 size=268435456 slice_offset=0x0 slice_len=134217728 node=0"
        );
        assert_eq!(
            region_line(0x5000, 0xab),
            "offset=0x5000 checksum=0x00000000000000ab"
        );
    }

    #[test]
    fn write_read_and_wait() {
        let dev = FakeWindow::new(16);
        assert!(run_ok(&dev, MemCommand::Info).starts_with("window base=0x1000000000 "));
        run_ok(
            &dev,
            MemCommand::Write {
                off: 0x1008,
                value: 42,
            },
        );
        assert_eq!(run_ok(&dev, MemCommand::Read { off: 0x1008 }), "42\n");
        assert_eq!(run_ok(&dev, MemCommand::Read { off: 0x1010 }), "0\n");
        // A second mapping sees the same page.
        let m = Mapping::new(dev.map_fd(), 0x1000, 4096).unwrap();
        assert_eq!(m.word(0x1008).load(Ordering::Relaxed), 42);
        drop(m);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                run_ok(
                    &dev,
                    MemCommand::Wait {
                        off: 0x2000,
                        value: 9,
                        timeout: T,
                    },
                )
            });
            sleep(Duration::from_millis(50));
            run_ok(
                &dev,
                MemCommand::Write {
                    off: 0x2000,
                    value: 9,
                },
            );
            assert_eq!(waiter.join().unwrap(), "");
        });
        let e = run_err(
            &dev,
            MemCommand::Wait {
                off: 0x2000,
                value: 10,
                timeout: Duration::from_millis(20),
            },
        );
        assert_eq!(e, "timed out after 20 ms: the u64 at 0x2000 is 9, not 10");
    }

    #[test]
    fn offsets_outside_the_window_are_refused() {
        let dev = FakeWindow::new(4);
        let e = run_err(&dev, MemCommand::Read { off: 4 * PAGE });
        assert_eq!(
            e,
            "window offset 0x4000 (+8 bytes) is outside the window (16384 bytes)"
        );
        let e = run_err(
            &dev,
            MemCommand::Touch {
                off: 0x1000,
                bytes: 4 * PAGE,
                write: false,
                stride: 4096,
            },
        );
        assert!(e.contains("outside the window"), "{e}");
        let e = run_err(&dev, MemCommand::Read { off: u64::MAX - 7 });
        assert!(e.contains("outside the window"), "{e}");
    }

    #[test]
    fn counter_parties_exclude_each_other() {
        let dev = FakeWindow::new(4);
        let parties = 4;
        let outs: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..parties)
                .map(|_| {
                    s.spawn(|| {
                        run_ok(
                            &dev,
                            MemCommand::Counter {
                                off: 0x1000,
                                iters: 2000,
                                parties,
                                timeout: T,
                            },
                        )
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for o in outs {
            assert_eq!(o, "counter=8000\n");
        }
        assert_eq!(run_ok(&dev, MemCommand::Read { off: 0x1000 }), "0\n"); // unlocked
        assert_eq!(run_ok(&dev, MemCommand::Read { off: 0x1010 }), "4\n");
        assert_eq!(run_ok(&dev, MemCommand::Read { off: 0x1018 }), "4\n");
    }

    #[test]
    fn a_counter_alone_times_out_waiting_for_the_others() {
        let dev = FakeWindow::new(4);
        let e = run_err(
            &dev,
            MemCommand::Counter {
                off: 0,
                iters: 1,
                parties: 2,
                timeout: Duration::from_millis(10),
            },
        );
        assert_eq!(
            e,
            "timed out after 10 ms waiting for 2 parties at 0x0 (1 arrived)"
        );
    }

    #[test]
    fn fill_and_sum_agree_through_the_mailbox() {
        let dev = FakeWindow::new(64);
        let mailbox = 63 * PAGE; // the last page, outside the slice
        let bytes = 5 * PAGE + 3;
        let (filled, summed) = std::thread::scope(|s| {
            let f = s.spawn(|| {
                run_ok(
                    &dev,
                    MemCommand::Fill {
                        bytes,
                        seed: 11,
                        mailbox,
                        timeout: T,
                    },
                )
            });
            let r = s.spawn(|| {
                run_ok(
                    &dev,
                    MemCommand::Sum {
                        mailbox,
                        timeout: T,
                    },
                )
            });
            (f.join().unwrap(), r.join().unwrap())
        });
        let mut expect = vec![0u8; bytes as usize];
        let sum = fill_pattern(&mut expect, 11);
        assert_eq!(filled, format!("offset=0x0 checksum={sum:#018x}\n"));
        assert!(
            summed.starts_with(&format!(
                "offset=0x0 checksum={sum:#018x} bytes={bytes} ns="
            )),
            "{summed}"
        );
        assert_eq!(*dev.freed.lock().unwrap(), vec![(0, 6)]);
        // The mailbox is back to idle: ready and done clear.
        assert_eq!(run_ok(&dev, MemCommand::Read { off: mailbox }), "0\n");
        assert_eq!(run_ok(&dev, MemCommand::Read { off: mailbox + 24 }), "0\n");
        assert_eq!(
            run_ok(&dev, MemCommand::Read { off: mailbox + 16 }),
            format!("{bytes}\n")
        );
    }

    #[test]
    fn fill_without_a_reader_times_out_and_frees() {
        let dev = FakeWindow::new(8);
        let e = run_err(
            &dev,
            MemCommand::Fill {
                bytes: 10,
                seed: 1,
                mailbox: 7 * PAGE,
                timeout: Duration::from_millis(10),
            },
        );
        assert!(
            e.starts_with("timed out after 10 ms waiting for a reader"),
            "{e}"
        );
        assert_eq!(*dev.freed.lock().unwrap(), vec![(0, 1)]);
        assert_eq!(run_ok(&dev, MemCommand::Read { off: 7 * PAGE }), "0\n");
        // The slice (4 pages) cannot hold 5.
        let e = run_err(
            &dev,
            MemCommand::Fill {
                bytes: 5 * PAGE,
                seed: 1,
                mailbox: 7 * PAGE,
                timeout: T,
            },
        );
        assert_eq!(e, "no free run of 5 pages in this node's slice");
    }

    #[test]
    fn touch_counts_and_writes_each_stride() {
        let dev = FakeWindow::new(8);
        let o = run_ok(
            &dev,
            MemCommand::Touch {
                off: PAGE,
                bytes: 3 * PAGE + 1,
                write: true,
                stride: 4096,
            },
        );
        assert!(o.starts_with("pages=4 ns="), "{o}");
        assert!(o.contains(" ns_per_page="), "{o}");
        assert_eq!(run_ok(&dev, MemCommand::Read { off: 4 * PAGE }), "4\n");
        let o = run_ok(
            &dev,
            MemCommand::Touch {
                off: 8,
                bytes: 64,
                write: false,
                stride: 8,
            },
        );
        assert!(o.starts_with("pages=8 "), "{o}");
    }

    #[test]
    fn hold_maps_writes_and_returns() {
        let dev = FakeWindow::new(2);
        let o = run_ok(
            &dev,
            MemCommand::Hold {
                off: 16,
                write: Some(3),
                seconds: 0,
            },
        );
        assert_eq!(o, "holding\n");
        assert_eq!(run_ok(&dev, MemCommand::Read { off: 16 }), "3\n");
        let o = run_ok(
            &dev,
            MemCommand::Hold {
                off: PAGE + 5,
                write: None,
                seconds: 0,
            },
        );
        assert_eq!(o, "holding\n");
    }
}
