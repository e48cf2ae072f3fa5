//! The offload virtio device (docs/offload-device.md): the guest's channel to its monitor.
//!
//! The device is a state machine with I/O at its edges. Inputs are queue notifications
//! ([`OffloadDevice::process_requests`], [`OffloadDevice::process_event_buffers`]) and what the
//! cluster reports ([`Inbound`]); outputs are completions written into guest memory and
//! [`Outbound`] messages for the cluster. Nothing here waits on the network: a `PING` or a
//! forwarded `SYSCALL` is parked with its descriptor chain until its answer arrives and is
//! completed then. The syscall requests and events are in [`syscall`], driving the router of
//! [`crate::offload`]; guest messages are in [`guestmsg`], driving
//! [`crate::offload::GuestMsgs`].

mod guestmsg;
pub mod handler;
pub mod protocol;
mod syscall;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap};

use self::protocol::{errno, PeerState, Request, RequestError};
use super::virtio::{
    read_config_bytes, Activation, Interrupt, VirtioDevice, VirtioError, INT_USED_RING,
    VIRTIO_F_VERSION_1,
};
use crate::offload::{GuestMsgStats, GuestMsgs, Router, RouterStats, SysMsg};
use crate::ratelimit::RateLimiter;

/// Queue sizes: requests, events.
const QUEUE_SIZES: [u16; 2] = [256, 256];
/// Most `PING`s waiting for an answer at once.
pub const MAX_PENDING_PINGS: usize = 64;
/// Most events held back while the driver has no event buffer posted.
pub const MAX_BACKLOG: usize = 64;
/// Most `PING_IN` tokens remembered for the guest's `PONG`.
const MAX_TOKENS: usize = 64;
/// Most chains handled per notification before yielding to the event loop.
const MAX_CHAINS_PER_CALL: usize = 512;

/// This node as the device describes it.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// This node's index.
    pub index: u32,
    /// Every node's name, by index.
    pub names: Vec<String>,
}

/// The coherent window as the device sees it: its geometry and this node's page allocator
/// (implemented by the DSM engine). Calls return at once; errors are positive errnos.
pub trait WindowPort: Send + Sync {
    /// The window's geometry and this node's slice.
    fn info(&self) -> protocol::WindowInfo;
    /// Allocates `pages` contiguous zeroed pages of this node's slice; returns the window
    /// offset of the first.
    fn alloc(&self, pages: u64) -> Result<u64, i32>;
    /// Frees a run allocated by `alloc`.
    fn free(&self, offset: u64, pages: u64) -> Result<(), i32>;
    /// Frees every run (the guest's driver was reset and holds none any more).
    fn free_all(&self) {}
}

/// Messages the device asks the cluster to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Ping `node`; the answer comes back as [`Inbound::PingResult`] with the same `id`.
    Ping {
        node: u32,
        id: u64,
        payload: Vec<u8>,
    },
    /// Answer the ping `request` that came from `node`.
    Pong {
        node: u32,
        request: u64,
        payload: Vec<u8>,
    },
    /// A syscall router message for `node` (transport `App` kind 0x0200). If it cannot be
    /// handed to the transport it comes back as [`Inbound::SyscallUnsent`].
    Syscall { node: u32, msg: SysMsg },
    /// A guest message for `node` (transport request carrying `App` kind 0x0300; `payload`
    /// already encoded); its outcome comes back as [`Inbound::GuestMsgResult`] with `id`.
    GuestMsg {
        node: u32,
        id: u64,
        payload: Vec<u8>,
    },
    /// The reply (encoded `App` kind 0x0300 payload) to the guest message `request` of `node`.
    GuestMsgRet {
        node: u32,
        request: u64,
        payload: Vec<u8>,
    },
}

