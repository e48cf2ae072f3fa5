//! Device-level tests of forwarded syscalls: two devices (a = node 0, b = node 1) joined by a
//! fake cluster link that carries `Outbound::Syscall` as the transport would (encoded App
//! payloads), guests played by crafted virtqueues.

use super::*;
use crate::offload::wire::{self, CallRecord, SysMsg};

const A: u32 = 0;
const B: u32 = 1;

/// Devices a and b, each seeing the other up.
fn pair() -> (Rig, Rig) {
    let mut a = rig_at(A);
    let mut b = rig_at(B);
    up(&mut a, B);
    up(&mut b, A);
    (a, b)
}

fn up(r: &mut Rig, node: u32) {
    r.dev.handle(Inbound::PeerState {
        node,
        state: PeerState::Up,
    });
}

fn record(home: u32, nr: u64) -> CallRecord {
    CallRecord {
        home,
        tid: 321,
        nr,
        args: [1, 2, 3, 4, 5, nr],
    }
}

/// The fake cluster link: carries every `Outbound::Syscall` of node `from` to `to` (node
/// `to_index`) as the transport would; returns what `to` sends in answer.
fn carry(from: u32, out: Vec<Outbound>, to: &mut Rig, to_index: u32) -> Vec<Outbound> {
    let mut answers = vec![];
    for o in out {
        let Outbound::Syscall { node, msg } = o else {
            panic!("unexpected {o:?}")
        };
        assert_eq!(node, to_index, "{msg:?} goes to the wrong node");
        let payload = wire::encode(&msg);
        answers.extend(to.dev.handle(Inbound::Syscall { src: from, payload }));
    }
    answers
}

impl Rig {
    fn syscall(&mut self, tag: u64, rec: &CallRecord) -> u64 {
        self.send(&request(protocol::REQ_SYSCALL, tag, &rec.encode()))
    }

    fn syscall_ret(&mut self, tag: u64, token: u64, status: i32, ret: i64) -> u64 {
        let mut p = token.to_le_bytes().to_vec();
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p.extend_from_slice(&ret.to_le_bytes());
        self.send(&request(protocol::REQ_SYSCALL_RET, tag, &p))
    }

    /// Posts one event buffer and returns the event written into it: (type, src, token,
    /// payload), or None if nothing was delivered.
    fn next_event(&mut self) -> Option<(u32, u32, u64, Vec<u8>)> {
        let before = self.used(1).len();
        let ev = self.buf(&[], 0);
        self.post(1, &[(ev, 4096 + 24, true)]);
        self.dev.process_event_buffers();
        if self.used(1).len() == before {
            return None;
        }
        let at = |o| GuestAddress(ev + o);
        let len: u32 = self.mem.read_obj(at(16)).unwrap();
        let mut body = vec![0u8; len as usize];
        self.mem.read_slice(&mut body, at(24)).unwrap();
        Some((
            self.mem.read_obj(at(0)).unwrap(),
            self.mem.read_obj(at(4)).unwrap(),
            self.mem.read_obj(at(8)).unwrap(),
            body,
        ))
    }

    /// The next `SYSCALL_IN` event's token and record (skipping other events).
    fn next_call(&mut self) -> (u32, u64, CallRecord) {
        loop {
            let (kind, src, token, body) = self.next_event().expect("an event");
            if kind == protocol::EVENT_SYSCALL_IN {
                return (src, token, CallRecord::decode(&body).unwrap());
            }
        }
    }
}

#[test]
fn a_syscall_travels_to_the_home_guest_and_back() {
    let (mut a, mut b) = pair();
    let rec = record(B, 0);
    let resp = a.syscall(7, &rec);
    let (out, _) = a.dev.process_requests();
    assert!(a.used(0).is_empty(), "the request waits for its home");
    assert_eq!(a.dev.pending_syscalls(), 1);
    assert!(carry(A, out, &mut b, B).is_empty());
    let (src, token, got) = b.next_call();
    assert_eq!((src, got), (A, rec));
    let done = b.syscall_ret(3, token, 0, 1234);
    let (out, _) = b.dev.process_requests();
    assert_eq!(b.response(done), (0, 3, vec![]));
    assert!(carry(B, out, &mut a, A).is_empty());
    assert_eq!(a.response(resp), (0, 7, 1234i64.to_le_bytes().to_vec()));
    assert_eq!(a.used(0), vec![(0, 16 + 8)]);
    assert_eq!(a.dev.pending_syscalls(), 0);
    assert_eq!(b.dev.inbound_syscalls(), 0);
    let (sa, sb) = (a.dev.stats().syscalls, b.dev.stats().syscalls);
    assert_eq!((sa.calls_out, sb.calls_in), (1, 1));
    assert_eq!((sa.bytes_out, sa.bytes_in, sb.bytes_in), (80, 32, 80));
    let line = a.dev.stats().to_string();
    assert!(
        line.starts_with("requests=1 events=0 interrupts=")
            && line.contains(" syscalls_out=1 syscalls_in=0 syscall_bytes_out=80 "),
        "{line}"
    );
}

