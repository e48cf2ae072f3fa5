//! The syscall router as a plain state machine (docs/offload-threads.md, section 4).
//!
//! Caller side: a guest `SYSCALL` request becomes a `CALL` to the record's home node under a
//! fresh sequence number; the request (`R`, whatever identifies it to the device) waits in
//! `pending` until the home's `RET` arrives or the home is lost. Home side: a `CALL` from a
//! peer gets a token and becomes a `SYSCALL_IN` event; the guest's `SYSCALL_RET` with that
//! token becomes the `RET`. Nothing here has a clock: a call may wait for ever, and what ends
//! it is the loss of a node ([`Router::set_peer_up`]). Every input is a method call and
//! every output its return value, so tests drive it deterministically.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use thiserror::Error;

use super::wire::{self, CallRecord, SysMsg, WireError};
use crate::devices::offload::protocol::errno;

/// Most calls this VM may have waiting for their home at once.
pub const MAX_OUTSTANDING: usize = 256;
/// Most calls one caller node may have waiting at this home at once.
pub const MAX_INBOUND_PER_NODE: usize = MAX_OUTSTANDING;

/// Why a call was refused or a message not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouterError {
    #[error("node {0} is unknown or this node")]
    Unreachable(u32),
    #[error("node {0} is not connected")]
    NotConnected(u32),
    #[error("{MAX_OUTSTANDING} calls already outstanding")]
    Busy,
    #[error("no call waits for token {0}")]
    UnknownToken(u64),
    #[error("status {0} is neither 0 nor a negative errno")]
    BadStatus(i32),
    #[error("malformed message from node {node}: {err}")]
    Wire { node: u32, err: WireError },
    #[error("node {node} sent a CALL while not connected")]
    CallerDown { node: u32 },
    #[error("node {node} sent CALL {seq} for home {home}")]
    WrongHome { node: u32, seq: u64, home: u32 },
    #[error("node {node} repeated CALL {seq}")]
    DuplicateCall { node: u32, seq: u64 },
    #[error("node {node} sent RET {seq}, which no call waits for")]
    UnknownSeq { node: u32, seq: u64 },
    #[error("node {node} sent RET {seq} for a call to node {callee}")]
    WrongCallee { node: u32, seq: u64, callee: u32 },
}

impl RouterError {
    /// The errno the guest gets for a refused request (positive).
    pub fn errno(&self) -> i32 {
        match self {
            RouterError::Unreachable(_) => errno::EHOSTUNREACH,
            RouterError::NotConnected(_) => errno::ENOTCONN,
            RouterError::Busy => errno::EBUSY,
            RouterError::UnknownToken(_) => errno::ENOENT,
            _ => errno::EINVAL,
        }
    }
}

/// A message for the cluster: send `msg` to `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    pub node: u32,
    pub msg: SysMsg,
}

/// What a message from a peer means for this node.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival<R> {
    /// A call for this node's guest: deliver a `SYSCALL_IN` event with `token` (or refuse it
    /// with [`Router::answer`] and `-EBUSY`).
    Call {
        src: u32,
        token: u64,
        record: CallRecord,
    },
    /// The answer to one of this VM's calls: complete `req` with `status` (and `ret`).
    Return { req: R, status: i32, ret: i64 },
    /// The call was refused at once; send the answer back.
    Refused(Outgoing),
}

/// What the loss of a node ends.
#[derive(Debug, PartialEq, Eq)]
pub struct Loss<R> {
    /// This VM's calls to the lost node: complete each with `-ECONNRESET`.
    pub reset: Vec<R>,
    /// Tokens of the lost node's calls at this home; they are no longer valid.
    pub expired: Vec<u64>,
}

/// Counters of the router's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Calls forwarded to a home (`CALL`s sent).
    pub calls_out: u64,
    /// Calls served for other nodes (well-formed `CALL`s received from peers, including
    /// those refused with `-EBUSY`).
    pub calls_in: u64,
    /// Payload bytes of router messages sent.
    pub bytes_out: u64,
    /// Payload bytes of router messages received.
    pub bytes_in: u64,
    /// Messages from peers that were malformed or made no sense.
    pub bad: u64,
}