/// What the cluster reports to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// The answer to `Outbound::Ping { id }`: the echoed bytes or a positive errno.
    PingResult {
        id: u64,
        result: Result<Vec<u8>, i32>,
    },
    /// A peer guest pings this guest; `request` identifies it for the answer.
    PingIn {
        src: u32,
        request: u64,
        payload: Vec<u8>,
    },
    /// A peer's link changed state.
    PeerState { node: u32, state: PeerState },
    /// A syscall router message (App kind 0x0200 payload, not yet checked) from `src`.
    Syscall { src: u32, payload: Vec<u8> },
    /// `Outbound::Syscall` could not be sent (peer not connected).
    SyscallUnsent { node: u32, msg: SysMsg },
    /// The outcome of `Outbound::GuestMsg { id }`: the reply's `App` payload (not yet
    /// checked), or a positive errno for why no reply came.
    GuestMsgResult {
        id: u64,
        result: Result<Vec<u8>, i32>,
    },
    /// A guest message from `src` (`App` kind 0x0300 payload, not yet checked); `request`
    /// identifies it for the reply.
    GuestMsgIn {
        src: u32,
        request: u64,
        payload: Vec<u8>,
    },
}

/// What a `PING_IN` token handed to the guest answers: (token, source node, transport
/// request).
type Token = (u64, u32, u64);

/// A request waiting for the network, with where its response goes.
struct Parked {
    head: u16,
    tag: u64,
    writable: Vec<(GuestAddress, u32)>,
}

struct Active {
    mem: GuestMemoryMmap,
    requests: Queue,
    events: Queue,
    interrupt: Arc<Interrupt>,
}

/// Counters of the device's work, for benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OffloadStats {
    /// Request chains taken from the request queue.
    pub requests: u64,
    /// Events written into the event queue.
    pub events: u64,
    /// Interrupts injected into the guest.
    pub interrupts: u64,
    /// The syscall router's work.
    pub syscalls: RouterStats,
    /// Guest messages.
    pub guest_msgs: GuestMsgStats,
}

impl std::fmt::Display for OffloadStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests={} events={} interrupts={} {} {}",
            self.requests, self.events, self.interrupts, self.syscalls, self.guest_msgs
        )
    }
}

/// The offload device.
pub struct OffloadDevice {
    stats: OffloadStats,
    /// The interrupt of the last activation (the transport keeps one for the device's life).
    irq: Option<Arc<Interrupt>>,
    identity: NodeIdentity,
    config: Vec<u8>,
    peers: Vec<PeerState>,
    active: Option<Active>,
    parked: HashMap<u64, Parked>,
    next_id: u64,
    tokens: VecDeque<Token>,
    next_token: u64,
    backlog: VecDeque<Vec<u8>>,
    window: Option<Arc<dyn WindowPort>>,
    warn: RateLimiter,
    /// Forwarded syscalls, each waiting with its chain (caller side) or token (home side).
    router: Router<Parked>,
    /// Guest messages, each waiting with its chain (sender side) or token (target side).
    msgs: GuestMsgs<Parked>,
    /// Messages produced outside a call that returns them (reset, evicted events); they go
    /// out with the next batch.
    outbox: Vec<Outbound>,
}

/// A descriptor chain read into memory: its readable bytes and its writable regions.
struct Chain {
    head: u16,
    readable: Vec<u8>,
    writable: Vec<(GuestAddress, u32)>,
    /// The chain was malformed (buffer outside guest memory, too long): answer `-EINVAL`.
    broken: Option<&'static str>,
}

impl OffloadDevice {
    /// A device for node `identity.index` of the cluster.
    pub fn new(identity: NodeIdentity) -> Self {
        let name = identity
            .names
            .get(identity.index as usize)
            .cloned()
            .unwrap_or_default();
        let mut config = Vec::new();
        config.extend_from_slice(&identity.index.to_le_bytes());
        config.extend_from_slice(&(identity.names.len() as u32).to_le_bytes());
        config.extend_from_slice(&protocol::name_field(&name));
        let (identity_index, num_nodes) = (identity.index, identity.names.len());
        Self {
            stats: OffloadStats::default(),
            irq: None,
            peers: vec![PeerState::Down; identity.names.len()],
            identity,
            config,
            active: None,
            parked: HashMap::new(),
            next_id: 1,
            tokens: VecDeque::new(),
            next_token: 1,
            backlog: VecDeque::new(),
            window: None,
            warn: RateLimiter::new(module_path!(), Duration::from_secs(5)),
            router: Router::new(identity_index, num_nodes),
            msgs: GuestMsgs::new(identity_index, num_nodes),
            outbox: Vec::new(),
        }
    }

