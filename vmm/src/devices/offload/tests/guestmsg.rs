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

fn msg_payload(kind: u32, body: &[u8]) -> Vec<u8> {
    [&kind.to_le_bytes()[..], &[0; 4], body].concat()
}

fn reply_payload(status: i32, body: &[u8]) -> Vec<u8> {
    [&status.to_le_bytes()[..], &[0; 4], body].concat()
}

/// a's message reaches b's guest as an event; b's reply completes a's request.
fn exchange(status: i32, reply: &[u8]) -> (i32, u64, Vec<u8>) {
    let (mut a, mut b) = pair();
    let resp = a.guest_msg(5, B, 1, b"spawn-args");
    let (out, _) = a.dev.process_requests();
    assert!(a.used(0).is_empty(), "the request waits for the reply");
    let [Outbound::GuestMsg { node, id, payload }] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!((*node, payload), (B, &msg_payload(1, b"spawn-args")));
    b.dev.handle(Inbound::GuestMsgIn {
        src: A,
        request: 900,
        payload: payload.clone(),
    });
    let (ev, src, token, payload) = b.take_event();
    assert_eq!((ev, src), (protocol::EVENT_GUEST_MSG_IN, A));
    assert_eq!(payload, msg_payload(1, b"spawn-args"));
    let done = b.guest_msg_ret(6, token, status, reply);
    let (out, _) = b.dev.process_requests();
    assert_eq!(b.response(done).0, 0);
    let sent = if status == 0 { reply } else { b"" };
    assert_eq!(
        out,
        vec![Outbound::GuestMsgRet {
            node: A,
            request: 900,
            payload: reply_payload(status, sent)
        }]
    );
    let [Outbound::GuestMsgRet { payload, .. }] = &out[..] else {
        unreachable!()
    };
    let result = Ok(payload.clone());
    a.dev.handle(Inbound::GuestMsgResult { id: *id, result });
    let line = a.dev.stats().to_string();
    assert!(
        line.ends_with(" guest_msgs_out=1 guest_msgs_in=0 guest_msg_late=0 guest_msg_bad=0"),
        "{line}"
    );
    a.response(resp)
}

#[test]
fn a_guest_message_travels_to_the_peer_guest_and_its_reply_comes_back() {
    assert_eq!(exchange(0, b"pid=42"), (0, 5, b"pid=42".to_vec()));
}

#[test]
fn the_peer_guests_refusal_is_the_senders_status() {
    assert_eq!(exchange(-errno::ESRCH, b"x"), (-errno::ESRCH, 5, vec![]));
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

fn sent_ids(out: &[Outbound]) -> Vec<u64> {
    out.iter()
        .map(|o| match o {
            Outbound::GuestMsg { id, .. } => *id,
            o => panic!("{o:?}"),
        })
        .collect()
}

#[test]
fn a_lost_or_silent_peer_ends_the_wait_with_its_errno() {
    let (mut a, _) = pair();
    let r1 = a.guest_msg(1, B, 2, b"x");
    let r2 = a.guest_msg(2, B, 2, b"y");
    let (out, _) = a.dev.process_requests();
    let ids = sent_ids(&out);
    a.dev.handle(Inbound::GuestMsgResult {
        id: ids[0],
        result: Err(errno::ETIMEDOUT),
    });
    assert_eq!(a.response(r1).0, -errno::ETIMEDOUT);
    a.dev.handle(Inbound::PeerState {
        node: B,
        state: PeerState::Lost,
    });
    assert_eq!(a.response(r2).0, -errno::ECONNRESET);
    // The transport's own PeerLost outcome comes after: nothing waits for it any more.
    a.dev.handle(Inbound::GuestMsgResult {
        id: ids[1],
        result: Err(errno::ECONNRESET),
    });
    assert_eq!(a.dev.pending_guest_msgs(), 0);
}

#[test]
fn a_malformed_reply_completes_with_einval_and_is_counted() {
    let (mut a, _) = pair();
    let r = a.guest_msg(1, B, 2, b"x");
    let (out, _) = a.dev.process_requests();
    let id = sent_ids(&out)[0];
    a.dev.handle(Inbound::GuestMsgResult {
        id,
        result: Ok(vec![1, 2, 3]),
    });
    assert_eq!(a.response(r).0, -errno::EINVAL);
    assert_eq!(a.dev.stats().guest_msgs.bad, 1);
}

#[test]
fn malformed_messages_and_a_full_backlog_are_refused_to_the_sender() {
    let (_, mut b) = pair();
    let out = b.dev.handle(Inbound::GuestMsgIn {
        src: A,
        request: 3,
        payload: vec![1, 0, 0, 0, 9, 0, 0, 0],
    });
    let refusal = |request, status| Outbound::GuestMsgRet {
        node: A,
        request,
        payload: reply_payload(status, b""),
    };
    assert_eq!(out, vec![refusal(3, -errno::EINVAL)]);
    let room = (MAX_BACKLOG - b.dev.backlog.len()) as u64;
    for i in 0..room {
        let out = b.dev.handle(Inbound::GuestMsgIn {
            src: A,
            request: 10 + i,
            payload: msg_payload(2, b""),
        });
        assert!(out.is_empty(), "{out:?}");
    }
    let out = b.dev.handle(Inbound::GuestMsgIn {
        src: A,
        request: 4,
        payload: msg_payload(2, b""),
    });
    assert_eq!(out, vec![refusal(4, -errno::EBUSY)]);
    let s = b.dev.stats().guest_msgs;
    assert_eq!((s.bad, s.received), (1, room + 1));
}

#[test]
fn losing_the_sender_forgets_its_messages_and_held_back_events() {
    let (_, mut b) = pair();
    b.dev.handle(Inbound::GuestMsgIn {
        src: A,
        request: 1,
        payload: msg_payload(2, b""),
    });
    let (_, _, token, _) = b.take_event();
    b.dev.handle(Inbound::GuestMsgIn {
        src: A,
        request: 2,
        payload: msg_payload(2, b""),
    });
    b.dev.handle(Inbound::PeerState {
        node: A,
        state: PeerState::Lost,
    });
    let kind = protocol::EVENT_GUEST_MSG_IN.to_le_bytes();
    assert!(
        b.dev.backlog.iter().all(|ev| ev[..4] != kind),
        "the held-back message is gone"
    );
    let late = b.guest_msg_ret(1, token, 0, b"");
    let (out, _) = b.dev.process_requests();
    assert!(out.is_empty());
    assert_eq!(b.response(late).0, -errno::ENOENT);
}

#[test]
fn a_reset_answers_the_senders_waiting_on_this_guest() {
    let (_, mut b) = pair();
    b.dev.handle(Inbound::GuestMsgIn {
        src: A,
        request: 7,
        payload: msg_payload(1, b""),
    });
    b.dev.reset();
    let (out, _) = b.dev.process_requests();
    assert_eq!(
        out,
        vec![Outbound::GuestMsgRet {
            node: A,
            request: 7,
            payload: reply_payload(-errno::ECONNRESET, b"")
        }]
    );
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
        payload: msg_payload(2, b""),
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
