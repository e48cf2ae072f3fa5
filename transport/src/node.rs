//! The whole-node protocol core ([`Node`]): one [`Link`] per peer plus the accepted
//! connections whose Hello has not yet named their peer, and the Hello admission rules.
//!
//! Pure and deterministic like [`Link`]: the driver (or a test) feeds it socket events and the
//! current time, and executes the [`Action`]s it returns through [`Node::poll_action`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::cluster::{Cluster, NodeId, Secret};
use crate::config::{Config, ConfigError};
use crate::event::{error_chain, Action, ConnId, Event, Out, RequestError};
use crate::link::{Link, LinkState};
use crate::message::{Envelope, Hello, Kind, Message};
use crate::session::{Inbound, Role, Session};
use crate::PROTOCOL_VERSION;

/// Most accepted connections that may be in their handshake at once; more are refused.
pub const MAX_ACCEPTED: usize = 64;

/// Why a node core could not be built.
#[derive(Debug, Error)]
pub enum NodeError {
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    #[error("node {0} is not in the cluster")]
    UnknownSelf(NodeId),
}

/// What every link of a node shares: who we are and the knobs.
#[derive(Debug)]
pub(crate) struct Local {
    pub(crate) cluster: Cluster,
    pub(crate) me: NodeId,
    pub(crate) secret: Secret,
    pub(crate) config: Config,
}

impl Local {
    pub(crate) fn hello(&self) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: Some(self.secret.cluster_id()),
            node_name: self.cluster.name(self.me).to_owned(),
            node_index: self.me.0,
        }
    }

    /// Admission rules for a peer's Hello. `expected` is the node we dialed, `None` for an
    /// accepted connection (then only lower-indexed nodes may connect: they are the dialers).
    pub(crate) fn check_hello(
        &self,
        h: &Hello,
        expected: Option<NodeId>,
    ) -> Result<NodeId, String> {
        if h.protocol_version != PROTOCOL_VERSION {
            return Err(format!(
                "protocol version {} (we speak {PROTOCOL_VERSION})",
                h.protocol_version
            ));
        }
        if h.cluster_id
            .is_some_and(|id| id != self.secret.cluster_id())
        {
            return Err("cluster id differs".to_owned());
        }
        if h.node_name == self.cluster.name(self.me) {
            return Err(format!("node {} connected to itself", h.node_name));
        }
        let Some(id) = self.cluster.id(&h.node_name) else {
            return Err(format!("unknown node name {:?}", h.node_name));
        };
        if id.0 != h.node_index {
            return Err(format!(
                "node {} claims index {}, the cluster says {}",
                h.node_name, h.node_index, id.0
            ));
        }
        match expected {
            Some(want) if want != id => Err(format!(
                "expected node {}, reached node {}",
                self.cluster.name(want),
                h.node_name
            )),
            None if id > self.me => Err(format!(
                "node {} must wait to be dialed (the lower index dials)",
                h.node_name
            )),
            _ => Ok(id),
        }
    }
}

struct Accepted {
    session: Session,
    since: Instant,
    addr: SocketAddr,
}

/// The protocol core of one node (see the module docs).
pub struct Node {
    local: Arc<Local>,
    links: Vec<Option<Link>>,
    accepted: HashMap<ConnId, Accepted>,
    out: Out,
}

impl Node {
    /// A core for node `me` of `cluster`. Links to lower-indexed peers wait to be dialed;
    /// links to higher-indexed peers dial at the first [`tick`](Self::tick).
    pub fn new(
        cluster: Cluster,
        me: NodeId,
        secret: Secret,
        config: Config,
        now: Instant,
    ) -> Result<Node, NodeError> {
        config.validate()?;
        if me.index() >= cluster.len() {
            return Err(NodeError::UnknownSelf(me));
        }
        let local = Arc::new(Local {
            cluster,
            me,
            secret,
            config,
        });
        let links = local
            .cluster
            .ids()
            .map(|id| (id != me).then(|| Link::new(id, local.clone(), now)))
            .collect();
        Ok(Node {
            local,
            links,
            accepted: HashMap::new(),
            out: Out::default(),
        })
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.local.me
    }