impl std::fmt::Display for RouterStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "syscalls_out={} syscalls_in={} syscall_bytes_out={} syscall_bytes_in={} syscall_bad={}",
            self.calls_out, self.calls_in, self.bytes_out, self.bytes_in, self.bad
        )
    }
}

/// One node's router; `R` identifies a guest request waiting for its answer.
#[derive(Debug)]
pub struct Router<R> {
    me: u32,
    up: Vec<bool>,
    next_seq: u64,
    /// seq → (home node, waiting request).
    pending: HashMap<u64, (u32, R)>,
    next_token: u64,
    /// token → (caller node, its seq).
    inbound: HashMap<u64, (u32, u64)>,
    /// (caller node, seq) → token, to spot repeated calls.
    by_call: HashMap<(u32, u64), u64>,
    inbound_per_node: Vec<usize>,
    stats: RouterStats,
}

impl<R> Router<R> {
    /// The router of node `me` in a cluster of `nodes` nodes, every peer down.
    pub fn new(me: u32, nodes: usize) -> Self {
        Self {
            me,
            up: vec![false; nodes],
            next_seq: 1,
            pending: HashMap::new(),
            next_token: 1,
            inbound: HashMap::new(),
            by_call: HashMap::new(),
            inbound_per_node: vec![0; nodes],
            stats: RouterStats::default(),
        }
    }

