//! The I/O driver: one background thread running a mio poll loop over the listening socket
//! and the peer connections, executing the [`Node`] core's actions; and [`Transport`], the
//! handle the monitor holds.
//!
//! The monitor never blocks on the network: commands (`send`, `send_request`, `respond`) go
//! to the thread through a channel and a mio waker; events come back through a channel and
//! an eventfd ([`Transport::event_fd`]) that becomes readable whenever events are queued, so
//! an epoll loop can register it and call [`Transport::events`] when it fires.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use thiserror::Error;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::cluster::{Cluster, NodeId, Secret};
use crate::config::Config;
use crate::event::{Action, ConnId, Event};
use crate::message::{Envelope, Kind, Message, MessageError};
use crate::node::{Node, NodeError};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const READ_CHUNK: usize = 64 * 1024;

/// Why the transport could not start or take a command.
#[derive(Debug, Error)]
pub enum DriverError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the I/O driver")]
    Setup(#[source] std::io::Error),
    #[error("invalid transport setup")]
    Node(#[from] NodeError),
    #[error("node {0} is not in the cluster")]
    UnknownNode(NodeId),
    #[error("message cannot be sent")]
    Message(#[from] MessageError),
    #[error("the transport thread has stopped")]
    Stopped,
}

enum Command {
    Send {
        node: NodeId,
        env: Envelope,
    },
    Request {
        node: NodeId,
        id: u64,
        message: Message,
        timeout: Duration,
    },
    Shutdown,
}

/// A cloneable, thread-safe way to send through a [`Transport`] (e.g. from vCPU threads).
#[derive(Clone)]
pub struct TransportSender {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    next_id: Arc<AtomicU64>,
    nodes: usize,
    max_payload: usize,
}

impl TransportSender {
    fn command(&self, c: Command) -> Result<(), DriverError> {
        self.commands.send(c).map_err(|_| DriverError::Stopped)?;
        self.waker.wake().map_err(|_| DriverError::Stopped)
    }

    fn check(&self, node: NodeId, env: &Envelope) -> Result<(), DriverError> {
        if node.index() >= self.nodes {
            return Err(DriverError::UnknownNode(node));
        }
        env.encode(self.max_payload)?;
        Ok(())
    }

    /// Sends a one-way message. Dropped (and logged) if the peer is not up when the I/O
    /// thread gets to it; use a request when delivery matters.
    pub fn send(&self, node: NodeId, message: Message) -> Result<(), DriverError> {
        let env = Envelope::one_way(message);
        self.check(node, &env)?;
        self.command(Command::Send { node, env })
    }

    /// Answers request `id` of `node` (from an [`Event::Request`]).
    pub fn respond(&self, node: NodeId, id: u64, message: Message) -> Result<(), DriverError> {
        let env = Envelope {
            kind: Kind::Response(id),
            message,
        };
        self.check(node, &env)?;
        self.command(Command::Send { node, env })
    }

    /// Sends a request and returns its id. Exactly one [`Event::Response`] with that id will
    /// follow: the response, or `PeerLost`, `Timeout` (after `timeout`), `NotConnected`,
    /// `Remote` (the peer answered `Error`).
    pub fn send_request(
        &self,
        node: NodeId,
        message: Message,
        timeout: Duration,
    ) -> Result<u64, DriverError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let env = Envelope {
            kind: Kind::Request(id),
            message,
        };
        self.check(node, &env)?;
        let Envelope { message, .. } = env;
        self.command(Command::Request {
            node,
            id,
            message,
            timeout,
        })?;
        Ok(id)
    }
}

/// A running transport: the I/O thread plus the application's ends of its queues.
pub struct Transport {
    sender: TransportSender,
    events: Receiver<Event>,
    notify: EventFd,
    cluster: Cluster,
    me: NodeId,
    local_addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Transport {
    /// Starts node `me`, listening on its address from the cluster.
    pub fn start(
        cluster: Cluster,
        me: NodeId,
        secret: Secret,
        config: Config,
    ) -> Result<Transport, DriverError> {
        let addr = cluster.addr(me).ok_or(DriverError::UnknownNode(me))?;
        let listener =
            StdListener::bind(addr).map_err(|source| DriverError::Bind { addr, source })?;
        Transport::start_with_listener(cluster, me, secret, config, listener)
    }

    /// Starts node `me` on an already bound listener (any address; e.g. port 0 in tests).
    pub fn start_with_listener(
        cluster: Cluster,
        me: NodeId,
        secret: Secret,
        config: Config,
        listener: StdListener,
    ) -> Result<Transport, DriverError> {
        let max_payload = config.max_payload;
        let max_send_buffer = config.max_send_buffer;
        let node = Node::new(cluster.clone(), me, secret, config, Instant::now())?;
        listener.set_nonblocking(true).map_err(DriverError::Setup)?;
        let local_addr = listener.local_addr().map_err(DriverError::Setup)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new().map_err(DriverError::Setup)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(DriverError::Setup)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(DriverError::Setup)?);
        let notify = EventFd::new(EFD_NONBLOCK).map_err(DriverError::Setup)?;
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (ev_tx, ev_rx) = mpsc::channel();
        let driver = Driver {
            poll,
            listener,
            node,
            conns: HashMap::new(),
            commands: cmd_rx,
            events: ev_tx,
            notify: notify.try_clone().map_err(DriverError::Setup)?,
            max_send_buffer,
            read_buf: vec![0; READ_CHUNK],
        };
        let name = format!("transport-{}", cluster.name(me));
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || driver.run())
            .map_err(DriverError::Setup)?;
        log::info!("node {} listening on {local_addr}", cluster.name(me));
        Ok(Transport {
            sender: TransportSender {
                commands: cmd_tx,
                waker,
                next_id: Arc::new(AtomicU64::new(1)),
                nodes: cluster.len(),
                max_payload,
            },
            events: ev_rx,
            notify,
            cluster,
            me,
            local_addr,
            thread: Some(thread),
        })
    }

    /// A cloneable sender for other threads.
    pub fn sender(&self) -> TransportSender {
        self.sender.clone()
    }

    /// See [`TransportSender::send`].
    pub fn send(&self, node: NodeId, message: Message) -> Result<(), DriverError> {
        self.sender.send(node, message)
    }

    /// See [`TransportSender::respond`].
    pub fn respond(&self, node: NodeId, id: u64, message: Message) -> Result<(), DriverError> {
        self.sender.respond(node, id, message)
    }

    /// See [`TransportSender::send_request`].
    pub fn send_request(
        &self,
        node: NodeId,
        message: Message,
        timeout: Duration,
    ) -> Result<u64, DriverError> {
        self.sender.send_request(node, message, timeout)
    }

    /// The eventfd that is readable while events may be queued. Register it (level- or
    /// edge-triggered) in an epoll loop and call [`events`](Self::events) when it fires.
    pub fn event_fd(&self) -> RawFd {
        self.notify.as_raw_fd()
    }

    /// Clears the eventfd and returns every queued event, without blocking.
    pub fn events(&self) -> Vec<Event> {
        // Clear first: an event queued after this read signals the fd again.
        let _ = self.notify.read();
        self.events.try_iter().collect()
    }

    /// Waits up to `timeout` for the next event (for threads that do not poll the fd).
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The cluster this node belongs to.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }
}