#[test]
fn calls_complete_out_of_order_and_esrch_passes_through() {
    let (mut a, mut b) = pair();
    let r1 = a.syscall(1, &record(B, 1));
    let r2 = a.syscall(2, &record(B, 2));
    let (out, _) = a.dev.process_requests();
    carry(A, out, &mut b, B);
    let (_, t1, c1) = b.next_call();
    let (_, t2, c2) = b.next_call();
    assert_eq!((c1.nr, c2.nr), (1, 2));
    b.syscall_ret(9, t2, 0, -11);
    b.syscall_ret(9, t1, -errno::ESRCH, 0);
    let (out, _) = b.dev.process_requests();
    carry(B, out, &mut a, A);
    assert_eq!(a.response(r2), (0, 2, (-11i64).to_le_bytes().to_vec()));
    assert_eq!(a.response(r1), (-errno::ESRCH, 1, vec![]));
    let heads: Vec<u32> = a.used(0).iter().map(|u| u.0).collect();
    assert_eq!(heads, vec![2, 0], "the second call completed first");
}

#[test]
fn refused_syscalls_answer_at_once() {
    let mut a = rig_at(A);
    up(&mut a, 2);
    let own = a.syscall(1, &record(A, 0));
    let unknown = a.syscall(2, &record(7, 0));
    let down = a.syscall(3, &record(B, 0));
    let bad = a.send(&request(protocol::REQ_SYSCALL, 4, &[0; 12]));
    let req = a.buf(
        &request(protocol::REQ_SYSCALL, 5, &record(2, 0).encode()),
        0,
    );
    let tiny = a.buf(&[], 0);
    a.post(0, &[(req, 24 + 64, false), (tiny, 20, true)]);
    let (out, _) = a.dev.process_requests();
    assert!(out.is_empty());
    assert_eq!(a.response(own).0, -errno::EHOSTUNREACH);
    assert_eq!(a.response(unknown).0, -errno::EHOSTUNREACH);
    assert_eq!(a.response(down).0, -errno::ENOTCONN);
    assert_eq!(a.response(bad).0, -errno::EINVAL);
    assert_eq!(a.response(tiny).0, -errno::EMSGSIZE);
    assert_eq!(a.dev.pending_syscalls(), 0);
}

#[test]
fn a_call_the_transport_cannot_send_fails_with_enotconn() {
    let (mut a, _) = pair();
    let resp = a.syscall(1, &record(B, 0));
    let (out, _) = a.dev.process_requests();
    // As NoCluster (or a transport whose link just went down) answers.
    let mut link = handler::NoCluster;
    for o in out {
        let back = handler::ClusterLink::send(&mut link, o).expect("comes back");
        assert!(a.dev.handle(back).is_empty());
    }
    assert_eq!(a.response(resp), (-errno::ENOTCONN, 1, vec![]));
    assert_eq!(a.dev.pending_syscalls(), 0);
}

#[test]
fn home_lost_completes_every_waiting_syscall_with_econnreset() {
    let (mut a, mut b) = pair();
    let resps: Vec<u64> = (0..5).map(|i| a.syscall(i, &record(B, i))).collect();
    let (out, _) = a.dev.process_requests();
    carry(A, out, &mut b, B);
    a.dev.handle(Inbound::PeerState {
        node: B,
        state: PeerState::Lost,
    });
    for (i, r) in resps.iter().enumerate() {
        assert_eq!(a.response(*r), (-errno::ECONNRESET, i as u64, vec![]));
    }
    assert_eq!(a.used(0).len(), 5);
    assert_eq!(a.dev.pending_syscalls(), 0);
    // A late RET (the home came back) completes nothing and is counted.
    let (_, token, _) = b.next_call();
    b.syscall_ret(1, token, 0, 0);
    let (out, _) = b.dev.process_requests();
    carry(B, out, &mut a, A);
    assert_eq!(a.used(0).len(), 5);
    assert_eq!(a.dev.stats().syscalls.bad, 1);
}