    /// The cluster this node belongs to.
    pub fn cluster(&self) -> &Cluster {
        &self.local.cluster
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.local.config
    }

    /// The link to `peer` (`None` for ourselves or an unknown id).
    pub fn link(&self, peer: NodeId) -> Option<&Link> {
        self.links.get(peer.index()).and_then(Option::as_ref)
    }

    /// The state of the link to `peer`.
    pub fn link_state(&self, peer: NodeId) -> Option<&LinkState> {
        self.link(peer).map(Link::state)
    }

    /// The next action for the driver, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop()
    }

    /// The earliest time [`tick`](Self::tick) has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let hs = self.local.config.handshake_timeout;
        let links = self.links.iter().flatten().filter_map(Link::next_deadline);
        let accepted = self.accepted.values().map(|a| a.since + hs);
        links.chain(accepted).min()
    }

    /// Runs all timers.
    pub fn tick(&mut self, now: Instant) {
        for link in self.links.iter_mut().flatten() {
            link.tick(now, &mut self.out);
        }
        let hs = self.local.config.handshake_timeout;
        let expired: Vec<ConnId> = self
            .accepted
            .iter()
            .filter(|(_, a)| now >= a.since + hs)
            .map(|(c, _)| *c)
            .collect();
        for conn in expired {
            self.drop_accepted(conn, &format!("no Hello within {hs:?}"));
        }
    }

    /// A connection from `addr` was accepted. Returns its id, or `None` if it must be closed
    /// at once (too many connections in their handshake).
    pub fn on_accepted(&mut self, addr: SocketAddr, now: Instant) -> Option<ConnId> {
        if self.accepted.len() >= MAX_ACCEPTED {
            log::warn!("refusing connection from {addr}: {MAX_ACCEPTED} handshakes in flight");
            return None;
        }
        let hello = self.local.hello();
        let max = self.local.config.max_payload;
        match Session::new(Role::Responder, &self.local.secret, hello, max) {
            Ok(session) => {
                let conn = self.out.new_conn();
                log::debug!("accepted connection {} from {addr}", conn.0);
                let a = Accepted {
                    session,
                    since: now,
                    addr,
                };
                self.accepted.insert(conn, a);
                Some(conn)
            }
            Err(e) => {
                log::error!("cannot start a session: {}", error_chain(&e));
                None
            }
        }
    }

    /// The TCP connect of a dialed `conn` completed.
    pub fn on_connected(&mut self, conn: ConnId, now: Instant) {
        let out = &mut self.out;
        if let Some(link) = find_link(&mut self.links, conn) {
            link.on_connected(conn, now, out);
        }
    }

    /// Bytes were read from `conn`.
    pub fn on_bytes(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        if let Some(a) = self.accepted.get_mut(&conn) {
            a.session.receive(data);
            return self.drive_accepted(conn, now);
        }
        let out = &mut self.out;
        match find_link(&mut self.links, conn) {
            Some(link) => link.on_bytes(conn, data, now, out),
            None => out.push(Action::Close { conn }),
        }
    }

    /// `conn` was closed by the peer or failed (`reason` says how).
    pub fn on_closed(&mut self, conn: ConnId, reason: &str, now: Instant) {
        if self.accepted.contains_key(&conn) {
            return self.drop_accepted(conn, reason);
        }
        let out = &mut self.out;
        if let Some(link) = find_link(&mut self.links, conn) {
            link.on_closed(conn, reason, now, out);
        }
    }

    /// Runs an accepted connection's session until it needs more bytes or names its peer.
    fn drive_accepted(&mut self, conn: ConnId, now: Instant) {
        let Some(a) = self.accepted.get_mut(&conn) else {
            return;
        };
        // The session yields nothing but its peer's Hello before the Hello.
        let item = a.session.next_inbound();
        let bytes = a.session.take_output();
        if !bytes.is_empty() {
            self.out.push(Action::Send { conn, bytes });
        }
        match item {
            Ok(None) => {}
            Ok(Some(Inbound::Hello(h))) => self.admit(conn, &h, now),
            Ok(Some(Inbound::Envelope(_))) => self.drop_accepted(conn, "frame before Hello"),
            Err(e) => self.drop_accepted(conn, &error_chain(&e)),
        }
    }

    fn admit(&mut self, conn: ConnId, hello: &Hello, now: Instant) {
        let Some(mut a) = self.accepted.remove(&conn) else {
            return;
        };
        match self.local.check_hello(hello, None) {
            Ok(peer) => {
                log::debug!(
                    "connection {} from {} is node {}",
                    conn.0,
                    a.addr,
                    hello.node_name
                );
                let out = &mut self.out;
                if let Some(link) = self.links.get_mut(peer.index()).and_then(Option::as_mut) {
                    link.adopt(conn, a.session, now, out);
                }
            }
            Err(reason) => {
                a.session.refuse(&reason);
                let bytes = a.session.take_output();
                if !bytes.is_empty() {
                    self.out.push(Action::Send { conn, bytes });
                }
                self.accepted.insert(conn, a);
                let node = self.local.cluster.id(&hello.node_name);
                self.drop_accepted_as(conn, node, &format!("refused: {reason}"));
            }
        }
    }

    fn drop_accepted(&mut self, conn: ConnId, reason: &str) {
        self.drop_accepted_as(conn, None, reason);
    }

    fn drop_accepted_as(&mut self, conn: ConnId, node: Option<NodeId>, reason: &str) {
        let Some(a) = self.accepted.remove(&conn) else {
            return;
        };
        let reason = match (a.session.in_handshake(), a.session.finish()) {
            (true, _) => format!("{reason} (in Noise handshake)"),
            (false, Err(e)) => format!("{reason}: {e}"),
            (false, Ok(())) => reason.to_owned(),
        };
        log::warn!("dropping connection from {}: {reason}", a.addr);
        self.out.push(Action::Close { conn });
        let reason = format!("connection from {}: {reason}", a.addr);
        self.out.emit(Event::ConnectFailed { node, reason });
    }

    /// Sends a one-way message (or any envelope) to `peer`. Fails at once if the link is
    /// not up or the message is too large; delivery is not confirmed (use a request).
    pub fn send(&mut self, peer: NodeId, env: &Envelope, now: Instant) -> Result<(), RequestError> {
        let out = &mut self.out;
        match self.links.get_mut(peer.index()).and_then(Option::as_mut) {
            Some(link) => link.send(env, now, out),
            None => Err(RequestError::Invalid(format!("no link to node {peer}"))),
        }
    }

    /// Answers the peer's request `id`.
    pub fn respond(
        &mut self,
        peer: NodeId,
        id: u64,
        message: Message,
        now: Instant,
    ) -> Result<(), RequestError> {
        let env = Envelope {
            kind: Kind::Response(id),
            message,
        };
        self.send(peer, &env, now)
    }

    /// Sends a request; exactly one [`Event::Response`] with `id` follows.
    pub fn request(
        &mut self,
        peer: NodeId,
        id: u64,
        message: Message,
        timeout: Duration,
        now: Instant,
    ) {
        let out = &mut self.out;
        match self.links.get_mut(peer.index()).and_then(Option::as_mut) {
            Some(link) => link.request(id, message, timeout, now, out),
            None => out.emit(Event::Response {
                node: peer,
                id,
                result: Err(RequestError::Invalid(format!("no link to node {peer}"))),
            }),
        }
    }

    /// Closes every connection; waiting requests complete with [`RequestError::Shutdown`].
    pub fn shutdown(&mut self) {
        for link in self.links.iter_mut().flatten() {
            link.shutdown(&mut self.out);
        }
        for conn in self.accepted.drain().map(|(c, _)| c).collect::<Vec<_>>() {
            self.out.push(Action::Close { conn });
        }
    }

    /// True if the link to `peer` is up.
    pub fn is_up(&self, peer: NodeId) -> bool {
        self.link(peer).is_some_and(Link::is_up)
    }
}

fn find_link(links: &mut [Option<Link>], conn: ConnId) -> Option<&mut Link> {
    links.iter_mut().flatten().find(|l| l.conn() == Some(conn))
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