    /// Forwards a call to `record.home`. On refusal the request comes back with the reason.
    pub fn call(&mut self, record: CallRecord, req: R) -> Result<Outgoing, (R, RouterError)> {
        let node = record.home;
        if node == self.me || node as usize >= self.up.len() {
            return Err((req, RouterError::Unreachable(node)));
        }
        if !self.up[node as usize] {
            return Err((req, RouterError::NotConnected(node)));
        }
        if self.pending.len() >= MAX_OUTSTANDING {
            return Err((req, RouterError::Busy));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(seq, (node, req));
        self.stats.calls_out += 1;
        Ok(self.outgoing(node, SysMsg::Call { seq, record }))
    }

    /// A message could not be handed to the transport: a `CALL` fails with `-ENOTCONN` (the
    /// returned request); a lost `RET` is the caller's loss to notice.
    pub fn send_failed(&mut self, node: u32, msg: &SysMsg) -> Option<R> {
        let SysMsg::Call { seq, .. } = *msg else {
            return None;
        };
        match self.pending.get(&seq) {
            Some((n, _)) if *n == node => self.pending.remove(&seq).map(|(_, r)| r),
            _ => None,
        }
    }

    /// The guest answered the call `token`: the `RET` to send to its caller.
    pub fn answer(&mut self, token: u64, status: i32, ret: i64) -> Result<Outgoing, RouterError> {
        if !wire::valid_status(status) {
            return Err(RouterError::BadStatus(status));
        }
        let (node, seq) = self
            .inbound
            .remove(&token)
            .ok_or(RouterError::UnknownToken(token))?;
        self.by_call.remove(&(node, seq));
        if let Some(n) = self.inbound_per_node.get_mut(node as usize) {
            *n = n.saturating_sub(1);
        }
        Ok(self.outgoing(node, SysMsg::Ret { seq, status, ret }))
    }

    /// A router message `payload` from node `from`. Errors are the peer's faults: counted
    /// here, for the caller to log.
    pub fn receive(&mut self, from: u32, payload: &[u8]) -> Result<Arrival<R>, RouterError> {
        self.stats.bytes_in += payload.len() as u64;
        let result = match wire::decode(payload) {
            Ok(SysMsg::Call { seq, record }) => self.incoming_call(from, seq, record),
            Ok(SysMsg::Ret { seq, status, ret }) => self.incoming_ret(from, seq, status, ret),
            Err(err) => Err(RouterError::Wire { node: from, err }),
        };
        if result.is_err() {
            self.stats.bad += 1;
        }
        result
    }

    fn incoming_call(
        &mut self,
        from: u32,
        seq: u64,
        record: CallRecord,
    ) -> Result<Arrival<R>, RouterError> {
        if !self.up.get(from as usize).copied().unwrap_or(false) || from == self.me {
            return Err(RouterError::CallerDown { node: from });
        }
        if record.home != self.me {
            let home = record.home;
            return Err(RouterError::WrongHome {
                node: from,
                seq,
                home,
            });
        }
        if self.by_call.contains_key(&(from, seq)) {
            return Err(RouterError::DuplicateCall { node: from, seq });
        }
        self.stats.calls_in += 1;
        if self.inbound_per_node[from as usize] >= MAX_INBOUND_PER_NODE {
            let msg = SysMsg::Ret {
                seq,
                status: -errno::EBUSY,
                ret: 0,
            };
            return Ok(Arrival::Refused(self.outgoing(from, msg)));
        }
        let token = self.next_token;
        self.next_token += 1;
        self.inbound.insert(token, (from, seq));
        self.by_call.insert((from, seq), token);
        self.inbound_per_node[from as usize] += 1;
        Ok(Arrival::Call {
            src: from,
            token,
            record,
        })
    }

    fn incoming_ret(
        &mut self,
        from: u32,
        seq: u64,
        status: i32,
        ret: i64,
    ) -> Result<Arrival<R>, RouterError> {
        match self.pending.entry(seq) {
            Entry::Vacant(_) => Err(RouterError::UnknownSeq { node: from, seq }),
            Entry::Occupied(e) if e.get().0 != from => Err(RouterError::WrongCallee {
                node: from,
                seq,
                callee: e.get().0,
            }),
            Entry::Occupied(e) => {
                let (_, req) = e.remove();
                Ok(Arrival::Return { req, status, ret })
            }
        }
    }

    /// Node `node`'s link is up or not. Going down ends every call that involves it.
    pub fn set_peer_up(&mut self, node: u32, up: bool) -> Loss<R> {
        let mut loss = Loss {
            reset: vec![],
            expired: vec![],
        };
        let Some(slot) = self.up.get_mut(node as usize) else {
            return loss;
        };
        *slot = up && node != self.me;
        if up {
            return loss;
        }
        let mut seqs: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (n, _))| *n == node)
            .map(|(s, _)| *s)
            .collect();
        seqs.sort_unstable();
        loss.reset = seqs
            .into_iter()
            .filter_map(|s| self.pending.remove(&s).map(|(_, r)| r))
            .collect();
        loss.expired = self.forget_inbound(|n| n == node);
        loss
    }

    /// The guest's device was reset: its waiting requests are gone (their answers will be
    /// ignored) and its callers are told that no executor will run their calls (`-ESRCH`).
    pub fn reset(&mut self) -> Vec<Outgoing> {
        self.pending.clear();
        let mut calls: Vec<(u64, (u32, u64))> = self.inbound.drain().collect();
        calls.sort_unstable();
        self.by_call.clear();
        self.inbound_per_node.fill(0);
        calls
            .into_iter()
            .map(|(_, (node, seq))| {
                let msg = SysMsg::Ret {
                    seq,
                    status: -errno::ESRCH,
                    ret: 0,
                };
                self.outgoing(node, msg)
            })
            .collect()
    }

    /// Drops the inbound calls of the nodes `which` selects; returns their tokens, in order.
    fn forget_inbound(&mut self, which: impl Fn(u32) -> bool) -> Vec<u64> {
        let mut tokens: Vec<u64> = self
            .inbound
            .iter()
            .filter(|(_, (n, _))| which(*n))
            .map(|(t, _)| *t)
            .collect();
        tokens.sort_unstable();
        for t in &tokens {
            self.inbound.remove(t);
        }
        self.by_call.retain(|(n, _), _| !which(*n));
        for (n, count) in self.inbound_per_node.iter_mut().enumerate() {
            if which(n as u32) {
                *count = 0;
            }
        }
        tokens
    }

    fn outgoing(&mut self, node: u32, msg: SysMsg) -> Outgoing {
        self.stats.bytes_out += msg.encoded_len() as u64;
        Outgoing { node, msg }
    }

    /// Calls of this VM waiting for their home.
    pub fn pending_calls(&self) -> usize {
        self.pending.len()
    }

    /// Calls of other nodes waiting for this guest's answer.
    pub fn inbound_calls(&self) -> usize {
        self.inbound.len()
    }

    /// Whether `token` names a call waiting for this guest's answer.
    pub fn has_token(&self, token: u64) -> bool {
        self.inbound.contains_key(&token)
    }

    /// What the router has done so far.
    pub fn stats(&self) -> RouterStats {
        self.stats
    }
}

#[cfg(test)]
mod tests;
