//! The offload device's side of forwarded system calls (docs/offload-device.md, `SYSCALL`,
//! `SYSCALL_RET`, `SYSCALL_IN`): guest requests and peer messages go into the syscall
//! router ([`crate::offload::Router`]), and what it decides becomes completions, events and
//! [`Outbound::Syscall`] messages (collected in the device's outbox).

use super::protocol::{self, errno};
use super::{Chain, OffloadDevice, Outbound, Parked, MAX_BACKLOG};
use crate::offload::{Arrival, CallRecord, Outgoing, SysMsg};

/// Room a `SYSCALL` response needs: the header and the i64 ret.
const SYSCALL_RESP_LEN: usize = protocol::RESP_HEADER_LEN + 8;

impl OffloadDevice {
    /// A guest `SYSCALL` request: parks it and sends the `CALL`, or answers it at once with
    /// the refusal. Returns whether a used entry was added.
    pub(super) fn start_syscall(&mut self, chain: Chain, tag: u64, record: CallRecord) -> bool {
        if super::total_len(&chain.writable) < SYSCALL_RESP_LEN {
            return self.respond(&chain, tag, -errno::EMSGSIZE, &[]);
        }
        let parked = Parked {
            head: chain.head,
            tag,
            writable: chain.writable,
        };
        match self.router.call(record, parked) {
            Ok(o) => {
                self.send_sys(o);
                false
            }
            Err((p, e)) => {
                log::debug!("offload: syscall {} refused: {e}", record.nr);
                self.respond(&unparked(p.head, p.writable), p.tag, -e.errno(), &[])
            }
        }
    }

    /// A guest `SYSCALL_RET` request: the answer to a `SYSCALL_IN`. Returns the request's
    /// status (0, or `-ENOENT` for an unknown or expired token).
    pub(super) fn syscall_ret(&mut self, token: u64, status: i32, ret: i64) -> i32 {
        match self.router.answer(token, status, ret) {
            Ok(o) => {
                self.send_sys(o);
                0
            }
            Err(e) => {
                log::debug!("offload: SYSCALL_RET refused: {e}");
                -e.errno()
            }
        }
    }

    /// A router message from node `src`.
    pub(super) fn syscall_in(&mut self, src: u32, payload: &[u8]) {
        match self.router.receive(src, payload) {
            Ok(Arrival::Call { src, token, record }) => self.deliver_call(src, token, &record),
            Ok(Arrival::Return { req, status, ret }) => self.complete_syscall(req, status, ret),
            Ok(Arrival::Refused(o)) => {
                self.warn.warn(format_args!(
                    "offload: node {src} has too many calls waiting here; call refused"
                ));
                self.send_sys(o);
            }
            Err(e) => self
                .warn
                .warn(format_args!("offload: bad syscall message: {e}")),
        }
    }

    /// The transport could not take a router message for `node`.
    pub(super) fn syscall_unsent(&mut self, node: u32, msg: &SysMsg) {
        log::debug!("offload: syscall {} to node {node} not sent", msg.name());
        if let Some(p) = self.router.send_failed(node, msg) {
            self.complete_syscall(p, -errno::ENOTCONN, 0);
        }
    }

    /// Node `node` is up or not: a lost home resets this VM's calls to it; a lost caller's
    /// calls are forgotten here (their events still held back are dropped too).
    pub(super) fn syscall_peer_state(&mut self, node: u32, up: bool) {
        let loss = self.router.set_peer_up(node, up);
        if !loss.reset.is_empty() {
            log::warn!(
                "offload: node {node} lost with {} forwarded syscalls waiting; they fail with ECONNRESET",
                loss.reset.len()
            );
        }
        for p in loss.reset {
            self.complete_syscall(p, -errno::ECONNRESET, 0);
        }
        if !loss.expired.is_empty() {
            log::warn!(
                "offload: node {node} lost; its {} syscalls waiting here are forgotten",
                loss.expired.len()
            );
            self.backlog
                .retain(|ev| syscall_token(ev).is_none_or(|t| !loss.expired.contains(&t)));
        }
    }

    /// The device was reset: waiting requests are gone; callers waiting on this guest get
    /// `-ESRCH` (the outbox sends it with the next batch).
    pub(super) fn syscall_reset(&mut self) {
        for o in self.router.reset() {
            self.send_sys(o);
        }
        self.backlog.retain(|ev| syscall_token(ev).is_none());
    }

    /// An event was pushed out of the full backlog: a call in it is refused with `-EBUSY`.
    pub(super) fn event_dropped(&mut self, ev: &[u8]) {
        let Some(token) = syscall_token(ev) else {
            return;
        };
        self.warn.warn(format_args!(
            "offload: guest not taking events; forwarded syscall refused"
        ));
        if let Ok(o) = self.router.answer(token, -errno::EBUSY, 0) {
            self.send_sys(o);
        }
    }

    /// Calls of this VM waiting for their home (for tests and statistics).
    pub fn pending_syscalls(&self) -> usize {
        self.router.pending_calls()
    }

    /// Calls of other nodes waiting for this guest (for tests and statistics).
    pub fn inbound_syscalls(&self) -> usize {
        self.router.inbound_calls()
    }

    fn deliver_call(&mut self, src: u32, token: u64, record: &CallRecord) {
        if self.backlog.len() >= MAX_BACKLOG {
            self.warn.warn(format_args!(
                "offload: guest not taking events; syscall from node {src} refused"
            ));
            if let Ok(o) = self.router.answer(token, -errno::EBUSY, 0) {
                self.send_sys(o);
            }
            return;
        }
        let ev = protocol::encode_event(protocol::EVENT_SYSCALL_IN, src, token, &record.encode());
        self.push_event(ev);
    }

    fn complete_syscall(&mut self, p: Parked, status: i32, ret: i64) {
        let body = if status == 0 {
            ret.to_le_bytes().to_vec()
        } else {
            vec![]
        };
        if self.respond(&unparked(p.head, p.writable), p.tag, status, &body) {
            self.interrupt();
        }
    }

    fn send_sys(&mut self, o: Outgoing) {
        self.outbox.push(Outbound::Syscall {
            node: o.node,
            msg: o.msg,
        });
    }
}

fn unparked(head: u16, writable: Vec<(vm_memory::GuestAddress, u32)>) -> Chain {
    Chain {
        head,
        readable: vec![],
        writable,
        broken: None,
    }
}

/// The token of a `SYSCALL_IN` event (None for every other event).
fn syscall_token(ev: &[u8]) -> Option<u64> {
    let kind = u32::from_le_bytes(ev.get(0..4)?.try_into().ok()?);
    if kind != protocol::EVENT_SYSCALL_IN {
        return None;
    }
    Some(u64::from_le_bytes(ev.get(8..16)?.try_into().ok()?))
}
