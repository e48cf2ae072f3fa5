//! The DSM engine: runs the page protocol ([`super::protocol`]) on the window's backing memory.
//!
//! Inputs: userfaultfd faults (read by a few fault threads), protocol messages from peers
//! (delivered by the cluster link on the event-loop thread), peers coming and going, and the
//! guest's allocations through the offload device. Each page's state sits behind the lock of
//! its shard (page number modulo [`SHARDS`]); there is no global lock on the fault path, and no
//! thread ever waits for the network: a fault sends a request and returns, the answer's
//! `UFFDIO_COPY` or write-protect change wakes the faulting vCPU.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::alloc::{AllocError, Allocator};
use super::backing::WindowMemory;
use super::protocol::{
    Action, DataSrc, Geometry, InstallSrc, Local, Msg, NodeIdx, PageNo, PageState, Protocol, Want,
    PAGE_SIZE,
};
use super::uffd::{self, Fault, Uffd, UffdError};
use super::wire;
use crate::boot::layout::WINDOW_BASE;
use crate::devices::offload::protocol::{errno, WindowInfo};
use crate::devices::offload::WindowPort;
use crate::ratelimit::RateLimiter;

/// Number of page-state shards (each behind its own lock).
pub const SHARDS: usize = 64;
/// Fault-handling threads.
pub const FAULT_THREADS: usize = 2;

static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

