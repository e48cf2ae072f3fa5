//! Unit tests of the protocol core: several [`Node`]s wired through an in-memory network with
//! a simulated clock, so heartbeats, loss, backoff and request completion run
//! deterministically and without sockets.

use std::collections::HashMap;

use super::*;
use crate::message::error_code;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg() -> Config {
    Config {
        heartbeat_interval: ms(100),
        peer_timeout: ms(500),
        handshake_timeout: ms(300),
        backoff_min: ms(50),
        backoff_max: ms(400),
        ..Config::default()
    }
}

const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);
const C: NodeId = NodeId(2);
const STEP: Duration = Duration::from_millis(5);

/// Nodes, their connections and a clock.
struct Net {
    start: Instant,
    now: Instant,
    cluster: Cluster,
    secrets: Vec<Secret>,
    nodes: Vec<Option<Node>>,
    wires: HashMap<(usize, ConnId), (usize, ConnId)>,
    /// Partition: bytes and FINs are lost, connections stay open.
    frozen: bool,
    events: Vec<Vec<(Duration, Event)>>,
    dials: Vec<Vec<Duration>>,
}

impl Net {
    fn new(n: usize) -> Net {
        Net::with_secrets(vec![Secret::from_bytes(&[1; 32]); n])
    }

    fn with_secrets(secrets: Vec<Secret>) -> Net {
        let spec: Vec<String> = (0..secrets.len())
            .map(|i| format!("{}=127.0.0.1:{}", (b'a' + i as u8) as char, 7001 + i))
            .collect();
        let cluster = Cluster::parse_inline(&spec.join(",")).unwrap();
        let now = Instant::now();
        let mut net = Net {
            start: now,
            now,
            cluster,
            nodes: Vec::new(),
            wires: HashMap::new(),
            frozen: false,
            events: vec![Vec::new(); secrets.len()],
            dials: vec![Vec::new(); secrets.len()],
            secrets,
        };
        for i in 0..net.secrets.len() {
            net.nodes.push(Some(net.make_node(i)));
        }
        net
    }

    fn make_node(&self, i: usize) -> Node {
        let secret = self.secrets[i].clone();
        Node::new(
            self.cluster.clone(),
            NodeId(i as u16),
            secret,
            cfg(),
            self.now,
        )
        .unwrap()
    }

