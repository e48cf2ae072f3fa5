//! Integration tests over real TCP on 127.0.0.1 ephemeral ports: nodes connect and ping both
//! ways, a wrong secret never connects, a killed or frozen peer is reported lost and its
//! requests fail, a restarted peer comes back, garbage and oversized frames are dropped
//! without hurting good links, and start order does not matter.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use transport::message::Hello;
use transport::session::{Inbound, Role, Session};
use transport::{Cluster, Config, Event, Message, NodeId, RequestError, Secret, Transport};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg() -> Config {
    Config {
        heartbeat_interval: ms(50),
        peer_timeout: ms(300),
        handshake_timeout: ms(500),
        backoff_min: ms(20),
        backoff_max: ms(200),
        ..Config::default()
    }
}

fn secret() -> Secret {
    Secret::from_bytes(b"integration test cluster secret, 32+ bytes")
}

fn init_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Binds one ephemeral listener per name and builds the cluster from their addresses.
fn reserve(names: &[&str]) -> (Cluster, Vec<TcpListener>) {
    let listeners: Vec<TcpListener> = names
        .iter()
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let nodes = names
        .iter()
        .zip(&listeners)
        .map(|(n, l)| (n.to_string(), l.local_addr().unwrap()))
        .collect();
    (Cluster::new(nodes).unwrap(), listeners)
}

fn start(cluster: &Cluster, me: NodeId, l: TcpListener, s: Secret, c: Config) -> Transport {
    Transport::start_with_listener(cluster.clone(), me, s, c, l).unwrap()
}

/// Waits up to `limit` for an event matching `pred`; other events are dropped.
fn wait_for(t: &Transport, limit: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
    collect_until(t, limit, &pred).pop().filter(|e| pred(e))
}

/// Every event up to and including the first matching `pred` (all of them if none does
/// within `limit`; then the last one does not match).
fn collect_until(t: &Transport, limit: Duration, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
    let end = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Some(e) = t.next_event(left) else { break };
        let done = pred(&e);
        seen.push(e);
        if done {
            break;
        }
    }
    seen
}

fn up(node: NodeId) -> impl Fn(&Event) -> bool {
    move |e| *e == Event::PeerUp { node }
}

fn down(node: NodeId) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::PeerDown { node: n, .. } if *n == node)
}

fn response(id: u64) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::Response { id: i, .. } if *i == id)
}

fn ping(p: &[u8]) -> Message {
    Message::Ping {
        payload: p.to_vec(),
    }
}

/// Starts a and b and waits until both see the link up.
fn pair() -> (Cluster, Transport, Transport) {
    init_log();
    let (cluster, mut ls) = reserve(&["a", "b"]);
    let b = start(&cluster, B, ls.pop().unwrap(), secret(), cfg());
    let a = start(&cluster, A, ls.pop().unwrap(), secret(), cfg());
    assert!(wait_for(&a, ms(3000), up(B)).is_some(), "a never saw b");
    assert!(wait_for(&b, ms(3000), up(A)).is_some(), "b never saw a");
    (cluster, a, b)
}

/// `from` pings `to`; `to` answers like an application would; returns the completion.
fn ping_through(from: &Transport, to: &Transport, payload: &[u8]) -> Event {
    let id = from.send_request(to.me(), ping(payload), ms(2000)).unwrap();
    let req = wait_for(to, ms(2000), |e| matches!(e, Event::Request { .. })).expect("request");
    let Event::Request {
        node,
        id: rid,
        message,
    } = req
    else {
        unreachable!()
    };
    assert_eq!((node, message), (from.me(), ping(payload)));
    let pong = Message::Pong {
        payload: payload.to_vec(),
    };
    to.respond(node, rid, pong).unwrap();
    wait_for(from, ms(2000), response(id)).expect("completion")
}

fn pong_event(node: NodeId, id_of: &Event, payload: &[u8]) -> bool {
    matches!(id_of, Event::Response { node: n, result: Ok(Message::Pong { payload: p }), .. }
        if *n == node && p == payload)
}