/// Errors setting up the DSM.
#[derive(Debug, thiserror::Error)]
pub enum DsmError {
    #[error("invalid window geometry")]
    Geometry(#[source] super::protocol::ProtocolError),
    #[error("cannot allocate the window's backing memory")]
    Memory(#[source] io::Error),
    #[error("userfaultfd")]
    Uffd(#[from] UffdError),
    #[error("cannot create an eventfd")]
    EventFd(#[source] io::Error),
    #[error("cannot start a fault thread")]
    Thread(#[source] io::Error),
}

/// Where the engine's messages go: the transport, as the cluster link wraps it.
pub trait PeerSender: Send + Sync {
    /// Queues a DSM payload for `to`; never blocks.
    fn send(&self, to: NodeIdx, payload: Vec<u8>);
}

/// What the engine has done, for benchmarks (`--exit-stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DsmStats {
    pub read_faults: u64,
    pub write_faults: u64,
    pub msgs_sent: u64,
    pub msgs_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Pages installed with contents from a peer.
    pub pages_in: u64,
    /// Pages whose contents were sent to a peer.
    pub pages_out: u64,
    /// Local copies dropped (invalidations and transfers of ownership).
    pub drops: u64,
    pub lost_pages: u64,
    pub bad_messages: u64,
    /// Requests sent ahead for neighbours of a faulting page (`--window-prefetch`).
    pub prefetched: u64,
}

impl std::fmt::Display for DsmStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read_faults={} write_faults={} msgs_sent={} msgs_received={} bytes_sent={} \
             bytes_received={} pages_in={} pages_out={} drops={} lost_pages={} bad_messages={} \
             prefetched={}",
            self.read_faults,
            self.write_faults,
            self.msgs_sent,
            self.msgs_received,
            self.bytes_sent,
            self.bytes_received,
            self.pages_in,
            self.pages_out,
            self.drops,
            self.lost_pages,
            self.bad_messages,
            self.prefetched
        )
    }
}

#[derive(Default)]
struct Counters([AtomicU64; 12]);

impl Counters {
    fn add(&self, i: usize, n: u64) {
        self.0[i].fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self, i: usize) -> u64 {
        self.0[i].load(Ordering::Relaxed)
    }
}

const C_RFAULT: usize = 0;
const C_WFAULT: usize = 1;
const C_SENT: usize = 2;
const C_RECV: usize = 3;
const C_BSENT: usize = 4;
const C_BRECV: usize = 5;
const C_IN: usize = 6;
const C_OUT: usize = 7;
const C_DROP: usize = 8;
const C_LOST: usize = 9;
const C_BAD: usize = 10;
const C_PREFETCH: usize = 11;

/// The DSM engine of one node.
pub struct Dsm {
    protocol: Protocol,
    mem: WindowMemory,
    uffd: Uffd,
    shards: Vec<Mutex<Vec<PageState>>>,
    /// Nodes whose link is up / that were lost (bit masks by node index).
    up: AtomicU64,
    lost: AtomicU64,
    sender: RwLock<Option<Arc<dyn PeerSender>>>,
    alloc: Mutex<Allocator>,
    /// Lost pages waiting to be told to the guest (`lost_evt` fires) and then resolved.
    lost_pages: Mutex<Vec<LostPage>>,
    /// Lost pages whose faults are not resolved yet (faults on them wait, no wake).
    unresolved: Mutex<std::collections::HashSet<PageNo>>,
    lost_evt: EventFd,
    stop_evt: EventFd,
    /// Messages waiting for a peer's link to come up.
    held: Mutex<HashMap<NodeIdx, Held>>,
    counters: Counters,
    warn: Mutex<RateLimiter>,
    /// How many following pages (same manager) a remote read fault also requests.
    prefetch: u64,
}

impl Dsm {
    /// A window of `bytes` for node `me` of `nodes`, registered with userfaultfd.
    pub fn new(bytes: u64, me: NodeIdx, nodes: u16) -> Result<Self, DsmError> {
        let geometry =
            Geometry::new(bytes / PAGE_SIZE as u64, nodes).map_err(DsmError::Geometry)?;
        let protocol = Protocol::new(me, geometry).map_err(DsmError::Geometry)?;
        let mem = WindowMemory::new(bytes as usize).map_err(DsmError::Memory)?;
        let uffd = Uffd::new()?;
        uffd.register(mem.host_addr(), mem.len() as u64)?;
        let mut shards: Vec<Vec<PageState>> = (0..SHARDS).map(|_| Vec::new()).collect();
        for page in 0..geometry.pages() {
            shards[page as usize % SHARDS].push(protocol.page_state(page));
        }
        let evt = || EventFd::new(libc::EFD_NONBLOCK).map_err(DsmError::EventFd);
        Ok(Self {
            protocol,
            uffd,
            shards: shards.into_iter().map(Mutex::new).collect(),
            up: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            sender: RwLock::new(None),
            alloc: Mutex::new(Allocator::new(geometry.slice(me))),
            lost_pages: Mutex::new(Vec::new()),
            unresolved: Mutex::new(std::collections::HashSet::new()),
            lost_evt: evt()?,
            stop_evt: evt()?,
            held: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            warn: Mutex::new(RateLimiter::new(module_path!(), Duration::from_secs(5))),
            prefetch: 0,
            mem,
        })
    }

    /// Makes every fault that sends a request also request the next `pages` pages that have
    /// the same manager and no copy here yet, for the same access (0: off).
    pub fn with_prefetch(mut self, pages: u64) -> Self {
        self.prefetch = pages;
        self
    }

    /// Host address and length of the backing memory (for the KVM memory slot).
    pub fn backing(&self) -> (u64, u64) {
        (self.mem.host_addr(), self.mem.len() as u64)
    }

    /// Sends this engine's messages through `sender` from now on.
    pub fn set_sender(&self, sender: Arc<dyn PeerSender>) {
        *self.sender.write().unwrap_or_else(|p| p.into_inner()) = Some(sender);
    }

    /// Starts the fault threads; they end after [`Dsm::shutdown`].
    pub fn start(self: &Arc<Self>) -> Result<Vec<JoinHandle<()>>, DsmError> {
        (0..FAULT_THREADS)
            .map(|i| {
                let me = self.clone();
                std::thread::Builder::new()
                    .name(format!("dsm-fault-{i}"))
                    .spawn(move || me.fault_loop(i == 0))
                    .map_err(DsmError::Thread)
            })
            .collect()
    }

    /// Stops the fault threads.
    pub fn shutdown(&self) {
        let _ = self.stop_evt.write(1);
    }