    fn node(&mut self, i: NodeId) -> &mut Node {
        self.nodes[i.index()].as_mut().expect("node is running")
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Executes actions until every node is quiet.
    fn pump(&mut self) {
        loop {
            let mut progress = false;
            for i in 0..self.nodes.len() {
                while let Some(a) = self.nodes[i].as_mut().and_then(Node::poll_action) {
                    progress = true;
                    self.apply(i, a);
                }
            }
            if !progress {
                return;
            }
        }
    }

    fn apply(&mut self, i: usize, action: Action) {
        let now = self.now;
        match action {
            Action::Dial { conn, addr, .. } => {
                let t = self.elapsed();
                self.dials[i].push(t);
                let j = self
                    .cluster
                    .ids()
                    .find(|&id| self.cluster.addr(id) == Some(addr));
                let from = self.cluster.addr(NodeId(i as u16)).unwrap();
                let accepted = j.and_then(|j| {
                    let target = self.nodes[j.index()].as_mut()?;
                    Some((j.index(), target.on_accepted(from, now)?))
                });
                let node = self.nodes[i].as_mut().unwrap();
                match accepted {
                    Some((j, tc)) => {
                        self.wires.insert((i, conn), (j, tc));
                        self.wires.insert((j, tc), (i, conn));
                        node.on_connected(conn, now);
                    }
                    None => node.on_closed(conn, "connection refused", now),
                }
            }
            Action::Send { conn, bytes } => {
                if let (false, Some(&(j, tc))) = (self.frozen, self.wires.get(&(i, conn))) {
                    if let Some(n) = self.nodes[j].as_mut() {
                        n.on_bytes(tc, &bytes, now);
                    }
                }
            }
            Action::Close { conn } => self.cut(i, conn, !self.frozen),
            Action::Emit(e) => {
                let t = self.elapsed();
                self.events[i].push((t, e));
            }
        }
    }

    /// Removes a wire; the other end sees the close if `tell`.
    fn cut(&mut self, i: usize, conn: ConnId, tell: bool) {
        if let Some((j, tc)) = self.wires.remove(&(i, conn)) {
            self.wires.remove(&(j, tc));
            if let (true, Some(n)) = (tell, self.nodes[j].as_mut()) {
                n.on_closed(tc, "connection closed by peer", self.now);
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += STEP;
            for n in self.nodes.iter_mut().flatten() {
                n.tick(self.now);
            }
            self.pump();
        }
    }

    /// Stops node `i` like a killed process: its connections close (FIN) unless `silent`.
    fn kill(&mut self, i: NodeId, silent: bool) {
        self.nodes[i.index()] = None;
        let conns: Vec<ConnId> = self
            .wires
            .keys()
            .filter(|(n, _)| *n == i.index())
            .map(|(_, c)| *c)
            .collect();
        for c in conns {
            self.cut(i.index(), c, !silent);
        }
        self.pump();
    }

    fn restart(&mut self, i: NodeId) {
        self.nodes[i.index()] = Some(self.make_node(i.index()));
        self.pump();
    }

    fn events(&self, i: NodeId) -> Vec<Event> {
        self.events[i.index()]
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    fn count(&self, i: NodeId, f: impl Fn(&Event) -> bool) -> usize {
        self.events[i.index()].iter().filter(|(_, e)| f(e)).count()
    }

    fn first_time(&self, i: NodeId, f: impl Fn(&Event) -> bool) -> Option<Duration> {
        self.events[i.index()]
            .iter()
            .find(|(_, e)| f(e))
            .map(|(t, _)| *t)
    }

    /// Every completion of request `id` seen by node `i`.
    fn completions(&self, i: NodeId, id: u64) -> Vec<Result<Message, RequestError>> {
        self.events[i.index()]
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Response { id: x, result, .. } if *x == id => Some(result.clone()),
                _ => None,
            })
            .collect()
    }

    fn clear_events(&mut self) {
        self.events.iter_mut().for_each(Vec::clear);
    }

    fn up(&self, i: NodeId, j: NodeId) -> bool {
        self.nodes[i.index()].as_ref().is_some_and(|n| n.is_up(j))
    }
}

fn is_up_event(e: &Event) -> bool {
    matches!(e, Event::PeerUp { .. })
}

fn is_down_event(e: &Event) -> bool {
    matches!(e, Event::PeerDown { .. })
}

fn ping(payload: &[u8]) -> Message {
    Message::Ping {
        payload: payload.to_vec(),
    }
}

fn connected_pair() -> Net {
    let mut net = Net::new(2);
    net.advance(ms(20));
    assert!(net.up(A, B) && net.up(B, A), "{:?}", net.events(A));
    net.clear_events();
    net
}

#[test]
fn lower_index_dials_and_both_come_up() {
    let mut net = Net::new(3);
    assert!(net.node(A).link(B).unwrap().dials());
    assert!(!net.node(B).link(A).unwrap().dials());
    net.advance(ms(20));
    for (x, y) in [(A, B), (A, C), (B, C)] {
        assert!(net.up(x, y) && net.up(y, x), "{x} {y}");
        assert_eq!(net.count(x, |e| *e == Event::PeerUp { node: y }), 1);
        assert_eq!(net.count(y, |e| *e == Event::PeerUp { node: x }), 1);
    }
    assert_eq!(net.dials[0].len(), 2, "a dials b and c");
    assert_eq!(net.dials[1].len(), 1, "b dials only c");
    assert!(net.dials[2].is_empty(), "c dials nobody");
    assert_eq!(net.wires.len(), 6, "one connection per pair");
}

#[test]
fn ping_pong_both_ways_answered_by_the_application() {
    let mut net = connected_pair();
    for (x, y, id) in [(A, B, 11), (B, A, 12)] {
        let now = net.now;
        net.node(x).request(y, id, ping(b"hi"), ms(1000), now);
        net.pump();
        let req = Event::Request {
            node: x,
            id,
            message: ping(b"hi"),
        };
        assert_eq!(net.events(y), vec![req]);
        net.advance(ms(50));
        assert!(net.completions(x, id).is_empty(), "no automatic Pong");
        let pong = Message::Pong {
            payload: b"hi".to_vec(),
        };
        net.node(y).respond(x, id, pong.clone(), now).unwrap();
        net.pump();
        assert_eq!(net.completions(x, id), vec![Ok(pong)]);
        net.clear_events();
    }
}

#[test]
fn one_way_messages_and_remote_errors() {
    let mut net = connected_pair();
    let now = net.now;
    let app = Message::App {
        kind: 7,
        payload: vec![1, 2],
    };
    net.node(A)
        .send(B, &Envelope::one_way(app.clone()), now)
        .unwrap();
    net.node(A).request(B, 5, app.clone(), ms(100), now);
    net.pump();
    let err = Message::Error {
        code: error_code::UNHANDLED,
        message: "no".into(),
    };
    net.node(B).respond(A, 5, err, now).unwrap();
    net.pump();
    assert_eq!(
        net.events(B)[0],
        Event::Message {
            node: A,
            message: app
        }
    );
    assert_eq!(
        net.completions(A, 5),
        vec![Err(RequestError::Remote {
            code: error_code::UNHANDLED,
            message: "no".into()
        })]
    );
}

#[test]
fn heartbeats_keep_an_idle_link_up() {
    let mut net = connected_pair();
    net.advance(ms(3000));
    assert!(net.up(A, B) && net.up(B, A));
    assert!(net.events(A).is_empty() && net.events(B).is_empty());
}

#[test]
fn silent_peer_is_lost_at_the_timeout_and_requests_fail_once() {
    let mut net = connected_pair();
    let now = net.now;
    net.node(A).request(B, 1, ping(b"x"), ms(10_000), now);
    net.node(A).request(B, 2, ping(b"y"), ms(10_000), now);
    net.pump();
    net.frozen = true;
    let frozen_at = net.elapsed();
    net.advance(ms(1000));
    let down = net.first_time(A, is_down_event).expect("PeerDown") - frozen_at;
    assert!(down >= ms(400) && down <= ms(510), "lost after {down:?}");
    assert_eq!(net.completions(A, 1), vec![Err(RequestError::PeerLost)]);
    assert_eq!(net.completions(A, 2), vec![Err(RequestError::PeerLost)]);
    let ev = net.events(A);
    let pos = |f: fn(&Event) -> bool| ev.iter().position(f).unwrap();
    assert!(pos(|e| matches!(e, Event::Response { .. })) < pos(is_down_event));
    assert!(net.first_time(B, is_down_event).is_some(), "b loses a too");
    assert!(!net.up(A, B) && !net.up(B, A));
    net.frozen = false;
    net.advance(ms(1000));
    assert!(
        net.up(A, B) && net.up(B, A),
        "reconnects after the partition"
    );
    assert_eq!(net.completions(A, 1).len(), 1, "still exactly once");
}

#[test]
fn request_timeout_then_late_response_is_ignored() {
    let mut net = connected_pair();
    let now = net.now;
    net.node(A).request(B, 9, ping(b""), ms(100), now);
    net.advance(ms(95));
    assert!(net.completions(A, 9).is_empty());
    net.advance(ms(10));
    assert_eq!(net.completions(A, 9), vec![Err(RequestError::Timeout)]);
    let now = net.now;
    let pong = Message::Pong { payload: vec![] };
    net.node(B).respond(A, 9, pong, now).unwrap();
    net.advance(ms(500));
    assert_eq!(net.completions(A, 9).len(), 1);
    assert!(net.up(A, B), "a late response is not a protocol error");
}

#[test]
fn requests_to_down_or_unknown_peers_and_bad_requests_complete_at_once() {
    let mut net = Net::new(2);
    let now = net.now;
    net.node(A).request(B, 1, ping(b""), ms(100), now);
    net.node(A).request(NodeId(9), 2, ping(b""), ms(100), now);
    net.node(A).request(A, 3, ping(b""), ms(100), now);
    net.pump();
    assert_eq!(net.completions(A, 1), vec![Err(RequestError::NotConnected)]);
    assert!(matches!(
        net.completions(A, 2)[..],
        [Err(RequestError::Invalid(_))]
    ));
    assert!(matches!(
        net.completions(A, 3)[..],
        [Err(RequestError::Invalid(_))]
    ));
    let one_way = Envelope::one_way(ping(b""));
    assert_eq!(
        net.node(A).send(B, &one_way, now),
        Err(RequestError::NotConnected)
    );
    net.advance(ms(20));
    let now = net.now;
    let huge = ping(&vec![0; crate::frame::MAX_PAYLOAD + 1]);
    net.node(A).request(B, 4, huge, ms(100), now);
    net.node(A).request(B, 5, ping(b""), ms(100), now);
    net.node(A).request(B, 5, ping(b""), ms(100), now);
    net.advance(ms(200));
    assert!(matches!(
        net.completions(A, 4)[..],
        [Err(RequestError::Invalid(_))]
    ));
    let five = net.completions(A, 5);
    assert_eq!(five.len(), 2, "the duplicate fails, the original times out");
    assert!(matches!(five[0], Err(RequestError::Invalid(_))));
    assert_eq!(five[1], Err(RequestError::Timeout));
    assert!(net.up(A, B));
}

#[test]
fn killed_peer_is_lost_at_once_and_comes_back_after_restart() {
    for victim in [A, B] {
        let other = if victim == A { B } else { A };
        let mut net = connected_pair();
        let now = net.now;
        net.node(other)
            .request(victim, 3, ping(b""), ms(10_000), now);
        net.pump();
        net.kill(victim, false);
        assert_eq!(net.completions(other, 3), vec![Err(RequestError::PeerLost)]);
        assert_eq!(net.count(other, is_down_event), 1);
        net.advance(ms(300));
        net.restart(victim);
        net.advance(ms(500));
        assert!(net.up(A, B) && net.up(B, A), "victim {victim}");
        assert_eq!(net.count(other, is_up_event), 1);
    }
}

#[test]
fn restarted_dialer_replaces_the_stale_connection() {
    let mut net = connected_pair();
    let now = net.now;
    net.node(B).request(A, 4, ping(b""), ms(10_000), now);
    net.pump();
    net.kill(A, true);
    net.restart(A);
    net.advance(ms(20));
    assert!(net.up(A, B) && net.up(B, A));
    let down = net.events(B).into_iter().find(is_down_event).unwrap();
    assert!(matches!(down, Event::PeerDown { reason, .. } if reason.contains("replaced")));
    assert_eq!(net.completions(B, 4), vec![Err(RequestError::PeerLost)]);
    assert_eq!(net.count(B, is_up_event), 1);
}

#[test]
fn reconnect_backoff_doubles_up_to_the_cap_and_resets() {
    let mut net = Net::new(2);
    net.kill(B, false);
    net.advance(ms(2000));
    let d = &net.dials[0];
    let gaps: Vec<u128> = d.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    assert!(gaps.len() >= 6, "{gaps:?}");
    assert_eq!(&gaps[..5], &[50, 100, 200, 400, 400], "{gaps:?}");
    assert_eq!(
        net.count(A, |e| matches!(e, Event::ConnectFailed { .. })),
        d.len()
    );
    net.restart(B);
    net.advance(ms(450));
    assert!(net.up(A, B));
    // After a successful link, a loss retries after the minimum again.
    net.dials[0].clear();
    net.kill(B, false);
    let t0 = net.elapsed();
    net.advance(ms(200));
    let gaps: Vec<u128> = net.dials[0].iter().map(|t| (*t - t0).as_millis()).collect();
    assert_eq!(&gaps[..2], &[50, 150], "{gaps:?}");
}

#[test]
fn wrong_secret_never_comes_up_and_both_sides_see_it() {
    let mut net = Net::with_secrets(vec![
        Secret::from_bytes(&[1; 32]),
        Secret::from_bytes(&[2; 32]),
    ]);
    net.advance(ms(1000));
    assert!(!net.up(A, B) && !net.up(B, A));
    assert_eq!(net.count(A, is_up_event) + net.count(B, is_up_event), 0);
    let a_fail = net
        .events(A)
        .into_iter()
        .find(|e| matches!(e, Event::ConnectFailed { .. }));
    let b_fail = net
        .events(B)
        .into_iter()
        .find(|e| matches!(e, Event::ConnectFailed { .. }));
    let Some(Event::ConnectFailed {
        node: Some(B),
        reason,
    }) = a_fail
    else {
        panic!("{a_fail:?}")
    };
    assert!(reason.contains("handshake"), "{reason}");
    let Some(Event::ConnectFailed { node: None, reason }) = b_fail else {
        panic!("{b_fail:?}")
    };
    assert!(reason.contains("handshake"), "{reason}");
    assert!(net.dials[0].len() >= 3, "keeps retrying");
}

#[test]
fn garbage_on_an_accepted_connection_is_dropped_and_links_stay_up() {
    let mut net = connected_pair();
    let now = net.now;
    let from = "127.0.0.1:9999".parse().unwrap();
    for garbage in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0, 48][..], &[0, 0][..]] {
        let conn = net.node(B).on_accepted(from, now).unwrap();
        net.node(B).on_bytes(conn, garbage, now);
        if garbage == [0, 48] {
            net.node(B).on_bytes(conn, &[0x42; 48], now);
        }
        let acts: Vec<Action> = std::iter::from_fn(|| net.node(B).poll_action()).collect();
        assert!(
            acts.contains(&Action::Close { conn }),
            "{garbage:?}: {acts:?}"
        );
        assert!(
            acts.iter().all(|a| !matches!(a, Action::Send { .. })),
            "nothing sent"
        );
        assert!(acts
            .iter()
            .any(|a| matches!(a, Action::Emit(Event::ConnectFailed { node: None, .. }))));
    }
    net.advance(ms(1000));
    assert!(net.up(A, B) && net.up(B, A));
}