#[test]
fn two_nodes_ping_both_ways() {
    let (_, a, b) = pair();
    let r = ping_through(&a, &b, b"from a");
    assert!(pong_event(B, &r, b"from a"), "{r:?}");
    let r = ping_through(&b, &a, b"from b");
    assert!(pong_event(A, &r, b"from b"), "{r:?}");
    let big = vec![0x5a; cfg().max_payload];
    let r = ping_through(&a, &b, &big);
    assert!(pong_event(B, &r, &big), "largest payload");
}

#[test]
fn event_fd_wakes_an_epoll_loop() {
    let (_, a, b) = pair();
    a.events();
    let epoll = Epoll::new().unwrap();
    let ev = EpollEvent::new(EventSet::IN, 7);
    epoll.ctl(ControlOperation::Add, a.event_fd(), ev).unwrap();
    let mut ready = [EpollEvent::default(); 4];
    assert_eq!(epoll.wait(50, &mut ready).unwrap(), 0, "quiet while idle");
    b.send(
        A,
        Message::App {
            kind: 3,
            payload: vec![1],
        },
    )
    .unwrap();
    assert_eq!(epoll.wait(2000, &mut ready).unwrap(), 1);
    assert_eq!(ready[0].data(), 7);
    let events = a.events();
    let want = Event::Message {
        node: B,
        message: Message::App {
            kind: 3,
            payload: vec![1],
        },
    };
    assert_eq!(events, vec![want]);
    assert_eq!(
        epoll.wait(50, &mut ready).unwrap(),
        0,
        "cleared by events()"
    );
}

