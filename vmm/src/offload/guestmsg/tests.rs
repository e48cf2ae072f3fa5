//! Unit tests of the guest-message state machine: two nodes' machines joined by hand, time
//! passed in.

use super::*;

const A: u32 = 0;
const B: u32 = 1;

/// Node `me` of a three-node cluster with every other node up.
fn node<R>(me: u32) -> GuestMsgs<R> {
    let mut m = GuestMsgs::new(me, 3);
    for n in 0..3 {
        if n != me {
            m.set_peer_up(n, true);
        }
    }
    m
}

fn t0() -> Instant {
    Instant::now()
}

fn reply(status: i32, reserved: u32, body: &[u8]) -> Vec<u8> {
    let mut p = status.to_le_bytes().to_vec();
    p.extend_from_slice(&reserved.to_le_bytes());
    p.extend_from_slice(body);
    p
}

fn delivered(a: Arrival) -> (u64, Vec<u8>) {
    match a {
        Arrival::Deliver { token, payload } => (token, payload),
        a => panic!("{a:?}"),
    }
}

fn refused(a: Arrival) -> (Reply, GuestMsgError) {
    match a {
        Arrival::Refused { reply, why } => (reply, why),
        a => panic!("{a:?}"),
    }
}

#[test]
fn a_message_and_its_reply_travel_end_to_end() {
    let (mut a, mut b, now) = (node(A), node::<()>(B), t0());
    let (id, payload) = a.send(B, 1, b"spawn", "req").unwrap();
    assert_eq!(
        payload,
        [&1u32.to_le_bytes()[..], &[0; 4], b"spawn"].concat()
    );
    let (token, event) = delivered(b.receive(A, 77, &payload, true, now));
    assert_eq!(event, payload, "the event payload is the wire payload");
    assert_ne!(token & TOKEN_BIT, 0);
    let r = b.answer(token, 0, b"pid=42", now).unwrap();
    assert_eq!((r.node, r.request), (A, 77));
    let done = a.complete(id, Ok(r.payload)).unwrap();
    assert_eq!(done.req, "req");
    assert_eq!(done.result, Ok(b"pid=42".to_vec()));
    assert_eq!(done.malformed, None);
    assert_eq!(a.outstanding() + b.inbound(), 0);
    assert_eq!(a.stats().sent, 1);
    assert_eq!(b.stats().received, 1);
    assert_eq!(
        b.stats().to_string(),
        "guest_msgs_out=0 guest_msgs_in=1 guest_msg_late=0 guest_msg_bad=0"
    );
}

#[test]
fn the_peers_refusal_comes_back_without_a_body() {
    let (mut a, mut b, now) = (node(A), node::<()>(B), t0());
    let (id, payload) = a.send(B, 2, b"", "req").unwrap();
    let (token, _) = delivered(b.receive(A, 1, &payload, true, now));
    let r = b.answer(token, -errno::ESRCH, b"ignored", now).unwrap();
    assert_eq!(r.payload, reply(-errno::ESRCH, 0, b""));
    assert_eq!(
        a.complete(id, Ok(r.payload)).unwrap().result,
        Err(errno::ESRCH)
    );
}

#[test]
fn sends_are_refused_for_self_unknown_down_too_many_and_too_large() {
    let mut a = node(A);
    a.set_peer_up(2, false);
    let err = |a: &mut GuestMsgs<_>, n, len| a.send(n, 1, &vec![0; len], ()).unwrap_err().1;
    assert_eq!(err(&mut a, A, 0), GuestMsgError::Unreachable(A));
    assert_eq!(err(&mut a, 3, 0), GuestMsgError::Unreachable(3));
    assert_eq!(err(&mut a, 2, 0), GuestMsgError::NotConnected(2));
    assert_eq!(err(&mut a, B, MAX_GUEST_MSG + 1).errno(), errno::EMSGSIZE);
    for _ in 0..MAX_OUTSTANDING_MSGS {
        assert!(a.send(B, 1, &[0; MAX_GUEST_MSG], ()).is_ok());
    }
    assert_eq!(err(&mut a, B, 0).errno(), errno::EBUSY);
    assert_eq!(a.stats().sent, MAX_OUTSTANDING_MSGS as u64);
}

#[test]
fn transport_failures_complete_once_with_their_errno() {
    let mut a = node(A);
    let (id, _) = a.send(B, 1, b"", "req").unwrap();
    let done = a.complete(id, Err(errno::ETIMEDOUT)).unwrap();
    assert_eq!(done.result, Err(errno::ETIMEDOUT));
    assert!(a.complete(id, Ok(reply(0, 0, b""))).is_none(), "once");
}

#[test]
fn a_reply_after_the_deadline_is_dropped_and_counted() {
    let (mut b, now) = (node::<()>(B), t0());
    let payload = encode(1, b"x");
    let (early, _) = delivered(b.receive(A, 1, &payload, true, now));
    let (late, _) = delivered(b.receive(A, 2, &payload, true, now));
    let just_before = now + GUEST_MSG_TIMEOUT - Duration::from_millis(1);
    assert!(b.answer(early, 0, b"", just_before).is_ok());
    let at = now + GUEST_MSG_TIMEOUT;
    assert_eq!(b.answer(late, 0, b"", at), Err(GuestMsgError::Late(late)));
    assert_eq!(b.stats().late, 1);
    assert_eq!(
        b.answer(late, 0, b"", at).unwrap_err().errno(),
        errno::ENOENT,
        "an expired token stays gone"
    );
}