#[test]
fn silent_accepted_connection_times_out() {
    let mut net = connected_pair();
    let now = net.now;
    let conn = net
        .node(B)
        .on_accepted("127.0.0.1:9999".parse().unwrap(), now)
        .unwrap();
    net.node(B).tick(now + ms(299));
    assert!(std::iter::from_fn(|| net.node(B).poll_action()).all(|a| a != Action::Close { conn }));
    net.node(B).tick(now + ms(300));
    let acts: Vec<Action> = std::iter::from_fn(|| net.node(B).poll_action()).collect();
    assert!(acts.contains(&Action::Close { conn }));
}

#[test]
fn dialer_handshake_timeout_and_too_many_handshakes() {
    let mut net = Net::new(2);
    // Connected TCP, but the peer never answers the handshake.
    net.frozen = true;
    net.advance(ms(310));
    let fail = net
        .events(A)
        .into_iter()
        .find(|e| matches!(e, Event::ConnectFailed { .. }));
    assert!(
        matches!(fail, Some(Event::ConnectFailed { node: Some(B), .. })),
        "{fail:?}"
    );
    let now = net.now;
    let from = "127.0.0.1:9999".parse().unwrap();
    let accepted = (0..MAX_ACCEPTED + 5)
        .filter_map(|_| net.node(B).on_accepted(from, now))
        .count();
    assert!(accepted <= MAX_ACCEPTED);
}