    /// Serves the window requests from `window` (without one they fail with `ENODEV`).
    pub fn set_window(&mut self, window: Arc<dyn WindowPort>) {
        self.window = Some(window);
    }

    /// Tells the guest that these window pages (window offsets) are lost for good because
    /// node `node` was lost; the offsets go out in events of at most 512.
    pub fn pages_lost(&mut self, node: u32, offsets: &[u64]) {
        for chunk in offsets.chunks(protocol::MAX_LOST_PER_EVENT) {
            let body: Vec<u8> = chunk.iter().flat_map(|o| o.to_le_bytes()).collect();
            let ev = protocol::encode_event(protocol::EVENT_PAGES_LOST, node, 0, &body);
            // Lost-page events must not be dropped: the backlog may grow past its usual bound.
            self.backlog.push_back(ev);
        }
        self.deliver_events();
    }

    /// Handles every request the guest posted. Returns what to send to the cluster and whether
    /// requests remain (the caller should call again after serving other events).
    pub fn process_requests(&mut self) -> (Vec<Outbound>, bool) {
        let mut out = Vec::new();
        let mut used = false;
        let mut handled = 0;
        while handled < MAX_CHAINS_PER_CALL {
            let Some(chain) = self.pop_chain() else { break };
            handled += 1;
            self.stats.requests += 1;
            used |= self.handle_chain(chain, &mut out);
        }
        if used {
            self.interrupt();
        }
        out.append(&mut self.outbox);
        (out, handled == MAX_CHAINS_PER_CALL)
    }

    /// The driver posted event buffers: deliver held-back events.
    pub fn process_event_buffers(&mut self) {
        self.deliver_events();
    }

    /// Applies what the cluster reported; returns messages to send (e.g. a refused ping).
    pub fn handle(&mut self, inbound: Inbound) -> Vec<Outbound> {
        let mut out = self.handle_inbound(inbound);
        out.append(&mut self.outbox);
        out
    }

    fn handle_inbound(&mut self, inbound: Inbound) -> Vec<Outbound> {
        match inbound {
            Inbound::PingResult { id, result } => {
                self.complete_ping(id, result);
                vec![]
            }
            Inbound::PingIn {
                src,
                request,
                payload,
            } => self.ping_in(src, request, payload),
            Inbound::PeerState { node, state } => {
                if let Some(s) = self.peers.get_mut(node as usize) {
                    *s = state;
                }
                self.syscall_peer_state(node, state == PeerState::Up);
                self.guest_msg_peer_state(node, state == PeerState::Up);
                let ev = protocol::encode_event(
                    protocol::EVENT_PEER_STATE,
                    node,
                    0,
                    &(state as u32).to_le_bytes(),
                );
                self.push_event(ev);
                vec![]
            }
            Inbound::Syscall { src, payload } => {
                self.syscall_in(src, &payload);
                vec![]
            }
            Inbound::SyscallUnsent { node, msg } => {
                self.syscall_unsent(node, &msg);
                vec![]
            }
            Inbound::GuestMsgResult { id, result } => {
                self.complete_guest_msg(id, result);
                vec![]
            }
            Inbound::GuestMsgIn {
                src,
                request,
                payload,
            } => {
                self.guest_msg_in(src, request, &payload);
                vec![]
            }
        }
    }

    fn pop_chain(&mut self) -> Option<Chain> {
        let active = self.active.as_mut()?;
        let chain = active.requests.pop_descriptor_chain(&active.mem)?;
        Some(read_chain(&active.mem, chain))
    }

