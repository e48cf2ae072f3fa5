//! Device-level tests of guest messages (GUEST_MSG / GUEST_MSG_IN / GUEST_MSG_RET): two
//! devices joined by a fake cluster link that carries the exchange as the transport's request
//! and response would, guests played by crafted virtqueues.

use super::*;

const A: u32 = 0;
const B: u32 = 1;

fn pair() -> (Rig, Rig) {
    let (mut a, mut b) = (rig_at(A), rig_at(B));
    for (r, peer) in [(&mut a, B), (&mut b, A)] {
        r.dev.handle(Inbound::PeerState {
            node: peer,
            state: PeerState::Up,
        });
    }
    (a, b)
}

impl Rig {
    fn guest_msg(&mut self, tag: u64, node: u32, kind: u32, body: &[u8]) -> u64 {
        let mut p = node.to_le_bytes().to_vec();
        p.extend_from_slice(&kind.to_le_bytes());
        p.extend_from_slice(body);
        self.send(&request(protocol::REQ_GUEST_MSG, tag, &p))
    }

    fn guest_msg_ret(&mut self, tag: u64, token: u64, status: i32, body: &[u8]) -> u64 {
        let mut p = token.to_le_bytes().to_vec();
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(body);
        self.send(&request(protocol::REQ_GUEST_MSG_RET, tag, &p))
    }

    /// The next event other than `PEER_STATE`: (type, src, token, payload).
    fn take_event(&mut self) -> (u32, u32, u64, Vec<u8>) {
        loop {
            let e = self.one_event();
            if e.0 != protocol::EVENT_PEER_STATE {
                return e;
            }
        }
    }

    /// Posts an event buffer; returns (type, src, token, payload) of the event written.
    fn one_event(&mut self) -> (u32, u32, u64, Vec<u8>) {
        let ev = self.buf(&[], 0);
        self.post(1, &[(ev, 4096 + 24, true)]);
        self.dev.process_event_buffers();
        let at = |o| GuestAddress(ev + o);
        let len: u32 = self.mem.read_obj(at(16)).unwrap();
        let mut body = vec![0u8; len as usize];
        self.mem.read_slice(&mut body, at(24)).unwrap();
        let kind = self.mem.read_obj(at(0)).unwrap();
        (
            kind,
            self.mem.read_obj(at(4)).unwrap(),
            self.mem.read_obj(at(8)).unwrap(),
            body,
        )
    }
}

/// a's message reaches b's guest as an event; b's reply completes a's request.
fn exchange(status: i32, reply: &[u8]) -> (i32, u64, Vec<u8>) {
    let (mut a, mut b) = pair();
    let resp = a.guest_msg(5, B, 1, b"spawn-args");
    let (out, _) = a.dev.process_requests();
    assert!(a.used(0).is_empty(), "the request waits for the reply");
    let [Outbound::GuestMsg {
        node,
        id,
        kind,
        body,
    }] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!((*node, *kind, body.as_slice()), (B, 1, &b"spawn-args"[..]));
    b.dev.handle(Inbound::GuestMsgIn {
        src: A,
        request: 900,
        kind: *kind,
        body: body.clone(),
    });
    let (ev, src, token, payload) = b.take_event();
    assert_eq!((ev, src), (protocol::EVENT_GUEST_MSG_IN, A));
    assert_eq!(&payload[..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&payload[8..], b"spawn-args");
    let done = b.guest_msg_ret(6, token, status, reply);
    let (out, _) = b.dev.process_requests();
    assert_eq!(b.response(done).0, 0);
    assert_eq!(
        out,
        vec![Outbound::GuestMsgRet {
            node: A,
            request: 900,
            status,
            body: reply.to_vec()
        }]
    );
    let result = if status == 0 {
        Ok(reply.to_vec())
    } else {
        Err(-status)
    };
    a.dev.handle(Inbound::GuestMsgResult { id: *id, result });
    a.response(resp)
}

#[test]
fn a_guest_message_travels_to_the_peer_guest_and_its_reply_comes_back() {
    assert_eq!(exchange(0, b"pid=42"), (0, 5, b"pid=42".to_vec()));
}

#[test]
fn the_peer_guests_refusal_is_the_senders_status() {
    assert_eq!(exchange(-errno::ESRCH, b""), (-errno::ESRCH, 5, vec![]));
}

#[test]
fn unreachable_and_down_nodes_are_refused_at_once() {
    let mut a = rig_at(A);
    let to_self = a.guest_msg(1, A, 1, b"");
    let unknown = a.guest_msg(2, 9, 1, b"");
    let down = a.guest_msg(3, B, 1, b"");
    let (out, _) = a.dev.process_requests();
    assert!(out.is_empty());
    assert_eq!(a.response(to_self).0, -errno::EHOSTUNREACH);
    assert_eq!(a.response(unknown).0, -errno::EHOSTUNREACH);
    assert_eq!(a.response(down).0, -errno::ENOTCONN);
}

#[test]
fn a_lost_or_silent_peer_ends_the_wait_with_its_errno() {
    let (mut a, _) = pair();
    let r1 = a.guest_msg(1, B, 2, b"x");
    let r2 = a.guest_msg(2, B, 2, b"y");
    let (out, _) = a.dev.process_requests();
    let ids: Vec<u64> = out
        .iter()
        .map(|o| match o {
            Outbound::GuestMsg { id, .. } => *id,
            o => panic!("{o:?}"),
        })
        .collect();
    for (id, e) in ids.iter().zip([errno::ETIMEDOUT, errno::ECONNRESET]) {
        a.dev.handle(Inbound::GuestMsgResult {
            id: *id,
            result: Err(e),
        });
    }
    assert_eq!(a.response(r1).0, -errno::ETIMEDOUT);
    assert_eq!(a.response(r2).0, -errno::ECONNRESET);
}

#[test]
fn tokens_answer_only_their_own_kind_of_exchange_and_once() {
    let (_, mut b) = pair();
    b.dev.handle(Inbound::PingIn {
        src: A,
        request: 1,
        payload: vec![],
    });
    b.dev.handle(Inbound::GuestMsgIn {
        src: A,
        request: 2,
        kind: 2,
        body: vec![],
    });
    let (_, _, ping_token, _) = b.take_event();
    let (_, _, msg_token, _) = b.take_event();
    let wrong = b.guest_msg_ret(1, ping_token, 0, b"");
    let right = b.guest_msg_ret(2, msg_token, 0, b"");
    let again = b.guest_msg_ret(3, msg_token, 0, b"");
    let too_big = b.guest_msg_ret(4, msg_token, 0, &[0; protocol::MAX_GUEST_REPLY + 1]);
    let (out, _) = b.dev.process_requests();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        b.response(wrong).0,
        -errno::ENOENT,
        "a ping token is no message token"
    );
    assert_eq!(b.response(right).0, 0);
    assert_eq!(b.response(again).0, -errno::ENOENT, "a token answers once");
    // Too long for a request payload at all: refused by the parser.
    assert!(b.response(too_big).0 < 0);
}
