//! What the protocol core tells the outside: [`Event`]s for the application, [`Action`]s for
//! the I/O driver, and [`RequestError`], the ways a request can end without a response.

use std::collections::VecDeque;
use std::net::SocketAddr;

use thiserror::Error;

use crate::cluster::NodeId;
use crate::message::Message;

/// How a request ended without a response. Each request completes exactly once: with its
/// response or with one of these.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// The connection to the peer was lost (closed, silent past the timeout, or replaced)
    /// while the request was waiting.
    #[error("peer lost")]
    PeerLost,
    /// No response arrived within the request's timeout.
    #[error("request timed out")]
    Timeout,
    /// The peer was not connected when the request was made.
    #[error("peer not connected")]
    NotConnected,
    /// The peer answered with an `Error` message.
    #[error("peer answered with error {code}: {message}")]
    Remote { code: u32, message: String },
    /// The request could not be sent (too large, duplicate id, unknown node).
    #[error("request not sent: {0}")]
    Invalid(String),
    /// The transport was shut down.
    #[error("transport shut down")]
    Shutdown,
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The link to `node` is authenticated and usable.
    PeerUp { node: NodeId },
    /// The link to `node` was lost; its waiting requests completed with
    /// [`RequestError::PeerLost`] just before this event.
    PeerDown { node: NodeId, reason: String },
    /// A connection attempt (dialed or accepted) failed before the link came up: wrong
    /// secret, refused Hello, garbage, timeout. `node` is `None` if the peer was not identified.
    ConnectFailed {
        node: Option<NodeId>,
        reason: String,
    },
    /// A one-way message.
    Message { node: NodeId, message: Message },
    /// A request the application must answer with `respond(node, id, ..)` (the transport
    /// never answers on its own, not even a Ping).
    Request {
        node: NodeId,
        id: u64,
        message: Message,
    },
    /// The completion of one of our requests.
    Response {
        node: NodeId,
        id: u64,
        result: Result<Message, RequestError>,
    },
}

/// Identifies one TCP connection between the core and the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// What the core asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to `addr` and report it as `conn`.
    Dial {
        conn: ConnId,
        peer: NodeId,
        addr: SocketAddr,
    },
    /// Write these bytes on `conn`, in order.
    Send { conn: ConnId, bytes: Vec<u8> },
    /// Write what is still queued for `conn` if possible, then close it.
    Close { conn: ConnId },
    /// Hand this event to the application.
    Emit(Event),
}

/// The core's output queue and connection-id allocator.
#[derive(Debug, Default)]
pub(crate) struct Out {
    actions: VecDeque<Action>,
    next_conn: u64,
}

impl Out {
    pub(crate) fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    pub(crate) fn emit(&mut self, event: Event) {
        self.actions.push_back(Action::Emit(event));
    }

    pub(crate) fn new_conn(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    pub(crate) fn pop(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
}

/// Formats an error with its chain of causes, `outer: inner: ...`, for logs and events.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
