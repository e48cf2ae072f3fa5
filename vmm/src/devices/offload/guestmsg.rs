//! The offload device's side of guest-to-guest messages (docs/offload-device.md: requests
//! `GUEST_MSG` 10 and `GUEST_MSG_RET` 11, event `GUEST_MSG_IN` 5): guest requests and peer
//! messages go into the state machine [`crate::offload::GuestMsgs`], and what it decides
//! becomes completions, events and [`Outbound::GuestMsg`] / [`Outbound::GuestMsgRet`]
//! messages. The sender's 10 s timeout and peer loss come from the transport request that
//! carries the message (`cluster.rs`), as for a `PING`; this side reads the clock only to give
//! the state machine the time of a token's arrival and answer.

use std::time::Instant;

use super::protocol::{self, errno};
use super::{Chain, OffloadDevice, Outbound, Parked, MAX_BACKLOG};
use crate::offload::guestmsg::{Arrival, GuestMsgError, Reply};

impl OffloadDevice {
    /// `GUEST_MSG`: sends `body` of `kind` to `node`'s guest and parks the request until the
    /// reply, or answers at once why it cannot go. Returns whether a used entry was added.
    pub(super) fn start_guest_msg(
        &mut self,
        chain: Chain,
        tag: u64,
        node: u32,
        kind: u32,
        body: &[u8],
    ) -> bool {
        // The reply's size is unknown until it comes: a response header must fit now; a
        // reply larger than the buffers becomes -EMSGSIZE then.
        if super::total_len(&chain.writable) < protocol::RESP_HEADER_LEN {
            return self.respond(&chain, tag, -errno::EMSGSIZE, &[]);
        }
        let parked = Parked {
            head: chain.head,
            tag,
            writable: chain.writable,
        };
        match self.msgs.send(node, kind, body, parked) {
            Ok((id, payload)) => {
                self.outbox.push(Outbound::GuestMsg { node, id, payload });
                false
            }
            Err((p, e)) => {
                log::debug!("offload: guest message to node {node} refused: {e}");
                let (chain, tag) = p.unpark();
                self.respond(&chain, tag, -e.errno(), &[])
            }
        }
    }

    /// `GUEST_MSG_RET`: the guest's reply to the message behind `token`; returns the
    /// request's status (`-ENOENT` for an unknown token, or one that expired: the late reply
    /// is dropped and counted).
    pub(super) fn guest_msg_ret(&mut self, token: u64, status: i32, body: &[u8]) -> i32 {
        match self.msgs.answer(token, status, body, Instant::now()) {
            Ok(reply) => {
                self.send_reply(reply);
                0
            }
            Err(e @ GuestMsgError::Late(_)) => {
                self.warn.warn(format_args!("offload: {e}"));
                -e.errno()
            }
            Err(e) => {
                log::debug!("offload: GUEST_MSG_RET refused: {e}");
                -e.errno()
            }
        }
    }

    /// A message from `src`'s guest: a `GUEST_MSG_IN` event (payload: u32 kind, u32 reserved,
    /// body) with a token for the reply, or a refusal sent back at once (malformed:
    /// `-EINVAL`; event backlog or token table full: `-EBUSY`).
    pub(super) fn guest_msg_in(&mut self, src: u32, request: u64, payload: &[u8]) {
        let room = self.backlog.len() < MAX_BACKLOG;
        match self
            .msgs
            .receive(src, request, payload, room, Instant::now())
        {
            Arrival::Deliver { token, payload } => {
                let ev = protocol::encode_event(protocol::EVENT_GUEST_MSG_IN, src, token, &payload);
                self.push_event(ev);
            }
            Arrival::Refused { reply, why } => {
                self.warn.warn(format_args!(
                    "offload: guest message from node {src} refused: {why}"
                ));
                self.send_reply(reply);
            }
        }
    }

    /// The outcome of this VM's message `id` (reply payload or a positive errno).
    pub(super) fn complete_guest_msg(&mut self, id: u64, outcome: Result<Vec<u8>, i32>) {
        let Some(done) = self.msgs.complete(id, outcome) else {
            log::debug!("offload: outcome of guest message {id}, which no request waits for");
            return;
        };
        if let Some(e) = &done.malformed {
            self.warn
                .warn(format_args!("offload: bad guest message reply: {e}"));
        }
        let (status, body) = match done.result {
            Ok(b) => (0, b),
            Err(e) => (-e, vec![]),
        };
        let (chain, tag) = done.req.unpark();
        if self.respond(&chain, tag, status, &body) {
            self.interrupt();
        }
    }

    /// Node `node` is up or not: this VM's messages to a lost node end with `-ECONNRESET`,
    /// and its messages to this guest are forgotten (with their events still held back).
    pub(super) fn guest_msg_peer_state(&mut self, node: u32, up: bool) {
        let loss = self.msgs.set_peer_up(node, up);
        if !loss.reset.is_empty() {
            log::warn!(
                "offload: node {node} lost with {} guest messages waiting; they fail with ECONNRESET",
                loss.reset.len()
            );
        }
        for p in loss.reset {
            let (chain, tag) = p.unpark();
            if self.respond(&chain, tag, -errno::ECONNRESET, &[]) {
                self.interrupt();
            }
        }
        if !loss.expired.is_empty() {
            self.backlog
                .retain(|ev| guest_msg_token(ev).is_none_or(|t| !loss.expired.contains(&t)));
        }
    }

    /// The device was reset: senders waiting on this guest get `-ECONNRESET` (the outbox
    /// sends it with the next batch); messages held back for the old driver are dropped.
    pub(super) fn guest_msg_reset(&mut self) {
        for reply in self.msgs.reset() {
            self.send_reply(reply);
        }
        self.backlog.retain(|ev| guest_msg_token(ev).is_none());
    }

    /// An event was pushed out of the full backlog: a message in it is refused with `-EBUSY`.
    pub(super) fn guest_msg_event_dropped(&mut self, ev: &[u8]) {
        let Some(token) = guest_msg_token(ev) else {
            return;
        };
        self.warn.warn(format_args!(
            "offload: guest not taking events; guest message refused"
        ));
        if let Ok(reply) = self.msgs.answer(token, -errno::EBUSY, &[], Instant::now()) {
            self.send_reply(reply);
        }
    }

    /// This VM's guest messages waiting for replies (for tests and statistics).
    pub fn pending_guest_msgs(&self) -> usize {
        self.msgs.outstanding()
    }

    fn send_reply(&mut self, r: Reply) {
        self.outbox.push(Outbound::GuestMsgRet {
            node: r.node,
            request: r.request,
            payload: r.payload,
        });
    }
}

impl Parked {
    /// The parked chain, to respond on, and the request's tag.
    fn unpark(self) -> (Chain, u64) {
        let chain = Chain {
            head: self.head,
            readable: vec![],
            writable: self.writable,
            broken: None,
        };
        (chain, self.tag)
    }
}

/// The token of a `GUEST_MSG_IN` event (None for every other event).
fn guest_msg_token(ev: &[u8]) -> Option<u64> {
    let kind = u32::from_le_bytes(ev.get(0..4)?.try_into().ok()?);
    if kind != protocol::EVENT_GUEST_MSG_IN {
        return None;
    }
    Some(u64::from_le_bytes(ev.get(8..16)?.try_into().ok()?))
}