    /// Becomes readable when lost pages wait in [`Dsm::take_lost`].
    pub fn lost_event_fd(&self) -> RawFd {
        self.lost_evt.as_raw_fd()
    }

    /// Lost pages not yet told to the guest. The caller tells the guest, then calls
    /// [`Dsm::resolve_lost`]: the guest learns of the loss (and can signal the processes)
    /// before a vCPU stuck on such a page continues.
    pub fn take_lost(&self) -> Vec<LostPage> {
        let _ = self.lost_evt.read();
        std::mem::take(&mut *lock(&self.lost_pages))
    }

    /// Makes lost pages accessible again (writable, with whatever they hold, zeros if they
    /// were not populated) and wakes the vCPUs faulting on them.
    pub fn resolve_lost(&self, pages: &[LostPage]) {
        for p in pages {
            let Some(addr) = self.mem.page_addr(p.page) else {
                continue;
            };
            let _shard = self.shard(p.page);
            lock(&self.unresolved).remove(&p.page);
            let r = if p.populated {
                self.uffd.write_protect(addr, false).map_err(failed)
            } else {
                self.install(p.page, addr, &ZERO_PAGE, false)
            };
            if let Err(Exec::Failed(e)) = r {
                log::error!("dsm: cannot release lost page {}: {e}", p.page);
            }
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> DsmStats {
        let c = |i| self.counters.get(i);
        DsmStats {
            read_faults: c(C_RFAULT),
            write_faults: c(C_WFAULT),
            msgs_sent: c(C_SENT),
            msgs_received: c(C_RECV),
            bytes_sent: c(C_BSENT),
            bytes_received: c(C_BRECV),
            pages_in: c(C_IN),
            pages_out: c(C_OUT),
            drops: c(C_DROP),
            lost_pages: c(C_LOST),
            bad_messages: c(C_BAD),
            prefetched: c(C_PREFETCH),
        }
    }

    fn shard(&self, page: PageNo) -> MutexGuard<'_, Vec<PageState>> {
        lock(&self.shards[page as usize % SHARDS])
    }

    fn lost_mask(&self) -> u64 {
        self.lost.load(Ordering::Acquire)
    }

    /// Reads and handles faults until shutdown; the `ticker` also checks held messages.
    fn fault_loop(&self, ticker: bool) {
        let mut faults = Vec::new();
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.uffd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.stop_evt.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is a valid array of two pollfd structs for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, if ticker { TICK_MS } else { -1 }) };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("dsm: poll failed: {}", io::Error::last_os_error());
                return;
            }
            if fds[1].revents != 0 {
                return;
            }
            if ticker {
                self.tick();
            }
            if let Err(e) = self.uffd.read_faults(&mut faults) {
                log::error!("dsm: cannot read faults: {e}");
                return;
            }
            for f in &faults {
                self.on_fault(f);
            }
        }
    }

    fn on_fault(&self, f: &Fault) {
        let Some(page) = self.mem.page_of(f.address) else {
            return;
        };
        let want = if f.write { Want::Write } else { Want::Read };
        self.counters
            .add(if f.write { C_WFAULT } else { C_RFAULT }, 1);
        let mut shard = self.shard(page);
        let st = &mut shard[page as usize / SHARDS];
        let actions = self.protocol.fault(st, page, want, self.lost_mask());
        let remote = actions.iter().any(|a| {
            matches!(
                a,
                Action::Send {
                    msg: Msg::Req { .. },
                    ..
                }
            )
        });
        self.run(page, actions, None);
        drop(shard);
        if remote && self.prefetch > 0 {
            self.prefetch_after(page, want);
        }
    }

    /// Requests the pages after `page` managed by the same node, with the same access, as if
    /// they had faulted: their answers are installed without anyone waiting, and later
    /// accesses hit. Pages this node holds or already asked for are left alone.
    fn prefetch_after(&self, page: PageNo, want: Want) {
        let g = self.protocol.geometry();
        let manager = g.manager(page);
        let end = page.saturating_add(self.prefetch).min(g.pages() - 1);
        for next in page + 1..=end {
            if g.manager(next) != manager {
                break;
            }
            let mut shard = self.shard(next);
            let st = &mut shard[next as usize / SHARDS];
            if st.local() != Local::None || st.pending().is_some() {
                continue;
            }
            self.counters.add(C_PREFETCH, 1);
            let actions = self.protocol.fault(st, next, want, self.lost_mask());
            self.run(next, actions, None);
        }
    }

    /// A DSM payload from peer `from`.
    pub fn receive(&self, from: NodeIdx, payload: &[u8]) {
        self.counters.add(C_RECV, 1);
        self.counters.add(C_BRECV, payload.len() as u64);
        let (page, msg, data) = match wire::decode(payload) {
            Ok(m) => m,
            Err(e) => return self.bad(from, format_args!("{e}")),
        };
        if page >= self.protocol.geometry().pages()
            || from == self.protocol.me()
            || from >= self.protocol.geometry().nodes()
        {
            return self.bad(from, format_args!("page {page} out of range"));
        }
        let mut shard = self.shard(page);
        let st = &mut shard[page as usize / SHARDS];
        match self.protocol.receive(st, page, from, msg, self.lost_mask()) {
            Ok(actions) => self.run(page, actions, data),
            Err(e) => {
                drop(shard);
                self.bad(from, format_args!("{e}"));
            }
        }
    }

    fn bad(&self, from: NodeIdx, what: std::fmt::Arguments<'_>) {
        if self.lost_mask() & bit(from) != 0 {
            // Late messages of a lost node are expected; the protocol ignores them.
            log::debug!("dsm: late message from lost node {from}: {what}");
            return;
        }
        self.counters.add(C_BAD, 1);
        lock(&self.warn).warn(format_args!("dsm: bad message from node {from}: {what}"));
    }

    /// The link to `node` is up.
    pub fn peer_up(&self, node: NodeIdx) {
        // A node that comes back is a new start: pages lost with it stay lost (both sides
        // declared each other lost when the old link broke).
        self.lost.fetch_and(!bit(node), Ordering::AcqRel);
        let mut held = lock(&self.held);
        self.up.fetch_or(bit(node), Ordering::AcqRel);
        if let Some(h) = held.remove(&node) {
            for payload in h.msgs {
                self.transmit(node, payload);
            }
        }
    }

    /// The link to `node` was lost: everything waiting on it ends now.
    pub fn peer_lost(&self, node: NodeIdx) {
        if node >= self.protocol.geometry().nodes() || node == self.protocol.me() {
            return;
        }
        {
            let mut held = lock(&self.held);
            self.up.fetch_and(!bit(node), Ordering::AcqRel);
            self.lost.fetch_or(bit(node), Ordering::AcqRel);
            held.remove(&node);
        }
        for page in 0..self.protocol.geometry().pages() {
            let mut shard = self.shard(page);
            let st = &mut shard[page as usize / SHARDS];
            let actions = self.protocol.peer_lost(st, page, node);
            self.run(page, actions, None);
        }
        log::debug!(
            "dsm: after losing node {node}, {} pages lost in all",
            self.stats().lost_pages
        );
    }

    /// Executes a page's actions in order, with the page's lock held by the caller. `data` is
    /// the contents carried by the message being handled.
    fn run(&self, page: PageNo, actions: Vec<Action>, data: Option<&[u8]>) {
        for a in actions {
            if let Err(Exec::Failed(e)) = self.execute(page, a, data) {
                log::error!("dsm: page {page}: {e}");
            }
        }
    }

    fn execute(&self, page: PageNo, a: Action, data: Option<&[u8]>) -> Result<(), Exec> {
        let addr = self
            .mem
            .page_addr(page)
            .ok_or(Exec::Failed("page outside the window".into()))?;
        match a {
            Action::Send { to, msg, data } => self.send(page, to, msg, data)?,
            Action::Install { access, src } => {
                let bytes = match src {
                    InstallSrc::Zero => &ZERO_PAGE[..],
                    InstallSrc::Message => data
                        .filter(|d| d.len() == PAGE_SIZE)
                        .ok_or(Exec::Failed("install without page data".into()))?,
                };
                if src == InstallSrc::Message {
                    self.counters.add(C_IN, 1);
                }
                self.install(page, addr, bytes, access == Want::Read)?;
            }
            Action::Protect { access } => self
                .uffd
                .write_protect(addr, access == Want::Read)
                .map_err(failed)?,
            Action::Drop => {
                self.counters.add(C_DROP, 1);
                self.mem
                    .discard(page)
                    .map_err(|e| Exec::Failed(e.to_string()))?;
            }
            Action::Wake => {
                if !lock(&self.unresolved).contains(&page) {
                    self.uffd.wake(addr).map_err(failed)?;
                }
            }
            Action::Lost { populated } => self.lose(page, populated),
            Action::ResetDone { retired } => lock(&self.alloc).reset_done(page, retired),
        }
        Ok(())
    }

    fn install(&self, page: PageNo, addr: u64, bytes: &[u8], wp: bool) -> Result<(), Exec> {
        // SAFETY: `bytes` is a live slice of exactly PAGE_SIZE bytes (checked by the caller).
        let r = unsafe { self.uffd.copy(addr, bytes.as_ptr(), wp) };
        match r {
            Err(e) if uffd::is_exists(&e) => {
                // Should not happen (the protocol only installs unpopulated pages); replace
                // the page so that the protocol's view holds.
                log::warn!("dsm: page at {addr:#x} was already populated; replacing it");
                self.mem
                    .discard(page)
                    .map_err(|e| Exec::Failed(e.to_string()))?;
                // SAFETY: as above.
                unsafe { self.uffd.copy(addr, bytes.as_ptr(), wp) }.map_err(failed)
            }
            r => r.map_err(failed),
        }
    }

    fn lose(&self, page: PageNo, populated: bool) {
        self.counters.add(C_LOST, 1);
        let node = self.lost_cause(page);
        lock(&self.unresolved).insert(page);
        lock(&self.lost_pages).push(LostPage {
            node,
            page,
            populated,
        });
        let _ = self.lost_evt.write(1);
    }

    /// The node blamed for a lost page: the lowest lost node (the page's manager if it is lost).
    fn lost_cause(&self, page: PageNo) -> u32 {
        let manager = self.protocol.geometry().manager(page);
        let lost = self.lost_mask();
        if lost & bit(manager) != 0 || lost == 0 {
            return u32::from(manager);
        }
        lost.trailing_zeros()
    }

    fn send(&self, page: PageNo, to: NodeIdx, msg: Msg, src: Option<DataSrc>) -> Result<(), Exec> {
        let mut buf = [0u8; PAGE_SIZE];
        let data = match src {
            None => None,
            Some(DataSrc::Zero) => Some(&ZERO_PAGE[..]),
            Some(DataSrc::Local) => {
                if !self.mem.read_page(page, &mut buf) {
                    return Err(Exec::Failed("cannot read the page".into()));
                }
                Some(&buf[..])
            }
        };
        if data.is_some() {
            self.counters.add(C_OUT, 1);
        }
        let payload = wire::encode(page, &msg, data).map_err(|e| Exec::Failed(e.to_string()))?;
        self.post(to, payload);
        Ok(())
    }

    /// Sends a payload now if `to` is up; drops it if `to` is lost (the protocol was told);
    /// otherwise holds it until the link comes up or [`HOLD_TIMEOUT`] declares `to` lost.
    fn post(&self, to: NodeIdx, payload: Vec<u8>) {
        let mut held = lock(&self.held);
        if self.up.load(Ordering::Acquire) & bit(to) != 0 {
            self.transmit(to, payload);
        } else if self.lost_mask() & bit(to) == 0 {
            let h = held.entry(to).or_insert_with(|| Held {
                since: Instant::now(),
                msgs: Vec::new(),
            });
            h.msgs.push(payload);
        }
    }

    fn transmit(&self, to: NodeIdx, payload: Vec<u8>) {
        let sender = self
            .sender
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(sender) = sender {
            self.counters.add(C_SENT, 1);
            self.counters.add(C_BSENT, payload.len() as u64);
            sender.send(to, payload);
        }
    }

    /// Declares lost every peer whose held messages waited longer than [`HOLD_TIMEOUT`].
    fn tick(&self) {
        let expired: Vec<NodeIdx> = lock(&self.held)
            .iter()
            .filter(|(_, h)| h.since.elapsed() > HOLD_TIMEOUT)
            .map(|(n, _)| *n)
            .collect();
        for node in expired {
            log::warn!(
                "dsm: node {node} did not come up within {}s: its window pages are lost here",
                HOLD_TIMEOUT.as_secs()
            );
            self.peer_lost(node);
        }
    }

    fn reset_pages(&self, pages: std::ops::Range<PageNo>) {
        for page in pages {
            let mut shard = self.shard(page);
            let st = &mut shard[page as usize / SHARDS];
            match self.protocol.reset(st, page, self.lost_mask()) {
                Ok(actions) => self.run(page, actions, None),
                Err(e) => log::error!("dsm: cannot reset page {page}: {e}"),
            }
        }
    }
}