#[test]
fn wrong_secret_never_connects_and_both_sides_see_it() {
    init_log();
    let (cluster, mut ls) = reserve(&["a", "b"]);
    let other = Secret::from_bytes(b"a different cluster secret of 32+ bytes");
    let b = start(&cluster, B, ls.pop().unwrap(), other, cfg());
    let a = start(&cluster, A, ls.pop().unwrap(), secret(), cfg());
    let fa = wait_for(&a, ms(2000), |e| matches!(e, Event::ConnectFailed { .. }));
    let fb = wait_for(&b, ms(2000), |e| matches!(e, Event::ConnectFailed { .. }));
    assert!(
        matches!(&fa, Some(Event::ConnectFailed { node: Some(B), reason }) if reason.contains("handshake")),
        "{fa:?}"
    );
    assert!(
        matches!(&fb, Some(Event::ConnectFailed { node: None, reason }) if reason.contains("handshake")),
        "{fb:?}"
    );
    assert!(wait_for(&a, ms(500), up(B)).is_none());
    assert!(b
        .events()
        .iter()
        .all(|e| !matches!(e, Event::PeerUp { .. })));
    let id = a.send_request(B, ping(b""), ms(100)).unwrap();
    let r = wait_for(&a, ms(1000), response(id));
    assert!(
        matches!(
            r,
            Some(Event::Response {
                result: Err(RequestError::NotConnected),
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn killed_peer_goes_down_fails_requests_and_comes_back() {
    for victim in [B, A] {
        let (cluster, a, b) = pair();
        let (survivor, dead) = if victim == B { (a, b) } else { (b, a) };
        let other = survivor.me();
        let id = survivor
            .send_request(victim, ping(b"never answered"), ms(10_000))
            .unwrap();
        assert!(wait_for(&dead, ms(1000), |e| matches!(e, Event::Request { .. })).is_some());
        let killed = Instant::now();
        drop(dead);
        let r = wait_for(&survivor, ms(1000), response(id)).expect("no hang");
        assert!(
            matches!(
                r,
                Event::Response {
                    result: Err(RequestError::PeerLost),
                    ..
                }
            ),
            "{r:?}"
        );
        assert!(wait_for(&survivor, ms(1000), down(victim)).is_some());
        assert!(killed.elapsed() < cfg().peer_timeout + ms(700));
        let restarted = Transport::start(cluster.clone(), victim, secret(), cfg()).unwrap();
        assert!(
            wait_for(&survivor, ms(3000), up(victim)).is_some(),
            "victim {victim}"
        );
        assert!(wait_for(&restarted, ms(3000), up(other)).is_some());
        let r = ping_through(&survivor, &restarted, b"again");
        assert!(pong_event(victim, &r, b"again"));
    }
}

/// Forwards TCP both ways; while `frozen`, bytes are swallowed but sockets stay open.
struct Proxy {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (frozen.clone(), stop.clone());
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((down, _)) => {
                        down.set_nonblocking(false).unwrap();
                        let Ok(up) = TcpStream::connect(target) else {
                            continue;
                        };
                        Proxy::pipe(
                            down.try_clone().unwrap(),
                            up.try_clone().unwrap(),
                            f.clone(),
                        );
                        Proxy::pipe(up, down, f.clone());
                    }
                    Err(_) => thread::sleep(ms(5)),
                }
            }
        });
        Proxy { addr, frozen, stop }
    }

    fn pipe(mut from: TcpStream, mut to: TcpStream, frozen: Arc<AtomicBool>) {
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if !frozen.load(Ordering::Relaxed) && to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            // A partition loses FINs too: hold the other side open until it heals.
            while frozen.load(Ordering::Relaxed) {
                thread::sleep(ms(5));
            }
            let _ = to.shutdown(std::net::Shutdown::Both);
            let _ = from.shutdown(std::net::Shutdown::Both);
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn frozen_peer_is_lost_by_heartbeat_timeout() {
    init_log();
    let (cluster, mut ls) = reserve(&["a", "b"]);
    let b = start(&cluster, B, ls.pop().unwrap(), secret(), cfg());
    let proxy = Proxy::start(cluster.addr(B).unwrap());
    let via_proxy = Cluster::new(vec![
        ("a".into(), cluster.addr(A).unwrap()),
        ("b".into(), proxy.addr),
    ])
    .unwrap();
    let a = start(&via_proxy, A, ls.pop().unwrap(), secret(), cfg());
    assert!(wait_for(&a, ms(3000), up(B)).is_some());
    assert!(wait_for(&b, ms(3000), up(A)).is_some());
    thread::sleep(ms(400));
    assert!(a.events().is_empty(), "heartbeats keep the idle link up");
    let id = a.send_request(B, ping(b""), ms(10_000)).unwrap();
    proxy.frozen.store(true, Ordering::Relaxed);
    let frozen_at = Instant::now();
    let events = collect_until(&a, ms(3000), down(B));
    let took = frozen_at.elapsed();
    assert!(took >= ms(200) && took < ms(1000), "lost after {took:?}");
    let [lost, e] = &events[..] else {
        panic!("{events:?}")
    };
    let peer_lost = Err(RequestError::PeerLost);
    assert!(
        matches!(lost, Event::Response { id: i, result, .. } if *i == id && *result == peer_lost)
    );
    assert!(
        matches!(e, Event::PeerDown { reason, .. } if reason.contains("nothing received")),
        "{e:?}"
    );
    assert!(
        wait_for(&b, ms(3000), down(A)).is_some(),
        "b loses a as well"
    );
    proxy.frozen.store(false, Ordering::Relaxed);
    assert!(
        wait_for(&a, ms(3000), up(B)).is_some(),
        "back after the partition"
    );
}

#[test]
fn request_times_out_when_the_application_does_not_answer() {
    let (_, a, b) = pair();
    let t0 = Instant::now();
    let id = a.send_request(B, ping(b"?"), ms(150)).unwrap();
    let r = wait_for(&a, ms(2000), response(id)).unwrap();
    assert!(matches!(
        r,
        Event::Response {
            result: Err(RequestError::Timeout),
            ..
        }
    ));
    assert!(t0.elapsed() >= ms(150));
    assert!(wait_for(&b, ms(100), |e| matches!(e, Event::Request { .. })).is_some());
}

/// Connects to `addr` as node `name`/`index`, completing handshake and Hello exchange.
fn rogue_connect(addr: SocketAddr, name: &str, index: u16) -> (TcpStream, Session) {
    let hello = Hello {
        protocol_version: transport::PROTOCOL_VERSION,
        cluster_id: Some(secret().cluster_id()),
        node_name: name.into(),
        node_index: index,
    };
    let mut s = Session::new(Role::Initiator, &secret(), hello, 65503).unwrap();
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(ms(2000))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        tcp.write_all(&s.take_output()).unwrap();
        let n = tcp.read(&mut buf).expect("peer answers the handshake");
        assert!(n > 0, "peer closed during handshake");
        s.receive(&buf[..n]);
        if let Some(Inbound::Hello(h)) = s.next_inbound().unwrap() {
            assert_eq!(h.node_name, "b");
            return (tcp, s);
        }
    }
}

/// True once the peer has closed `tcp` (EOF or reset) within `limit`.
fn closed_by_peer(tcp: &mut TcpStream, limit: Duration) -> bool {
    tcp.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut
            }
        }
    }
}