    /// Handles one request chain; returns whether a used entry was added.
    fn handle_chain(&mut self, chain: Chain, out: &mut Vec<Outbound>) -> bool {
        if let Some(why) = chain.broken {
            self.warn
                .warn(format_args!("offload: malformed request chain: {why}"));
            return self.respond(&chain, 0, -errno::EINVAL, &[]);
        }
        let (tag, parsed) = protocol::parse_request(&chain.readable);
        let request = match parsed {
            Ok(r) => r,
            Err(e) => {
                self.warn.warn(format_args!("offload: bad request: {e}"));
                let code = match e {
                    RequestError::TooLarge(_) => errno::EMSGSIZE,
                    _ => errno::EINVAL,
                };
                return self.respond(&chain, tag, -code, &[]);
            }
        };
        match request {
            Request::NodeInfo => {
                let num = self.identity.names.len() as u32;
                let name = self.identity.names[self.identity.index as usize].clone();
                let body = protocol::encode_node_info(self.identity.index, num, &name);
                self.respond(&chain, tag, 0, &body)
            }
            Request::Peers => {
                let body = self.peers_payload();
                self.respond(&chain, tag, 0, &body)
            }
            Request::Ping { node, payload } => self.start_ping(chain, tag, node, payload, out),
            Request::WindowInfo | Request::Alloc { .. } | Request::Free { .. } => {
                let (status, body) = self.window_request(&request);
                self.respond(&chain, tag, status, &body)
            }
            Request::Pong { token, payload } => {
                let status = match self.take_token(token) {
                    Some((node, request)) => {
                        out.push(Outbound::Pong {
                            node,
                            request,
                            payload,
                        });
                        0
                    }
                    None => -errno::ENOENT,
                };
                self.respond(&chain, tag, status, &[])
            }
            Request::Syscall { record } => self.start_syscall(chain, tag, record),
            Request::SyscallRet { token, status, ret } => {
                let status = self.syscall_ret(token, status, ret);
                self.respond(&chain, tag, status, &[])
            }
            Request::GuestMsg { node, kind, body } => {
                self.start_guest_msg(chain, tag, node, kind, &body)
            }
            Request::GuestMsgRet {
                token,
                status,
                body,
            } => {
                let status = self.guest_msg_ret(token, status, &body);
                self.respond(&chain, tag, status, &[])
            }
        }
    }

    /// Answers a window request: (status, payload).
    fn window_request(&self, request: &Request) -> (i32, Vec<u8>) {
        let Some(w) = &self.window else {
            return (-errno::ENODEV, vec![]);
        };
        let result = match *request {
            Request::WindowInfo => Ok(protocol::encode_window_info(&w.info())),
            Request::Alloc { pages } => w.alloc(pages).map(|off| off.to_le_bytes().to_vec()),
            Request::Free { offset, pages } => w.free(offset, pages).map(|()| vec![]),
            _ => Err(errno::EINVAL),
        };
        match result {
            Ok(body) => (0, body),
            Err(e) => (-e.abs(), vec![]),
        }
    }

