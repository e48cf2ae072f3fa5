//! Guest-to-guest messages between monitors (docs/offload-device.md, requests `GUEST_MSG`
//! 10 and `GUEST_MSG_RET` 11, event `GUEST_MSG_IN` 5) as a plain state machine, with their
//! wire format.
//!
//! A message travels as a transport request carrying `Message::App` of kind
//! [`APP_KIND_GUEST_MSG`]; the target monitor answers it with a transport response of the same
//! kind. The transport's request table gives the sender's side its 10 s deadline
//! ([`GUEST_MSG_TIMEOUT`], the same mechanism as a `PING`'s `ETIMEDOUT`), exactly one
//! completion, and `PeerLost` when the target goes away. Payloads, little endian:
//!
//! | message | bytes |
//! |---|---|
//! | request | u32 kind, u32 reserved (0), body (≤ 4088 bytes); exactly the `GUEST_MSG_IN` event payload |
//! | reply | i32 status (0 or a negative errno ≥ -4095), u32 reserved (0), body (≤ 4080 bytes, empty unless status is 0) |
//!
//! Sender side: [`GuestMsgs::send`] gives a guest `GUEST_MSG` (`R`, whatever identifies the
//! request to the device) an id; [`GuestMsgs::complete`] ends it with the transport's outcome.
//! Target side: [`GuestMsgs::receive`] hands out a token for a `GUEST_MSG_IN` event, valid for
//! [`GUEST_MSG_TIMEOUT`]; [`GuestMsgs::answer`] turns the guest's `GUEST_MSG_RET` into the
//! reply, or drops it (counted as late) once the token expired, since the sender has given up.
//! Time is passed in; nothing here reads a clock, so tests drive it deterministically.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::wire::valid_status;
use crate::devices::offload::protocol::{errno, MAX_GUEST_MSG, MAX_GUEST_REPLY};

/// Transport `App` kind of guest messages and their replies.
pub const APP_KIND_GUEST_MSG: u16 = 0x0300;
/// How long a guest message may wait for its reply (sender) or a token stays valid (target).
pub const GUEST_MSG_TIMEOUT: Duration = Duration::from_secs(10);
/// Most guest messages this VM may have waiting for replies at once.
pub const MAX_OUTSTANDING_MSGS: usize = 64;
/// Most messages from peers that may wait for this guest's replies at once.
pub const MAX_INBOUND_MSGS: usize = 64;
/// Length of the request and reply headers.
pub const MSG_HEADER_LEN: usize = 8;
/// Set in every token handed out here, so that no ping token is ever a message token.
const TOKEN_BIT: u64 = 1 << 63;

/// Why a message was refused or a payload not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GuestMsgError {
    #[error("node {0} is unknown or this node")]
    Unreachable(u32),
    #[error("node {0} is not connected")]
    NotConnected(u32),
    #[error("{MAX_OUTSTANDING_MSGS} guest messages already outstanding")]
    Busy,
    #[error("{MAX_INBOUND_MSGS} messages from peers already wait for this guest")]
    InboundFull,
    #[error("the guest is not taking events")]
    NoRoom,
    #[error("body of {0} bytes is too large")]
    TooLarge(usize),
    #[error("no message waits for token {0}")]
    UnknownToken(u64),
    #[error("reply for token {0} after its sender's timeout; dropped")]
    Late(u64),
    #[error("malformed payload: {0}")]
    Malformed(&'static str),
}

impl GuestMsgError {
    /// The errno the guest (or the sender) gets for it (positive).
    pub fn errno(&self) -> i32 {
        match self {
            GuestMsgError::Unreachable(_) => errno::EHOSTUNREACH,
            GuestMsgError::NotConnected(_) => errno::ENOTCONN,
            GuestMsgError::Busy | GuestMsgError::InboundFull | GuestMsgError::NoRoom => {
                errno::EBUSY
            }
            GuestMsgError::TooLarge(_) => errno::EMSGSIZE,
            GuestMsgError::UnknownToken(_) | GuestMsgError::Late(_) => errno::ENOENT,
            GuestMsgError::Malformed(_) => errno::EINVAL,
        }
    }
}

/// A reply for the cluster: respond to transport request `request` of `node` with `payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub node: u32,
    pub request: u64,
    pub payload: Vec<u8>,
}

/// What a message from a peer means for this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// Deliver a `GUEST_MSG_IN` event with `token` and `payload` (u32 kind, u32 reserved, body).
    Deliver { token: u64, payload: Vec<u8> },
    /// Refused at once: send `reply` (a negative status) and log `why`.
    Refused { reply: Reply, why: GuestMsgError },
}

/// A sender-side message that ended: complete `req` with `result` (the reply body or a
/// positive errno); `malformed` says why a reply was not understood (logged, counted).
#[derive(Debug, PartialEq, Eq)]
pub struct Done<R> {
    pub req: R,
    pub result: Result<Vec<u8>, i32>,
    pub malformed: Option<GuestMsgError>,
}