#[test]
fn bad_frame_on_an_up_link_closes_only_that_link() {
    let mut net = Net::new(3);
    net.advance(ms(20));
    net.clear_events();
    let conn = net.node(B).link(A).unwrap().conn().unwrap();
    let now = net.now;
    net.node(B).on_bytes(conn, &[0, 40], now);
    net.node(B).on_bytes(conn, &[7; 40], now);
    net.pump();
    let down = net.events(B).into_iter().find(is_down_event).unwrap();
    assert!(
        matches!(&down, Event::PeerDown { node: A, reason } if reason.contains("decrypt")),
        "{down:?}"
    );
    assert!(net.up(B, C) && net.up(C, B), "other links unaffected");
    net.advance(ms(200));
    assert!(net.up(A, B) && net.up(B, A), "reconnected");
}

fn hello(name: &str, index: u16) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: Some(Secret::from_bytes(&[1; 32]).cluster_id()),
        node_name: name.into(),
        node_index: index,
    }
}

#[test]
fn hello_admission_rules() {
    let mut net = Net::new(3);
    let local = net.node(B).local.clone();
    assert_eq!(local.check_hello(&hello("a", 0), None), Ok(A));
    assert_eq!(local.check_hello(&hello("c", 2), Some(C)), Ok(C));
    let refused = [
        (
            Hello {
                protocol_version: 2,
                ..hello("a", 0)
            },
            None,
            "protocol version",
        ),
        (
            Hello {
                cluster_id: Some([0; 8]),
                ..hello("a", 0)
            },
            None,
            "cluster id",
        ),
        (hello("b", 1), None, "itself"),
        (hello("b", 1), Some(C), "itself"),
        (hello("zz", 5), None, "unknown node"),
        (hello("a", 3), None, "claims index"),
        (hello("c", 2), None, "must wait to be dialed"),
        (hello("a", 0), Some(C), "expected node c"),
    ];
    for (h, expected, why) in refused {
        let err = local.check_hello(&h, expected).unwrap_err();
        assert!(err.contains(why), "{h:?}: {err}");
    }
    let no_id = Hello {
        cluster_id: None,
        ..hello("a", 0)
    };
    assert_eq!(local.check_hello(&no_id, None), Ok(A));
}

