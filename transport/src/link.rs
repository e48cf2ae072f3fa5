//! The per-peer link state machine ([`Link`]): connection state, heartbeat and loss timers,
//! reconnection backoff and the table of requests waiting for a response.
//!
//! Pure and deterministic: every input carries the current time (`now`), outputs go to an
//! action queue. States: `Down` (not connected; the dialing side has a retry time) →
//! `Connecting` (TCP connect in flight) → `Handshaking` (Noise + Hello) → `Up` → `Down` again
//! on loss. Only the lower-indexed node of a pair dials; the other side's link jumps from
//! `Down` to `Up` when the node core hands it an accepted connection whose Hello names it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::NodeId;
use crate::event::{error_chain, Action, ConnId, Event, Out, RequestError};
use crate::message::{Envelope, Kind, Message};
use crate::node::Local;
use crate::session::{Inbound, Role, Session};

/// Exponential reconnection delay: `min`, `2·min`, `4·min`, … capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Option<Duration>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            current: None,
        }
    }

    /// The delay before the next attempt (and doubles the one after).
    pub fn next_delay(&mut self) -> Duration {
        let d = match self.current {
            None => self.min,
            Some(c) => c.saturating_mul(2).min(self.max),
        };
        self.current = Some(d);
        d
    }

    /// Back to `min` (after a successful connection).
    pub fn reset(&mut self) {
        self.current = None;
    }
}

/// Our requests waiting for a response, by id and by deadline.
#[derive(Debug, Default)]
struct Pending {
    by_id: HashMap<u64, Instant>,
    by_deadline: BTreeSet<(Instant, u64)>,
}

impl Pending {
    fn insert(&mut self, id: u64, deadline: Instant) {
        self.by_id.insert(id, deadline);
        self.by_deadline.insert((deadline, id));
    }

    fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Removes `id`; false if it was not waiting.
    fn remove(&mut self, id: u64) -> bool {
        match self.by_id.remove(&id) {
            Some(deadline) => self.by_deadline.remove(&(deadline, id)),
            None => false,
        }
    }

    fn len(&self) -> usize {
        self.by_id.len()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(d, _)| *d)
    }

    /// Removes and returns one request whose deadline is at or before `now`.
    fn pop_expired(&mut self, now: Instant) -> Option<u64> {
        let &(deadline, id) = self.by_deadline.first()?;
        (deadline <= now).then(|| {
            self.remove(id);
            id
        })
    }

    /// Removes every request, in id order.
    fn take_all(&mut self) -> Vec<u64> {
        self.by_deadline.clear();
        let mut ids: Vec<u64> = self.by_id.drain().map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids
    }
}

/// Where a link stands.
#[derive(Debug)]
pub enum LinkState {
    /// Not connected (never yet, or lost). The dialing side retries at `retry_at`; the
    /// listening side (`retry_at: None`) waits for the peer to dial.
    Down { retry_at: Option<Instant> },
    /// TCP connect in flight (dialing side).
    Connecting { conn: ConnId, since: Instant },
    /// Noise handshake and Hello exchange in flight (dialing side).
    Handshaking {
        conn: ConnId,
        since: Instant,
        session: Box<Session>,
    },
    /// Authenticated and usable.
    Up {
        conn: ConnId,
        session: Box<Session>,
        last_rx: Instant,
        last_tx: Instant,
    },
}

impl LinkState {
    fn conn(&self) -> Option<ConnId> {
        match self {
            LinkState::Down { .. } => None,
            LinkState::Connecting { conn, .. }
            | LinkState::Handshaking { conn, .. }
            | LinkState::Up { conn, .. } => Some(*conn),
        }
    }

    /// A short name for logs and tests.
    pub fn name(&self) -> &'static str {
        match self {
            LinkState::Down { .. } => "down",
            LinkState::Connecting { .. } => "connecting",
            LinkState::Handshaking { .. } => "handshaking",
            LinkState::Up { .. } => "up",
        }
    }
}

/// The link to one peer (see the module docs).
#[derive(Debug)]
pub struct Link {
    peer: NodeId,
    dials: bool,
    local: Arc<Local>,
    state: LinkState,
    backoff: Backoff,
    /// Our requests waiting on this peer.
    pending: Pending,
}