#[test]
fn caller_lost_expires_its_calls_at_home() {
    let (mut a, mut b) = pair();
    a.syscall(1, &record(B, 1));
    a.syscall(2, &record(B, 2));
    let (out, _) = a.dev.process_requests();
    carry(A, out, &mut b, B);
    // The guest takes the first event; the second is still held back when a is lost.
    let (_, token, _) = b.next_call();
    b.dev.handle(Inbound::PeerState {
        node: A,
        state: PeerState::Lost,
    });
    assert_eq!(b.dev.inbound_syscalls(), 0);
    let late = b.syscall_ret(5, token, 0, 0);
    let (out, _) = b.dev.process_requests();
    assert!(out.is_empty(), "nothing is sent for an expired call");
    assert_eq!(b.response(late), (-errno::ENOENT, 5, vec![]));
    let (kind, src, _, body) = b.next_event().expect("the PEER_STATE event");
    assert_eq!((kind, src), (protocol::EVENT_PEER_STATE, A));
    assert_eq!(body, 2u32.to_le_bytes());
    assert_eq!(b.next_event(), None, "the held-back call was dropped");
}

#[test]
fn a_home_whose_guest_takes_no_events_answers_ebusy() {
    let (mut a, mut b) = pair();
    assert_eq!(
        b.next_event().map(|e| e.0),
        Some(protocol::EVENT_PEER_STATE)
    );
    // Fill b's backlog: no event buffers are posted.
    for i in 0..MAX_BACKLOG as u64 {
        let call = SysMsg::Call {
            seq: 1000 + i,
            record: record(B, 0),
        };
        let payload = wire::encode(&call);
        b.dev.handle(Inbound::Syscall { src: A, payload });
    }
    let resp = a.syscall(4, &record(B, 0));
    let (out, _) = a.dev.process_requests();
    let back = carry(A, out, &mut b, B);
    assert_eq!(back.len(), 1);
    carry(B, back, &mut a, A);
    assert_eq!(a.response(resp), (-errno::EBUSY, 4, vec![]));
    // A PEER_STATE event pushing a held-back call out of the backlog refuses it too.
    let back = b.dev.handle(Inbound::PeerState {
        node: 2,
        state: PeerState::Up,
    });
    assert!(matches!(
        back[..],
        [Outbound::Syscall {
            node: A,
            msg: SysMsg::Ret { seq: 1000, status, .. }
        }] if status == -errno::EBUSY
    ));
}

#[test]
fn malformed_peer_messages_are_counted_and_ignored() {
    let (_, mut b) = pair();
    assert_eq!(
        b.next_event().map(|e| e.0),
        Some(protocol::EVENT_PEER_STATE)
    );
    let call = wire::encode(&SysMsg::Call {
        seq: 1,
        record: record(B, 0),
    });
    let mut cases = vec![vec![], vec![9; 80], call[..40].to_vec()];
    let mut bad_op = call.clone();
    bad_op[1] = 7;
    cases.push(bad_op);
    cases.push(wire::encode(&SysMsg::Ret {
        seq: 5,
        status: 0,
        ret: 0,
    }));
    for payload in cases {
        assert!(b
            .dev
            .handle(Inbound::Syscall { src: A, payload })
            .is_empty());
    }
    assert_eq!(b.dev.stats().syscalls.bad, 5);
    assert_eq!(b.next_event(), None);
    // Still serving: the call goes into the buffer that is still posted.
    b.dev.handle(Inbound::Syscall {
        src: A,
        payload: call,
    });
    assert_eq!(b.used(1).len(), 2);
    assert_eq!(b.dev.inbound_syscalls(), 1);
}

#[test]
fn reset_answers_waiting_callers_esrch() {
    let (mut a, mut b) = pair();
    let resp = a.syscall(6, &record(B, 0));
    let (out, _) = a.dev.process_requests();
    carry(A, out, &mut b, B);
    let (_, token, _) = b.next_call();
    b.dev.reset();
    let (out, _) = b.dev.process_requests();
    carry(B, out, &mut a, A);
    assert_eq!(a.response(resp), (-errno::ESRCH, 6, vec![]));
    assert_eq!(b.dev.inbound_syscalls(), 0, "token {token} is gone");
    assert_eq!(a.dev.pending_syscalls(), 0);
}
