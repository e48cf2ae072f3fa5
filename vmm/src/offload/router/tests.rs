//! Unit tests of the router: two routers (a = node 0, b = node 1, c = node 2 unused) joined by
//! hand, every message carried explicitly.

use super::*;

const A: u32 = 0;
const B: u32 = 1;

fn record(home: u32, nr: u64) -> CallRecord {
    CallRecord {
        home,
        tid: 100,
        nr,
        args: [nr, 1, 2, 3, 4, 5],
    }
}

/// Routers for nodes a and b of a three-node cluster, a and b connected.
fn pair() -> (Router<&'static str>, Router<&'static str>) {
    let mut a = Router::new(A, 3);
    let mut b = Router::new(B, 3);
    a.set_peer_up(B, true);
    b.set_peer_up(A, true);
    (a, b)
}

fn wire_of(o: &Outgoing) -> Vec<u8> {
    wire::encode(&o.msg)
}

/// Carries a CALL from `a` to `b`; returns b's token.
fn deliver_call(b: &mut Router<&'static str>, call: &Outgoing) -> u64 {
    assert_eq!(call.node, B);
    match b.receive(A, &wire_of(call)) {
        Ok(Arrival::Call { src: A, token, .. }) => token,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_call_travels_to_its_home_and_back() {
    let (mut a, mut b) = pair();
    let call = a.call(record(B, 39), "req").unwrap();
    assert_eq!(a.pending_calls(), 1);
    let token = match b.receive(A, &wire_of(&call)).unwrap() {
        Arrival::Call { src, token, record } => {
            assert_eq!((src, record.nr, record.tid), (A, 39, 100));
            token
        }
        other => panic!("unexpected {other:?}"),
    };
    let ret = b.answer(token, 0, 4242).unwrap();
    assert_eq!(ret.node, A);
    assert_eq!(b.inbound_calls(), 0);
    assert_eq!(
        a.receive(B, &wire_of(&ret)).unwrap(),
        Arrival::Return {
            req: "req",
            status: 0,
            ret: 4242
        }
    );
    assert_eq!(a.pending_calls(), 0);
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.calls_out, sa.calls_in, sb.calls_in), (1, 0, 1));
    assert_eq!((sa.bytes_out, sa.bytes_in), (80, 32));
    assert_eq!((sb.bytes_out, sb.bytes_in), (32, 80));
    assert_eq!(sa.bad + sb.bad, 0);
}