/// What the loss of a node ends.
#[derive(Debug, PartialEq, Eq)]
pub struct MsgLoss<R> {
    /// This VM's messages to the lost node: complete each with `-ECONNRESET`.
    pub reset: Vec<R>,
    /// Tokens of the lost node's messages to this guest; they are no longer valid.
    pub expired: Vec<u64>,
}

/// Counters of guest messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestMsgStats {
    /// Messages sent to peers.
    pub sent: u64,
    /// Well-formed messages received from peers (including those refused at once).
    pub received: u64,
    /// Replies of this guest dropped because their sender had timed out.
    pub late: u64,
    /// Malformed messages and replies from peers.
    pub bad: u64,
}

impl std::fmt::Display for GuestMsgStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "guest_msgs_out={} guest_msgs_in={} guest_msg_late={} guest_msg_bad={}",
            self.sent, self.received, self.late, self.bad
        )
    }
}

/// A peer's message waiting for this guest's reply.
#[derive(Debug)]
struct Inbound {
    src: u32,
    request: u64,
    deadline: Instant,
}

/// The guest-message protocol of one node.
#[derive(Debug)]
pub struct GuestMsgs<R> {
    me: u32,
    up: Vec<bool>,
    /// Id → (target node, request) for this VM's messages waiting for replies.
    waiting: HashMap<u64, (u32, R)>,
    next_id: u64,
    /// Token → peer message waiting for this guest's reply.
    inbound: HashMap<u64, Inbound>,
    next_token: u64,
    stats: GuestMsgStats,
}

impl<R> GuestMsgs<R> {
    /// Node `me` of a cluster of `nodes`, every peer down.
    pub fn new(me: u32, nodes: usize) -> Self {
        Self {
            me,
            up: vec![false; nodes],
            waiting: HashMap::new(),
            next_id: 1,
            inbound: HashMap::new(),
            next_token: 1,
            stats: GuestMsgStats::default(),
        }
    }

    /// A guest's `GUEST_MSG`: the id and payload of the transport request to send to `node`
    /// (the outcome comes back through [`GuestMsgs::complete`] with that id), or the refusal.
    pub fn send(
        &mut self,
        node: u32,
        kind: u32,
        body: &[u8],
        req: R,
    ) -> Result<(u64, Vec<u8>), (R, GuestMsgError)> {
        let refusal = if node == self.me || node as usize >= self.up.len() {
            Some(GuestMsgError::Unreachable(node))
        } else if !self.up[node as usize] {
            Some(GuestMsgError::NotConnected(node))
        } else if self.waiting.len() >= MAX_OUTSTANDING_MSGS {
            Some(GuestMsgError::Busy)
        } else if body.len() > MAX_GUEST_MSG {
            Some(GuestMsgError::TooLarge(body.len()))
        } else {
            None
        };
        if let Some(e) = refusal {
            return Err((req, e));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.insert(id, (node, req));
        self.stats.sent += 1;
        Ok((id, encode(kind, body)))
    }

    /// The transport's outcome for message `id`: the reply payload, or a positive errno
    /// (`ETIMEDOUT`, `ECONNRESET`, …). `None` if nothing waits for `id` any more (the device
    /// was reset, or the peer's loss already ended it).
    pub fn complete(&mut self, id: u64, outcome: Result<Vec<u8>, i32>) -> Option<Done<R>> {
        let (_, req) = self.waiting.remove(&id)?;
        let (result, malformed) = match outcome.map(|p| decode_reply(&p)) {
            Ok(Ok(r)) => (r, None),
            Ok(Err(e)) => {
                self.stats.bad += 1;
                (Err(errno::EINVAL), Some(e))
            }
            Err(e) => (Err(e.abs()), None),
        };
        Some(Done {
            req,
            result,
            malformed,
        })
    }

    /// A message (transport request `request`) from `src`; `room`: the guest's event backlog
    /// can take one more event.
    pub fn receive(
        &mut self,
        src: u32,
        request: u64,
        payload: &[u8],
        room: bool,
        now: Instant,
    ) -> Arrival {
        if let Err(why) = check_request(payload) {
            self.stats.bad += 1;
            return self.refuse(src, request, why);
        }
        self.stats.received += 1;
        if !room {
            return self.refuse(src, request, GuestMsgError::NoRoom);
        }
        if self.inbound.len() >= MAX_INBOUND_MSGS {
            self.inbound.retain(|_, m| m.deadline > now);
            if self.inbound.len() >= MAX_INBOUND_MSGS {
                return self.refuse(src, request, GuestMsgError::InboundFull);
            }
        }
        let token = TOKEN_BIT | self.next_token;
        self.next_token += 1;
        let deadline = now + GUEST_MSG_TIMEOUT;
        self.inbound.insert(
            token,
            Inbound {
                src,
                request,
                deadline,
            },
        );
        Arrival::Deliver {
            token,
            payload: payload.to_vec(),
        }
    }

    /// The guest's `GUEST_MSG_RET` for `token`: the reply to send (a body goes only with
    /// status 0). A token is answered once; after its deadline the reply is dropped and
    /// counted ([`GuestMsgError::Late`]).
    pub fn answer(
        &mut self,
        token: u64,
        status: i32,
        body: &[u8],
        now: Instant,
    ) -> Result<Reply, GuestMsgError> {
        if !valid_status(status) {
            return Err(GuestMsgError::Malformed("status not in [-4095, 0]"));
        }
        if body.len() > MAX_GUEST_REPLY {
            return Err(GuestMsgError::TooLarge(body.len()));
        }
        let m = self
            .inbound
            .remove(&token)
            .ok_or(GuestMsgError::UnknownToken(token))?;
        if now >= m.deadline {
            self.stats.late += 1;
            return Err(GuestMsgError::Late(token));
        }
        let body = if status == 0 { body } else { &[] };
        Ok(Reply {
            node: m.src,
            request: m.request,
            payload: encode(status as u32, body),
        })
    }

    /// Node `node` is up or not. Losing it ends this VM's messages to it and forgets its
    /// messages to this guest.
    pub fn set_peer_up(&mut self, node: u32, up: bool) -> MsgLoss<R> {
        let mut loss = MsgLoss {
            reset: vec![],
            expired: vec![],
        };
        let Some(slot) = self.up.get_mut(node as usize) else {
            return loss;
        };
        *slot = up;
        if up {
            return loss;
        }
        let mut ids: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, (n, _))| *n == node)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        loss.reset = ids
            .iter()
            .filter_map(|id| self.waiting.remove(id).map(|(_, r)| r))
            .collect();
        loss.expired = self
            .inbound
            .iter()
            .filter(|(_, m)| m.src == node)
            .map(|(t, _)| *t)
            .collect();
        loss.expired.sort_unstable();
        for t in &loss.expired {
            self.inbound.remove(t);
        }
        loss
    }

    /// The device was reset: this VM's waiting messages are forgotten (their outcomes are
    /// dropped when they come), and every sender waiting on this guest gets `-ECONNRESET`.
    pub fn reset(&mut self) -> Vec<Reply> {
        self.waiting.clear();
        let mut replies: Vec<(u64, Reply)> = self
            .inbound
            .drain()
            .map(|(t, m)| {
                let status = -errno::ECONNRESET;
                let payload = encode(status as u32, &[]);
                let (node, request) = (m.src, m.request);
                (
                    t,
                    Reply {
                        node,
                        request,
                        payload,
                    },
                )
            })
            .collect();
        replies.sort_unstable_by_key(|(t, _)| *t);
        replies.into_iter().map(|(_, r)| r).collect()
    }

    /// This VM's messages waiting for replies.
    pub fn outstanding(&self) -> usize {
        self.waiting.len()
    }

    /// Peer messages waiting for this guest's replies.
    pub fn inbound(&self) -> usize {
        self.inbound.len()
    }

    /// What was done so far.
    pub fn stats(&self) -> GuestMsgStats {
        self.stats
    }

    fn refuse(&mut self, src: u32, request: u64, why: GuestMsgError) -> Arrival {
        let status = -why.errno();
        Arrival::Refused {
            reply: Reply {
                node: src,
                request,
                payload: encode(status as u32, &[]),
            },
            why,
        }
    }
}