    fn peers_payload(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, name) in self.identity.names.iter().enumerate() {
            if i as u32 != self.identity.index {
                body.extend_from_slice(&protocol::encode_peer(i as u32, self.peers[i], name));
            }
        }
        body
    }

    fn start_ping(
        &mut self,
        chain: Chain,
        tag: u64,
        node: u32,
        payload: Vec<u8>,
        out: &mut Vec<Outbound>,
    ) -> bool {
        let room = protocol::RESP_HEADER_LEN + payload.len();
        self.start_exchange(chain, tag, node, room, out, |id| Outbound::Ping {
            node,
            id,
            payload,
        })
    }

    /// Sends what `make` builds (given the exchange id) to `node` and parks the request until
    /// the answer arrives, or answers at once why it cannot go (`room`: response bytes the
    /// request must have room for).
    fn start_exchange(
        &mut self,
        chain: Chain,
        tag: u64,
        node: u32,
        room: usize,
        out: &mut Vec<Outbound>,
        make: impl FnOnce(u64) -> Outbound,
    ) -> bool {
        let status = if node == self.identity.index || node as usize >= self.peers.len() {
            -errno::EHOSTUNREACH
        } else if self.peers[node as usize] != PeerState::Up {
            -errno::ENOTCONN
        } else if self.parked.len() >= MAX_PENDING_PINGS {
            -errno::EBUSY
        } else if total_len(&chain.writable) < room {
            -errno::EMSGSIZE
        } else {
            0
        };
        if status != 0 {
            return self.respond(&chain, tag, status, &[]);
        }
        let id = self.next_id;
        self.next_id += 1;
        out.push(make(id));
        self.parked.insert(
            id,
            Parked {
                head: chain.head,
                tag,
                writable: chain.writable,
            },
        );
        false
    }

    fn complete_ping(&mut self, id: u64, result: Result<Vec<u8>, i32>) {
        let Some(p) = self.parked.remove(&id) else {
            self.warn
                .warn(format_args!("offload: answer for unknown ping {id}"));
            return;
        };
        let (status, body) = match result {
            Ok(b) => (0, b),
            Err(e) => (-e.abs(), vec![]),
        };
        let chain = Chain {
            head: p.head,
            readable: vec![],
            writable: p.writable,
            broken: None,
        };
        if self.respond(&chain, p.tag, status, &body) {
            self.interrupt();
        }
    }

    fn ping_in(&mut self, src: u32, request: u64, payload: Vec<u8>) -> Vec<Outbound> {
        if self.backlog.len() >= MAX_BACKLOG || payload.len() > protocol::MAX_PAYLOAD {
            self.warn.warn(format_args!(
                "offload: guest not taking events; ping from node {src} dropped"
            ));
            return vec![];
        }
        let token = self.hand_out_token(src, request);
        let ev = protocol::encode_event(protocol::EVENT_PING_IN, src, token, &payload);
        self.push_event(ev);
        vec![]
    }

    /// A token for the guest's `PONG` to transport request `request` of `src`; the oldest
    /// is forgotten beyond [`MAX_TOKENS`] (its answer then gets `-ENOENT`).
    fn hand_out_token(&mut self, src: u32, request: u64) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        if self.tokens.len() >= MAX_TOKENS {
            self.tokens.pop_front();
        }
        self.tokens.push_back((token, src, request));
        token
    }

    fn take_token(&mut self, token: u64) -> Option<(u32, u64)> {
        let pos = self.tokens.iter().position(|&(t, _, _)| t == token)?;
        self.tokens.remove(pos).map(|(_, src, req)| (src, req))
    }

    fn push_event(&mut self, ev: Vec<u8>) {
        if self.backlog.len() >= MAX_BACKLOG {
            if let Some(old) = self.backlog.pop_front() {
                self.event_dropped(&old);
                self.guest_msg_event_dropped(&old);
            }
        }
        self.backlog.push_back(ev);
        self.deliver_events();
    }

    fn deliver_events(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut used = false;
        while !self.backlog.is_empty() {
            let Some(chain) = active.events.pop_descriptor_chain(&active.mem) else {
                break;
            };
            let chain = read_chain(&active.mem, chain);
            let ev = self.backlog.pop_front().unwrap_or_default();
            self.stats.events += 1;
            let len = if chain.broken.is_none() && total_len(&chain.writable) >= ev.len() {
                write_regions(&active.mem, &chain.writable, &ev)
            } else {
                self.warn.warn(format_args!(
                    "offload: event buffer too small or malformed; event dropped"
                ));
                0
            };
            if let Err(e) = active.events.add_used(&active.mem, chain.head, len as u32) {
                self.warn
                    .warn(format_args!("offload: cannot return event buffer: {e}"));
            }
            used = true;
        }
        if used {
            active.interrupt.trigger(INT_USED_RING);
        }
    }

    /// Writes a response into the chain's writable part and returns the chain to the guest.
    fn respond(&mut self, chain: &Chain, tag: u64, status: i32, body: &[u8]) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let room = total_len(&chain.writable);
        let (status, body) = if room < protocol::RESP_HEADER_LEN + body.len() {
            (-errno::EMSGSIZE, &[][..])
        } else {
            (status, body)
        };
        let bytes = protocol::encode_response(status, tag, body);
        let len = if room >= bytes.len() {
            write_regions(&active.mem, &chain.writable, &bytes)
        } else {
            0
        };
        if let Err(e) = active
            .requests
            .add_used(&active.mem, chain.head, len as u32)
        {
            self.warn
                .warn(format_args!("offload: cannot return request buffer: {e}"));
        }
        true
    }

    fn interrupt(&self) {
        if let Some(a) = &self.active {
            a.interrupt.trigger(INT_USED_RING);
        }
    }

    /// What the device has done so far (over every activation).
    pub fn stats(&self) -> OffloadStats {
        OffloadStats {
            interrupts: self.irq.as_ref().map_or(0, |i| i.injected()),
            syscalls: self.router.stats(),
            guest_msgs: self.msgs.stats(),
            ..self.stats
        }
    }

    /// Pings waiting for an answer (for tests and statistics).
    pub fn pending_pings(&self) -> usize {
        self.parked.len()
    }
}