#[test]
fn refused_hello_reaches_the_dialer_as_a_reason() {
    // c's cluster file is stale: it thinks a has index 1, so a claims an index c rejects.
    let mut net = Net::new(2);
    let other =
        Cluster::parse_inline("x=127.0.0.1:7009,a=127.0.0.1:7001,b=127.0.0.1:7002").unwrap();
    let secret = net.secrets[1].clone();
    net.nodes[1] = Some(Node::new(other, NodeId(2), secret, cfg(), net.now).unwrap());
    net.advance(ms(30));
    assert!(!net.up(A, B));
    let fail = net
        .events(A)
        .into_iter()
        .find(|e| matches!(e, Event::ConnectFailed { .. }));
    let Some(Event::ConnectFailed { reason, .. }) = fail else {
        panic!("{fail:?}")
    };
    assert!(
        reason.contains("refused") && reason.contains("claims index"),
        "{reason}"
    );
}

#[test]
fn shutdown_completes_requests_and_closes() {
    let mut net = connected_pair();
    let now = net.now;
    net.node(A).request(B, 1, ping(b""), ms(1000), now);
    net.pump();
    net.node(A).shutdown();
    net.pump();
    assert_eq!(net.completions(A, 1), vec![Err(RequestError::Shutdown)]);
    assert!(net.wires.is_empty());
    assert!(matches!(
        net.node(A).link_state(B),
        Some(LinkState::Down { retry_at: None })
    ));
}