impl AsRawFd for Transport {
    fn as_raw_fd(&self) -> RawFd {
        self.event_fd()
    }
}

impl Drop for Transport {
    /// Closes every connection and stops the thread (peers see the connections close).
    fn drop(&mut self) {
        let _ = self.sender.command(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("transport thread panicked");
            }
        }
    }
}

struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    connected: bool,
}

struct Driver {
    poll: Poll,
    listener: TcpListener,
    node: Node,
    conns: HashMap<ConnId, Conn>,
    commands: Receiver<Command>,
    events: Sender<Event>,
    notify: EventFd,
    max_send_buffer: usize,
    read_buf: Vec<u8>,
}

fn token(conn: ConnId) -> Token {
    Token(conn.0 as usize + 2)
}

impl Driver {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            self.node.tick(Instant::now());
            self.run_actions();
            let timeout = self
                .node
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                log::error!("transport poll failed, stopping: {e}");
                return;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {
                        if !self.take_commands() {
                            return;
                        }
                    }
                    Token(t) => self.on_conn_event(ConnId(t as u64 - 2), ev),
                }
                self.run_actions();
            }
        }
    }

    /// Executes queued commands; false on shutdown.
    fn take_commands(&mut self) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            let now = Instant::now();
            match cmd {
                Command::Send { node, env } => {
                    if let Err(e) = self.node.send(node, &env, now) {
                        log::debug!("message to {node} dropped: {e}");
                    }
                }
                Command::Request {
                    node,
                    id,
                    message,
                    timeout,
                } => self.node.request(node, id, message, timeout, now),
                Command::Shutdown => {
                    self.node.shutdown();
                    self.run_actions();
                    return false;
                }
            }
        }
        true
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, addr)) => {
                    let Some(conn) = self.node.on_accepted(addr, Instant::now()) else {
                        continue;
                    };
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, token(conn), interest)
                    {
                        self.node
                            .on_closed(conn, &format!("register: {e}"), Instant::now());
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    self.conns.insert(
                        conn,
                        Conn {
                            stream,
                            out: Vec::new(),
                            connected: true,
                        },
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn on_conn_event(&mut self, conn: ConnId, ev: &mio::event::Event) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.connected {
            match connect_status(&c.stream) {
                Ok(false) => return,
                Ok(true) => {
                    c.connected = true;
                    let _ = c.stream.set_nodelay(true);
                    self.node.on_connected(conn, Instant::now());
                    self.run_actions();
                }
                Err(e) => return self.fail(conn, &format!("connect failed: {e}")),
            }
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.read_all(conn);
        }
        if ev.is_writable() {
            self.flush(conn);
        }
    }

    fn read_all(&mut self, conn: ConnId) {
        while let Some(c) = self.conns.get_mut(&conn) {
            match c.stream.read(&mut self.read_buf) {
                Ok(0) => return self.fail(conn, "connection closed by peer"),
                Ok(n) => {
                    self.node
                        .on_bytes(conn, &self.read_buf[..n], Instant::now());
                    self.run_actions();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return self.fail(conn, &format!("read: {e}")),
            }
        }
    }

    /// Writes as much of `conn`'s queue as the socket takes.
    fn flush(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.connected {
            return;
        }
        let mut written = 0;
        let result = loop {
            if written == c.out.len() {
                break Ok(());
            }
            match c.stream.write(&c.out[written..]) {
                Ok(0) => break Err("write returned 0".to_owned()),
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => break Err(format!("write: {e}")),
            }
        };
        c.out.drain(..written);
        if let Err(reason) = result {
            self.fail(conn, &reason);
        }
    }

    /// The socket of `conn` failed or ended: drop it and tell the core.
    fn fail(&mut self, conn: ConnId, reason: &str) {
        self.remove(conn);
        self.node.on_closed(conn, reason, Instant::now());
    }

    fn remove(&mut self, conn: ConnId) {
        if let Some(mut c) = self.conns.remove(&conn) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn run_actions(&mut self) {
        let mut notify = false;
        while let Some(action) = self.node.poll_action() {
            match action {
                Action::Dial { conn, addr, .. } => self.dial(conn, addr),
                Action::Send { conn, bytes } => self.queue(conn, &bytes),
                Action::Close { conn } => {
                    self.flush(conn);
                    self.remove(conn);
                }
                Action::Emit(event) => {
                    notify = true;
                    let _ = self.events.send(event);
                }
            }
        }
        if notify {
            if let Err(e) = self.notify.write(1) {
                log::debug!("event notification failed: {e}");
            }
        }
    }

    fn dial(&mut self, conn: ConnId, addr: SocketAddr) {
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                return self.node.on_closed(
                    conn,
                    &format!("connect to {addr}: {e}"),
                    Instant::now(),
                )
            }
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token(conn), interest)
        {
            return self
                .node
                .on_closed(conn, &format!("register: {e}"), Instant::now());
        }
        self.conns.insert(
            conn,
            Conn {
                stream,
                out: Vec::new(),
                connected: false,
            },
        );
    }

    fn queue(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.out.extend_from_slice(bytes);
        if c.out.len() > self.max_send_buffer {
            let reason = format!(
                "more than {} bytes queued (peer not reading)",
                self.max_send_buffer
            );
            return self.fail(conn, &reason);
        }
        self.flush(conn);
    }
}

/// Whether a non-blocking connect finished: `Ok(true)` connected, `Ok(false)` still in
/// progress, `Err` failed.
fn connect_status(stream: &TcpStream) -> std::io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}