#[test]
fn garbage_and_oversized_frames_are_dropped_and_the_good_link_survives() {
    init_log();
    // r (index 0) is a rogue speaking through the library's Session; nobody dials it.
    let (cluster, mut ls) = reserve(&["r", "a", "b"]);
    let (a_id, b_id) = (NodeId(1), NodeId(2));
    let small = Config {
        max_payload: 1024,
        ..cfg()
    };
    let b = start(&cluster, b_id, ls.pop().unwrap(), secret(), small);
    let a = start(&cluster, a_id, ls.pop().unwrap(), secret(), cfg());
    assert!(wait_for(&b, ms(3000), up(a_id)).is_some());
    let b_addr = cluster.addr(b_id).unwrap();

    // Unauthenticated garbage: dropped during the handshake, nothing sent back.
    let mut junk = TcpStream::connect(b_addr).unwrap();
    let noise: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let _ = junk.write_all(&noise);
    assert!(closed_by_peer(&mut junk, ms(2000)));
    let f = wait_for(&b, ms(2000), |e| {
        matches!(e, Event::ConnectFailed { node: None, .. })
    });
    assert!(f.is_some());

    // Authenticated peer sending an oversized frame: that link closes with a reason.
    let (mut tcp, _s) = rogue_connect(b_addr, "r", 0);
    assert!(wait_for(&b, ms(2000), up(NodeId(0))).is_some());
    let mut big = vec![0xff, 0xff];
    big.extend(vec![0u8; 65535]);
    let _ = tcp.write_all(&big);
    let e = wait_for(&b, ms(2000), down(NodeId(0))).expect("rogue dropped");
    assert!(
        matches!(&e, Event::PeerDown { reason, .. } if reason.contains("exceeds")),
        "{e:?}"
    );
    assert!(closed_by_peer(&mut tcp, ms(2000)));

    // Authenticated peer sending a frame that fails to decrypt.
    let (mut tcp, _s) = rogue_connect(b_addr, "r", 0);
    assert!(wait_for(&b, ms(2000), up(NodeId(0))).is_some());
    let mut bad = vec![0, 64];
    bad.extend([0x33; 64]);
    tcp.write_all(&bad).unwrap();
    let e = wait_for(&b, ms(2000), down(NodeId(0))).expect("rogue dropped");
    assert!(
        matches!(&e, Event::PeerDown { reason, .. } if reason.contains("decrypt")),
        "{e:?}"
    );

    // The good link never noticed.
    let r = ping_through(&a, &b, b"still here");
    assert!(pong_event(b_id, &r, b"still here"), "{r:?}");
    assert!(a
        .events()
        .iter()
        .all(|e| !matches!(e, Event::PeerDown { .. })));
}

#[test]
fn nodes_start_in_either_order() {
    init_log();
    for dialer_first in [true, false] {
        let (cluster, mut ls) = reserve(&["a", "b"]);
        let (lb, la) = (ls.pop().unwrap(), ls.pop().unwrap());
        let (a, b) = if dialer_first {
            drop(lb); // b's port refuses connections until b starts.
            let a = start(&cluster, A, la, secret(), cfg());
            thread::sleep(ms(300));
            let b = Transport::start(cluster.clone(), B, secret(), cfg()).unwrap();
            (a, b)
        } else {
            let b = start(&cluster, B, lb, secret(), cfg());
            thread::sleep(ms(300));
            (start(&cluster, A, la, secret(), cfg()), b)
        };
        assert!(
            wait_for(&a, ms(3000), up(B)).is_some(),
            "dialer first: {dialer_first}"
        );
        assert!(
            wait_for(&b, ms(3000), up(A)).is_some(),
            "dialer first: {dialer_first}"
        );
        assert!(pong_event(B, &ping_through(&a, &b, b"x"), b"x"));
    }
}