#[test]
fn answers_check_token_status_and_size_first() {
    let (mut b, now) = (node::<()>(B), t0());
    let (token, _) = delivered(b.receive(A, 1, &encode(1, b""), true, now));
    assert_eq!(
        b.answer(token ^ 1, 0, b"", now),
        Err(GuestMsgError::UnknownToken(token ^ 1))
    );
    assert_eq!(b.answer(1, 0, b"", now).unwrap_err().errno(), errno::ENOENT);
    assert_eq!(
        b.answer(token, 5, b"", now).unwrap_err().errno(),
        errno::EINVAL
    );
    let big = vec![0; MAX_GUEST_REPLY + 1];
    assert_eq!(
        b.answer(token, 0, &big, now).unwrap_err().errno(),
        errno::EMSGSIZE
    );
    assert!(
        b.answer(token, 0, &big[1..], now).is_ok(),
        "refusals kept the token"
    );
}

#[test]
fn malformed_requests_are_refused_with_einval_and_counted() {
    let (mut b, now) = (node::<()>(B), t0());
    let mut bad_reserved = encode(1, b"");
    bad_reserved[4] = 1;
    let too_long = encode(1, &[0; MAX_GUEST_MSG + 1]);
    for p in [vec![], vec![1, 0, 0], bad_reserved, too_long] {
        let (r, why) = refused(b.receive(A, 9, &p, true, now));
        assert!(matches!(why, GuestMsgError::Malformed(_)), "{why:?}");
        assert_eq!((r.node, r.request), (A, 9));
        assert_eq!(r.payload, reply(-errno::EINVAL, 0, b""));
    }
    assert_eq!((b.stats().bad, b.stats().received, b.inbound()), (4, 0, 0));
}

#[test]
fn malformed_replies_complete_with_einval_and_are_counted() {
    let mut a = node(A);
    let bad = [
        vec![0, 0, 0],
        reply(0, 1, b""),
        reply(3, 0, b""),
        reply(-5, 0, b"body"),
        reply(0, 0, &[0; MAX_GUEST_REPLY + 1]),
    ];
    for p in bad {
        let (id, _) = a.send(B, 1, b"", ()).unwrap();
        let done = a.complete(id, Ok(p)).unwrap();
        assert_eq!(done.result, Err(errno::EINVAL));
        assert!(done.malformed.is_some());
    }
    assert_eq!(a.stats().bad, 5);
}

#[test]
fn no_room_and_a_full_table_refuse_with_ebusy_until_tokens_expire() {
    let (mut b, now) = (node::<()>(B), t0());
    let p = encode(1, b"");
    let (r, why) = refused(b.receive(A, 1, &p, false, now));
    assert_eq!(
        (why, r.payload),
        (GuestMsgError::NoRoom, reply(-errno::EBUSY, 0, b""))
    );
    for i in 0..MAX_INBOUND_MSGS as u64 {
        delivered(b.receive(A, 10 + i, &p, true, now));
    }
    let (_, why) = refused(b.receive(A, 2, &p, true, now));
    assert_eq!(why, GuestMsgError::InboundFull);
    let later = now + GUEST_MSG_TIMEOUT;
    delivered(b.receive(A, 3, &p, true, later));
    assert_eq!(b.inbound(), 1, "the expired tokens made room");
    assert_eq!(b.stats().received, MAX_INBOUND_MSGS as u64 + 3);
}

#[test]
fn losing_a_node_resets_messages_to_it_and_expires_its_tokens() {
    let (mut a, now) = (node(A), t0());
    let (to_b1, _) = a.send(B, 1, b"", "b1").unwrap();
    let (_, _) = a.send(2, 1, b"", "c").unwrap();
    let (_, _) = a.send(B, 1, b"", "b2").unwrap();
    let (from_b, _) = delivered(a.receive(B, 5, &encode(2, b""), true, now));
    let (from_c, _) = delivered(a.receive(2, 6, &encode(2, b""), true, now));
    let loss = a.set_peer_up(B, false);
    assert_eq!(loss.reset, vec!["b1", "b2"]);
    assert_eq!(loss.expired, vec![from_b]);
    assert!(
        a.complete(to_b1, Err(errno::ECONNRESET)).is_none(),
        "already ended"
    );
    assert_eq!(
        a.answer(from_b, 0, b"", now),
        Err(GuestMsgError::UnknownToken(from_b))
    );
    assert!(a.answer(from_c, 0, b"", now).is_ok());
    assert_eq!(
        a.send(B, 1, b"", "again").unwrap_err().1,
        GuestMsgError::NotConnected(B)
    );
    assert_eq!(a.outstanding(), 1);
    let empty = a.set_peer_up(9, false);
    assert!(empty.reset.is_empty() && empty.expired.is_empty());
}

#[test]
fn a_reset_forgets_waiting_messages_and_answers_waiting_senders() {
    let (mut a, now) = (node(A), t0());
    let (id, _) = a.send(B, 1, b"", "req").unwrap();
    let (token, _) = delivered(a.receive(2, 8, &encode(1, b""), true, now));
    let replies = a.reset();
    assert_eq!(
        replies,
        vec![Reply {
            node: 2,
            request: 8,
            payload: reply(-errno::ECONNRESET, 0, b"")
        }]
    );
    assert!(a.complete(id, Ok(reply(0, 0, b""))).is_none());
    assert!(a.answer(token, 0, b"", now).is_err());
    assert_eq!(a.outstanding() + a.inbound(), 0);
}

#[test]
fn decoding_never_panics_on_any_short_or_odd_payload() {
    let (mut a, mut b, now) = (node(A), node::<()>(B), t0());
    for len in 0..24 {
        for fill in [0u8, 0xff] {
            let p = vec![fill; len];
            let _ = b.receive(A, len as u64, &p, true, now);
            let (id, _) = a.send(B, 0, b"", ()).unwrap();
            let _ = a.complete(id, Ok(p));
        }
    }
}