/// A page that lost its only valid copy (or its manager) with a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostPage {
    /// The lost node blamed for it.
    pub node: u32,
    pub page: PageNo,
    /// Whether this node's backing still has the page populated.
    pub populated: bool,
}

impl LostPage {
    /// The page's window offset.
    pub fn offset(&self) -> u64 {
        self.page * PAGE_SIZE as u64
    }
}

/// How one action failed.
enum Exec {
    Failed(String),
}

/// Messages for a peer whose link is not up yet.
struct Held {
    since: Instant,
    msgs: Vec<Vec<u8>>,
}

/// How long messages wait for a peer that is not connected before the peer is declared lost.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a fault thread checks held messages.
const TICK_MS: i32 = 500;

fn failed(e: UffdError) -> Exec {
    Exec::Failed(format!(
        "{e}: {}",
        std::error::Error::source(&e).map_or(String::new(), |s| s.to_string())
    ))
}

fn bit(node: NodeIdx) -> u64 {
    1u64.checked_shl(u32::from(node)).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WindowPort for Dsm {
    fn info(&self) -> WindowInfo {
        let g = self.protocol.geometry();
        let slice = g.slice(self.protocol.me());
        WindowInfo {
            base: WINDOW_BASE,
            size: g.pages() * PAGE_SIZE as u64,
            slice_offset: slice.start * PAGE_SIZE as u64,
            slice_len: (slice.end - slice.start) * PAGE_SIZE as u64,
            node_index: u32::from(self.protocol.me()),
        }
    }

    fn alloc(&self, pages: u64) -> Result<u64, i32> {
        match lock(&self.alloc).alloc(pages) {
            Ok(first) => Ok(first * PAGE_SIZE as u64),
            Err(AllocError::NoSpace(_)) => Err(errno::ENOMEM),
            Err(_) => Err(errno::EINVAL),
        }
    }

    fn free(&self, offset: u64, pages: u64) -> Result<(), i32> {
        if !offset.is_multiple_of(PAGE_SIZE as u64) {
            return Err(errno::EINVAL);
        }
        let range = lock(&self.alloc)
            .free(offset / PAGE_SIZE as u64, pages)
            .map_err(|_| errno::EINVAL)?;
        self.reset_pages(range);
        Ok(())
    }

    fn free_all(&self) {
        let pages = lock(&self.alloc).free_all();
        if !pages.is_empty() {
            log::info!(
                "dsm: guest driver reset: {} allocated pages freed",
                pages.len()
            );
        }
        for page in pages {
            self.reset_pages(page..page + 1);
        }
    }
}