fn total_len(regions: &[(GuestAddress, u32)]) -> usize {
    regions.iter().map(|(_, l)| *l as usize).sum()
}

/// Reads a chain: readable bytes (bounded), writable regions, all checked against guest memory.
fn read_chain<M>(mem: &GuestMemoryMmap, chain: virtio_queue::DescriptorChain<M>) -> Chain
where
    M: std::ops::Deref,
    M::Target: GuestMemory,
{
    const MAX_READABLE: usize = protocol::REQ_HEADER_LEN + protocol::MAX_PAYLOAD;
    let mut c = Chain {
        head: chain.head_index(),
        readable: Vec::new(),
        writable: Vec::new(),
        broken: None,
    };
    for desc in chain {
        let (addr, len) = (desc.addr(), desc.len());
        if !GuestMemoryBackend::check_range(mem, addr, len as usize) {
            c.broken = Some("buffer outside guest memory");
            continue;
        }
        if desc.is_write_only() {
            c.writable.push((addr, len));
        } else if !c.writable.is_empty() {
            c.broken = Some("readable buffer after a writable one");
        } else if c.readable.len() + len as usize > MAX_READABLE {
            c.broken = Some("request larger than the limit");
        } else {
            let start = c.readable.len();
            c.readable.resize(start + len as usize, 0);
            if mem.read_slice(&mut c.readable[start..], addr).is_err() {
                c.broken = Some("unreadable buffer");
            }
        }
    }
    c
}

/// Writes `bytes` across the regions in order; returns how many were written.
fn write_regions(mem: &GuestMemoryMmap, regions: &[(GuestAddress, u32)], bytes: &[u8]) -> usize {
    let mut done = 0;
    for (addr, len) in regions {
        if done == bytes.len() {
            break;
        }
        let n = (*len as usize).min(bytes.len() - done);
        if mem.write_slice(&bytes[done..done + n], *addr).is_err() {
            break;
        }
        done += n;
    }
    done
}

impl VirtioDevice for OffloadDevice {
    fn device_type(&self) -> u32 {
        protocol::DEVICE_ID
    }

    fn vendor_id(&self) -> u32 {
        protocol::VENDOR_ID
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, a: Activation) -> Result<(), VirtioError> {
        let mut queues = a.queues.into_iter();
        let (Some(requests), Some(events)) = (queues.next(), queues.next()) else {
            return Err(VirtioError::Activate("offload needs two queues".into()));
        };
        for (i, q) in [&requests, &events].into_iter().enumerate() {
            if !q.ready() {
                return Err(VirtioError::InvalidQueue(i));
            }
        }
        self.irq = Some(a.interrupt.clone());
        self.active = Some(Active {
            mem: a.mem,
            requests,
            events,
            interrupt: a.interrupt,
        });
        self.deliver_events();
        Ok(())
    }

    fn reset(&mut self) {
        // Parked pings belong to the old queues; their answers are dropped when they arrive.
        self.active = None;
        self.parked.clear();
        self.tokens.clear();
        self.syscall_reset();
        self.guest_msg_reset();
        // The driver's runs died with it; left allocated they would leak the slice.
        if let Some(w) = &self.window {
            w.free_all();
        }
    }
}

#[cfg(test)]
mod tests;