impl Link {
    pub(crate) fn new(peer: NodeId, local: Arc<Local>, now: Instant) -> Link {
        let dials = local.me < peer;
        let backoff = Backoff::new(local.config.backoff_min, local.config.backoff_max);
        Link {
            peer,
            dials,
            state: LinkState::Down {
                retry_at: dials.then_some(now),
            },
            local,
            backoff,
            pending: Pending::default(),
        }
    }

    pub fn state(&self) -> &LinkState {
        &self.state
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, LinkState::Up { .. })
    }

    /// Whether this side dials (lower index) or waits to be dialed.
    pub fn dials(&self) -> bool {
        self.dials
    }

    pub(crate) fn conn(&self) -> Option<ConnId> {
        self.state.conn()
    }

    /// Number of requests waiting for a response.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    fn name(&self) -> &str {
        self.local.cluster.name(self.peer)
    }

    /// The earliest time at which [`tick`](Self::tick) has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let cfg = &self.local.config;
        let state = match &self.state {
            LinkState::Down { retry_at } => *retry_at,
            LinkState::Connecting { since, .. } | LinkState::Handshaking { since, .. } => {
                Some(*since + cfg.handshake_timeout)
            }
            LinkState::Up {
                last_rx, last_tx, ..
            } => Some((*last_rx + cfg.peer_timeout).min(*last_tx + cfg.heartbeat_interval)),
        };
        let request = self.pending.next_deadline();
        [state, request].into_iter().flatten().min()
    }

    /// Runs the timers: request deadlines, retries, handshake timeout, heartbeat, loss.
    pub(crate) fn tick(&mut self, now: Instant, out: &mut Out) {
        self.expire_requests(now, out);
        let cfg = &self.local.config;
        match &self.state {
            LinkState::Down {
                retry_at: Some(at), ..
            } if now >= *at => self.dial(now, out),
            LinkState::Connecting { since, .. } | LinkState::Handshaking { since, .. }
                if now >= *since + cfg.handshake_timeout =>
            {
                let t = cfg.handshake_timeout;
                self.fail_attempt(&format!("no link within {t:?}"), now, out);
            }
            LinkState::Up { last_rx, .. } if now >= *last_rx + cfg.peer_timeout => {
                let t = cfg.peer_timeout;
                self.lose(&format!("nothing received for {t:?}"), now, out);
            }
            LinkState::Up { last_tx, .. } if now >= *last_tx + cfg.heartbeat_interval => {
                let hb = Envelope::one_way(Message::Heartbeat);
                if let Err(e) = self.send(&hb, now, out) {
                    log::debug!("heartbeat to {} not sent: {e}", self.name());
                }
            }
            _ => {}
        }
    }

    fn expire_requests(&mut self, now: Instant, out: &mut Out) {
        while let Some(id) = self.pending.pop_expired(now) {
            self.complete(id, Err(RequestError::Timeout), out);
        }
    }

    fn complete(&self, id: u64, result: Result<Message, RequestError>, out: &mut Out) {
        out.emit(Event::Response {
            node: self.peer,
            id,
            result,
        });
    }

    fn dial(&mut self, now: Instant, out: &mut Out) {
        let Some(addr) = self.local.cluster.addr(self.peer) else {
            self.state = LinkState::Down { retry_at: None };
            return;
        };
        let conn = out.new_conn();
        log::debug!("dialing {} at {addr} (conn {})", self.name(), conn.0);
        out.push(Action::Dial {
            conn,
            peer: self.peer,
            addr,
        });
        self.state = LinkState::Connecting { conn, since: now };
    }

    /// The driver finished the TCP connect of `conn`: start the Noise handshake.
    pub(crate) fn on_connected(&mut self, conn: ConnId, now: Instant, out: &mut Out) {
        let LinkState::Connecting { conn: c, since } = self.state else {
            return;
        };
        if c != conn {
            return;
        }
        let hello = self.local.hello();
        match Session::new(
            Role::Initiator,
            &self.local.secret,
            hello,
            self.max_payload(),
        ) {
            Ok(mut session) => {
                push_output(conn, &mut session, out);
                self.state = LinkState::Handshaking {
                    conn,
                    since,
                    session: Box::new(session),
                };
            }
            Err(e) => self.fail_attempt(&error_chain(&e), now, out),
        }
    }

    fn max_payload(&self) -> usize {
        self.local.config.max_payload
    }

    /// Bytes arrived on `conn` (ignored unless it is this link's connection).
    pub(crate) fn on_bytes(&mut self, conn: ConnId, data: &[u8], now: Instant, out: &mut Out) {
        if self.conn() != Some(conn) {
            return;
        }
        match &mut self.state {
            LinkState::Handshaking { session, .. } | LinkState::Up { session, .. } => {
                session.receive(data)
            }
            _ => return,
        }
        self.drain(now, out);
    }

    /// Processes every complete item the session has buffered.
    fn drain(&mut self, now: Instant, out: &mut Out) {
        loop {
            let (conn, item) = match &mut self.state {
                LinkState::Handshaking { conn, session, .. }
                | LinkState::Up { conn, session, .. } => {
                    let item = session.next_inbound();
                    push_output(*conn, session, out);
                    (*conn, item)
                }
                _ => return,
            };
            match item {
                Ok(None) => return,
                Ok(Some(Inbound::Hello(hello))) => self.on_hello(conn, &hello, now, out),
                Ok(Some(Inbound::Envelope(env))) => self.on_envelope(env, now, out),
                Err(e) => self.on_failure(&error_chain(&e), now, out),
            }
        }
    }

    fn on_failure(&mut self, reason: &str, now: Instant, out: &mut Out) {
        if self.is_up() {
            self.lose(reason, now, out);
        } else {
            self.fail_attempt(reason, now, out);
        }
    }

    /// The dialed peer's Hello: check it names the node we dialed.
    fn on_hello(
        &mut self,
        conn: ConnId,
        hello: &crate::message::Hello,
        now: Instant,
        out: &mut Out,
    ) {
        let state = std::mem::replace(&mut self.state, LinkState::Down { retry_at: None });
        let LinkState::Handshaking { mut session, .. } = state else {
            self.state = state;
            return;
        };
        if let Err(reason) = self.local.check_hello(hello, Some(self.peer)) {
            session.refuse(&reason);
            push_output(conn, &mut session, out);
            self.state = LinkState::Handshaking {
                conn,
                since: now,
                session,
            };
            self.fail_attempt(&format!("refused: {reason}"), now, out);
            return;
        }
        self.become_up(conn, session, now, out);
    }

    fn become_up(&mut self, conn: ConnId, session: Box<Session>, now: Instant, out: &mut Out) {
        log::info!("link to {} up (conn {})", self.name(), conn.0);
        self.backoff.reset();
        self.state = LinkState::Up {
            conn,
            session,
            last_rx: now,
            last_tx: now,
        };
        out.emit(Event::PeerUp { node: self.peer });
    }

    fn on_envelope(&mut self, env: Envelope, now: Instant, out: &mut Out) {
        if let LinkState::Up { last_rx, .. } = &mut self.state {
            *last_rx = now;
        }
        let node = self.peer;
        match (env.kind, env.message) {
            (_, Message::Heartbeat) => {}
            (Kind::OneWay, message) => out.emit(Event::Message { node, message }),
            (Kind::Request(id), message) => out.emit(Event::Request { node, id, message }),
            (Kind::Response(id), message) => {
                if !self.pending.remove(id) {
                    log::debug!(
                        "response {id} from {} matches no waiting request",
                        self.name()
                    );
                    return;
                }
                let result = match message {
                    Message::Error { code, message } => Err(RequestError::Remote { code, message }),
                    m => Ok(m),
                };
                self.complete(id, result, out);
            }
        }
    }

    /// The driver saw `conn` close (EOF or error).
    pub(crate) fn on_closed(&mut self, conn: ConnId, reason: &str, now: Instant, out: &mut Out) {
        if self.conn() != Some(conn) {
            return;
        }
        let reason = match &self.state {
            LinkState::Handshaking { session, .. } if session.in_handshake() => {
                format!("{reason} during the Noise handshake (wrong cluster secret?)")
            }
            LinkState::Handshaking { session, .. } | LinkState::Up { session, .. } => {
                match session.finish() {
                    Err(e) => format!("{reason}: {e}"),
                    Ok(()) => reason.to_owned(),
                }
            }
            _ => reason.to_owned(),
        };
        self.on_failure(&reason, now, out);
    }

    /// Listening side: an accepted connection whose Hello named this peer. Replaces any
    /// current connection (the peer restarted), answers with our Hello, goes `Up`.
    pub(crate) fn adopt(
        &mut self,
        conn: ConnId,
        mut session: Session,
        now: Instant,
        out: &mut Out,
    ) {
        match self.state {
            LinkState::Up { .. } => {
                self.lose("replaced by a new connection from the peer", now, out)
            }
            LinkState::Connecting { conn: old, .. } | LinkState::Handshaking { conn: old, .. } => {
                out.push(Action::Close { conn: old });
            }
            LinkState::Down { .. } => {}
        }
        if let Err(e) = session.accept() {
            out.push(Action::Close { conn });
            let reason = error_chain(&e);
            out.emit(Event::ConnectFailed {
                node: Some(self.peer),
                reason,
            });
            return;
        }
        push_output(conn, &mut session, out);
        self.become_up(conn, Box::new(session), now, out);
        self.drain(now, out);
    }

    /// Sends one envelope if the link is up.
    pub(crate) fn send(
        &mut self,
        env: &Envelope,
        now: Instant,
        out: &mut Out,
    ) -> Result<(), RequestError> {
        let LinkState::Up {
            conn,
            session,
            last_tx,
            ..
        } = &mut self.state
        else {
            return Err(RequestError::NotConnected);
        };
        session
            .send(env)
            .map_err(|e| RequestError::Invalid(error_chain(&e)))?;
        *last_tx = now;
        push_output(*conn, session, out);
        Ok(())
    }

    /// Sends a request; its completion (response, error, timeout or loss) arrives as exactly
    /// one [`Event::Response`] with this `id`, possibly at once.
    pub(crate) fn request(
        &mut self,
        id: u64,
        message: Message,
        timeout: Duration,
        now: Instant,
        out: &mut Out,
    ) {
        if self.pending.contains(id) {
            let err = RequestError::Invalid(format!("request id {id} already waiting"));
            return self.complete(id, Err(err), out);
        }
        let env = Envelope {
            kind: Kind::Request(id),
            message,
        };
        match self.send(&env, now, out) {
            Ok(()) => {
                self.pending.insert(id, now + timeout);
            }
            Err(e) => self.complete(id, Err(e), out),
        }
    }

    /// Declares the established link lost: close, fail waiting requests, `PeerDown`.
    fn lose(&mut self, reason: &str, now: Instant, out: &mut Out) {
        log::warn!("link to {} lost: {reason}", self.name());
        if let Some(conn) = self.conn() {
            out.push(Action::Close { conn });
        }
        for id in self.pending.take_all() {
            self.complete(id, Err(RequestError::PeerLost), out);
        }
        out.emit(Event::PeerDown {
            node: self.peer,
            reason: reason.to_owned(),
        });
        self.go_down(now);
    }

    /// A connection attempt failed before the link came up.
    fn fail_attempt(&mut self, reason: &str, now: Instant, out: &mut Out) {
        log::warn!("connection to {} failed: {reason}", self.name());
        if let Some(conn) = self.conn() {
            out.push(Action::Close { conn });
        }
        out.emit(Event::ConnectFailed {
            node: Some(self.peer),
            reason: reason.to_owned(),
        });
        self.go_down(now);
    }

    fn go_down(&mut self, now: Instant) {
        let retry_at = self.dials.then(|| now + self.backoff.next_delay());
        self.state = LinkState::Down { retry_at };
    }

    /// Closes the connection without events (shutdown).
    pub(crate) fn shutdown(&mut self, out: &mut Out) {
        if let Some(conn) = self.conn() {
            out.push(Action::Close { conn });
        }
        for id in self.pending.take_all() {
            self.complete(id, Err(RequestError::Shutdown), out);
        }
        self.state = LinkState::Down { retry_at: None };
    }
}

fn push_output(conn: ConnId, session: &mut Session, out: &mut Out) {
    let bytes = session.take_output();
    if !bytes.is_empty() {
        out.push(Action::Send { conn, bytes });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let seq: Vec<_> = (0..7).map(|_| b.next_delay()).collect();
        assert_eq!(
            seq,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000),
                ms(1000)
            ]
        );
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
        let mut b = Backoff::new(ms(500), ms(100));
        assert_eq!(b.next_delay(), ms(500), "max below min is raised to min");
        assert_eq!(b.next_delay(), ms(500));
    }
}