#[test]
fn concurrent_calls_complete_out_of_order() {
    let (mut a, mut b) = pair();
    let names = ["r0", "r1", "r2", "r3"];
    let tokens: Vec<u64> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let c = a.call(record(B, i as u64), *n).unwrap();
            deliver_call(&mut b, &c)
        })
        .collect();
    let mut done = vec![];
    for &i in &[2usize, 0, 3, 1] {
        let ret = b.answer(tokens[i], 0, i as i64 * 10).unwrap();
        match a.receive(B, &wire_of(&ret)).unwrap() {
            Arrival::Return {
                req,
                status: 0,
                ret,
            } => done.push((req, ret)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(done, vec![("r2", 20), ("r0", 0), ("r3", 30), ("r1", 10)]);
    assert_eq!(a.pending_calls(), 0);
}

#[test]
fn unknown_node_self_and_down_peer_are_refused() {
    let (mut a, _) = pair();
    let err = |r: Result<Outgoing, (&str, RouterError)>| r.unwrap_err().1.errno();
    assert_eq!(err(a.call(record(A, 1), "self")), errno::EHOSTUNREACH);
    assert_eq!(err(a.call(record(9, 1), "unknown")), errno::EHOSTUNREACH);
    assert_eq!(err(a.call(record(2, 1), "down")), errno::ENOTCONN);
    let (req, _) = a.call(record(2, 1), "back").unwrap_err();
    assert_eq!(req, "back", "a refused request comes back to the device");
    assert_eq!(a.pending_calls(), 0);
    assert_eq!(a.stats().calls_out, 0);
}

#[test]
fn home_lost_resets_every_pending_call_to_it() {
    let mut a: Router<u32> = Router::new(A, 3);
    a.set_peer_up(B, true);
    a.set_peer_up(2, true);
    for i in 0..5 {
        a.call(record(B, i), i as u32).unwrap();
    }
    a.call(record(2, 9), 99).unwrap();
    let loss = a.set_peer_up(B, false);
    assert_eq!(
        loss.reset,
        vec![0, 1, 2, 3, 4],
        "N pending → N resets, in call order"
    );
    assert!(loss.expired.is_empty());
    assert_eq!(a.pending_calls(), 1, "the call to node 2 still waits");
    assert_eq!(
        a.call(record(B, 1), 7).unwrap_err().1,
        RouterError::NotConnected(B)
    );
}

#[test]
fn caller_lost_expires_its_tokens_and_nothing_is_sent() {
    let (mut a, mut b) = pair();
    let c1 = a.call(record(B, 1), "x").unwrap();
    let c2 = a.call(record(B, 2), "y").unwrap();
    let t1 = deliver_call(&mut b, &c1);
    let t2 = deliver_call(&mut b, &c2);
    let loss = b.set_peer_up(A, false);
    assert_eq!(loss.expired, vec![t1, t2]);
    assert!(loss.reset.is_empty());
    assert!(!b.has_token(t1));
    assert_eq!(b.answer(t1, 0, 5), Err(RouterError::UnknownToken(t1)));
    assert_eq!(b.answer(t2, 0, 5).unwrap_err().errno(), errno::ENOENT);
    assert_eq!(b.stats().bytes_out, 0, "no RET went out");
    // A reconnected caller's new call gets a fresh token and works.
    b.set_peer_up(A, true);
    let c3 = a.call(record(B, 3), "z").unwrap();
    let t3 = deliver_call(&mut b, &c3);
    assert!(t3 > t2);
    assert!(b.answer(t3, 0, 1).is_ok());
}

#[test]
fn answers_with_bad_tokens_or_statuses_are_refused() {
    let (mut a, mut b) = pair();
    assert_eq!(b.answer(0, 0, 0), Err(RouterError::UnknownToken(0)));
    assert_eq!(b.answer(77, 0, 0), Err(RouterError::UnknownToken(77)));
    let t = deliver_call(&mut b, &a.call(record(B, 1), "x").unwrap());
    assert_eq!(b.answer(t, 1, 0), Err(RouterError::BadStatus(1)));
    assert!(b.has_token(t), "a refused answer keeps the call");
    let ret = b.answer(t, -errno::ESRCH, 0).unwrap();
    assert_eq!(b.answer(t, 0, 0), Err(RouterError::UnknownToken(t)), "once");
    assert!(matches!(
        a.receive(B, &wire_of(&ret)),
        Ok(Arrival::Return { status, .. }) if status == -errno::ESRCH
    ));
}

#[test]
fn more_than_256_outstanding_calls_get_ebusy() {
    let (mut a, _) = pair();
    for i in 0..MAX_OUTSTANDING {
        a.call(record(B, i as u64), "r").unwrap();
    }
    let (_, e) = a.call(record(B, 0), "over").unwrap_err();
    assert_eq!((e.clone(), e.errno()), (RouterError::Busy, errno::EBUSY));
    assert_eq!(a.pending_calls(), MAX_OUTSTANDING);
}

#[test]
fn a_flooding_caller_is_answered_ebusy_by_the_home() {
    let (_, mut b) = pair();
    for seq in 1..=MAX_INBOUND_PER_NODE as u64 {
        let m = wire::encode(&SysMsg::Call {
            seq,
            record: record(B, 0),
        });
        assert!(matches!(b.receive(A, &m), Ok(Arrival::Call { .. })));
    }
    let m = wire::encode(&SysMsg::Call {
        seq: 1000,
        record: record(B, 0),
    });
    match b.receive(A, &m) {
        Ok(Arrival::Refused(o)) => assert_eq!(
            o.msg,
            SysMsg::Ret {
                seq: 1000,
                status: -errno::EBUSY,
                ret: 0
            }
        ),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(b.inbound_calls(), MAX_INBOUND_PER_NODE);
}

#[test]
fn faulty_peer_messages_are_counted_and_change_nothing() {
    let (mut a, mut b) = pair();
    let call = a.call(record(B, 1), "x").unwrap();
    let t = deliver_call(&mut b, &call);
    // Repeated CALL.
    assert_eq!(
        b.receive(A, &wire_of(&call)),
        Err(RouterError::DuplicateCall { node: A, seq: 1 })
    );
    // CALL for another home; CALL from a node that is not up; garbage.
    let other = wire::encode(&SysMsg::Call {
        seq: 2,
        record: record(2, 1),
    });
    assert!(matches!(
        b.receive(A, &other),
        Err(RouterError::WrongHome { home: 2, .. })
    ));
    assert!(matches!(
        b.receive(2, &wire_of(&call)),
        Err(RouterError::CallerDown { node: 2 })
    ));
    assert!(matches!(
        b.receive(A, &[1, 2, 3]),
        Err(RouterError::Wire { node: A, .. })
    ));
    // RET for an unknown seq, and from a node that was not the callee.
    let ret = |seq| {
        wire::encode(&SysMsg::Ret {
            seq,
            status: 0,
            ret: 0,
        })
    };
    assert_eq!(
        a.receive(B, &ret(99)),
        Err(RouterError::UnknownSeq { node: B, seq: 99 })
    );
    assert_eq!(
        a.receive(2, &ret(1)),
        Err(RouterError::WrongCallee {
            node: 2,
            seq: 1,
            callee: B
        })
    );
    assert_eq!(a.pending_calls(), 1, "the real call still waits");
    assert_eq!((a.stats().bad, b.stats().bad), (2, 4));
    // The genuine answer still completes it; a second copy is an unknown seq.
    let r = wire_of(&b.answer(t, 0, 3).unwrap());
    assert!(matches!(
        a.receive(B, &r),
        Ok(Arrival::Return { ret: 3, .. })
    ));
    assert!(matches!(
        a.receive(B, &r),
        Err(RouterError::UnknownSeq { .. })
    ));
}

#[test]
fn a_call_the_transport_refused_fails_once() {
    let (mut a, _) = pair();
    let call = a.call(record(B, 1), "x").unwrap();
    assert_eq!(a.send_failed(2, &call.msg), None, "wrong node");
    assert_eq!(a.send_failed(B, &call.msg), Some("x"));
    assert_eq!(a.send_failed(B, &call.msg), None);
    let ret = SysMsg::Ret {
        seq: 1,
        status: 0,
        ret: 0,
    };
    assert_eq!(a.send_failed(B, &ret), None);
    assert_eq!(a.pending_calls(), 0);
}

#[test]
fn reset_drops_waiting_requests_and_answers_callers_esrch() {
    let (mut a, mut b) = pair();
    let call = a.call(record(B, 1), "x").unwrap();
    let t = deliver_call(&mut b, &call);
    b.call(record(A, 5), "mine").unwrap();
    let out = b.reset();
    assert_eq!(
        out,
        vec![Outgoing {
            node: A,
            msg: SysMsg::Ret {
                seq: 1,
                status: -errno::ESRCH,
                ret: 0
            }
        }]
    );
    assert_eq!((b.pending_calls(), b.inbound_calls()), (0, 0));
    assert!(!b.has_token(t));
    assert!(matches!(
        a.receive(B, &wire_of(&out[0])),
        Ok(Arrival::Return { req: "x", .. })
    ));
    // The same seq may be called again after a reset (the caller's table was cleared too).
    assert!(matches!(
        b.receive(A, &wire_of(&call)),
        Ok(Arrival::Call { .. })
    ));
}