/// A request (`first` = kind) or reply (`first` = status as u32) payload.
fn encode(first: u32, body: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(MSG_HEADER_LEN + body.len());
    p.extend_from_slice(&first.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(body);
    p
}

fn u32_at(p: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&p[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Checks a request payload: header, reserved 0, body not too long.
fn check_request(p: &[u8]) -> Result<(), GuestMsgError> {
    if p.len() < MSG_HEADER_LEN {
        return Err(GuestMsgError::Malformed("shorter than its header"));
    }
    if u32_at(p, 4) != 0 {
        return Err(GuestMsgError::Malformed("reserved field not 0"));
    }
    if p.len() - MSG_HEADER_LEN > MAX_GUEST_MSG {
        return Err(GuestMsgError::Malformed("body longer than 4088 bytes"));
    }
    Ok(())
}

/// Decodes a reply payload into the guest's outcome: the body, or the peer's errno.
fn decode_reply(p: &[u8]) -> Result<Result<Vec<u8>, i32>, GuestMsgError> {
    if p.len() < MSG_HEADER_LEN {
        return Err(GuestMsgError::Malformed("reply shorter than its header"));
    }
    let status = u32_at(p, 0) as i32;
    let body = &p[MSG_HEADER_LEN..];
    if u32_at(p, 4) != 0 {
        Err(GuestMsgError::Malformed("reply's reserved field not 0"))
    } else if !valid_status(status) {
        Err(GuestMsgError::Malformed("reply status not in [-4095, 0]"))
    } else if status != 0 && !body.is_empty() {
        Err(GuestMsgError::Malformed("error reply with a body"))
    } else if body.len() > MAX_GUEST_REPLY {
        Err(GuestMsgError::Malformed(
            "reply body longer than 4080 bytes",
        ))
    } else if status == 0 {
        Ok(Ok(body.to_vec()))
    } else {
        Ok(Err(-status))
    }
}

#[cfg(test)]
mod tests;
