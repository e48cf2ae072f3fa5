//! Unit tests of the offload device driven through crafted virtqueues in plain memory (no KVM).

use super::*;
use virtio_queue::mock::MockSplitQueue;
use vmm_sys_util::eventfd::EventFd;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const REQ_Q: u64 = 0x0;
const EVT_Q: u64 = 0x10_0000;
const BUFS: u64 = 0x20_0000;
const QLEN: u16 = 16;

/// Ring addresses of a split queue, as `MockSplitQueue::create` laid them out.
#[derive(Clone, Copy)]
struct Rings {
    desc: u64,
    avail: u64,
    used: u64,
}

struct Rig {
    mem: GuestMemoryMmap,
    dev: OffloadDevice,
    irq: EventFd,
    rings: [Rings; 2],
    next_desc: [u16; 2],
    next_buf: u64,
}

fn identity_at(index: u32) -> NodeIdentity {
    NodeIdentity {
        index,
        names: vec!["a".into(), "b".into(), "c".into()],
    }
}

fn rig() -> Rig {
    rig_at(0)
}

/// A device for node `index` of the three-node cluster a, b, c.
fn rig_at(index: u32) -> Rig {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
    let rq = MockSplitQueue::create(&mem, GuestAddress(REQ_Q), QLEN);
    let eq = MockSplitQueue::create(&mem, GuestAddress(EVT_Q), QLEN);
    let ring_of = |m: &MockSplitQueue<'_, GuestMemoryMmap>| Rings {
        desc: m.desc_table_addr().0,
        avail: m.avail_addr().0,
        used: m.used_addr().0,
    };
    let rings = [ring_of(&rq), ring_of(&eq)];
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let mut dev = OffloadDevice::new(identity_at(index));
    dev.activate(Activation {
        mem: mem.clone(),
        queues: vec![rq.create_queue().unwrap(), eq.create_queue().unwrap()],
        acked_features: 1 << VIRTIO_F_VERSION_1,
        interrupt: Interrupt::new(irq.try_clone().unwrap()),
    })
    .unwrap();
    Rig {
        mem,
        dev,
        irq,
        rings,
        next_desc: [0, 0],
        next_buf: BUFS,
    }
}

use super::protocol::encode_request as request;

impl Rig {
    fn buf(&mut self, bytes: &[u8], len: u32) -> u64 {
        let addr = self.next_buf;
        self.next_buf += 0x2000;
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
        let _ = len;
        addr
    }

    /// Posts a chain of (addr, len, writable) descriptors on queue `q`.
    fn post(&mut self, q: usize, descs: &[(u64, u32, bool)]) {
        let base = self.next_desc[q];
        let r = self.rings[q];
        for (i, (addr, len, w)) in descs.iter().enumerate() {
            let idx = (base + i as u16) % QLEN;
            let mut flags = if *w { F_WRITE } else { 0 };
            if i + 1 < descs.len() {
                flags |= F_NEXT;
            }
            let d = GuestAddress(r.desc + 16 * u64::from(idx));
            self.mem.write_obj(*addr, d).unwrap();
            self.mem.write_obj(*len, d.unchecked_add(8)).unwrap();
            self.mem.write_obj(flags, d.unchecked_add(12)).unwrap();
            self.mem
                .write_obj((idx + 1) % QLEN, d.unchecked_add(14))
                .unwrap();
        }
        let avail_idx: u16 = self.mem.read_obj(GuestAddress(r.avail + 2)).unwrap();
        let slot = GuestAddress(r.avail + 4 + 2 * u64::from(avail_idx % QLEN));
        self.mem.write_obj(base % QLEN, slot).unwrap();
        self.mem
            .write_obj(avail_idx.wrapping_add(1), GuestAddress(r.avail + 2))
            .unwrap();
        self.next_desc[q] = (base + descs.len() as u16) % QLEN;
    }

    /// Posts a request with a 4 KiB response buffer; returns the response buffer address.
    fn send(&mut self, bytes: &[u8]) -> u64 {
        let req = self.buf(bytes, bytes.len() as u32);
        let resp = self.buf(&[], 0);
        self.post(
            0,
            &[(req, bytes.len() as u32, false), (resp, 4096 + 16, true)],
        );
        resp
    }

    fn used(&self, q: usize) -> Vec<(u32, u32)> {
        let used = GuestAddress(self.rings[q].used);
        let idx: u16 = self.mem.read_obj(used.unchecked_add(2)).unwrap();
        (0..u64::from(idx))
            .map(|i| {
                let e = used.unchecked_add(4 + 8 * (i % u64::from(QLEN)));
                (
                    self.mem.read_obj(e).unwrap(),
                    self.mem.read_obj(e.unchecked_add(4)).unwrap(),
                )
            })
            .collect()
    }

    fn response(&self, addr: u64) -> (i32, u64, Vec<u8>) {
        let status: i32 = self.mem.read_obj(GuestAddress(addr)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(addr + 4)).unwrap();
        let tag: u64 = self.mem.read_obj(GuestAddress(addr + 8)).unwrap();
        let mut body = vec![0u8; len as usize];
        self.mem
            .read_slice(&mut body, GuestAddress(addr + 16))
            .unwrap();
        (status, tag, body)
    }

    fn ping(&mut self, node: u32, tag: u64, data: &[u8]) -> u64 {
        let mut p = node.to_le_bytes().to_vec();
        p.extend_from_slice(data);
        self.send(&request(protocol::REQ_PING, tag, &p))
    }
}

use vm_memory::Address;

#[test]
fn node_info_and_peers_answer_at_once() {
    let mut r = rig();
    let a = r.send(&request(protocol::REQ_NODE_INFO, 11, &[]));
    let b = r.send(&request(protocol::REQ_PEERS, 12, &[]));
    r.dev.handle(Inbound::PeerState {
        node: 1,
        state: PeerState::Up,
    });
    let (out, more) = r.dev.process_requests();
    assert!(out.is_empty() && !more);
    assert_eq!(r.irq.read().unwrap(), 1, "one interrupt for the batch");
    let (st, tag, body) = r.response(a);
    assert_eq!((st, tag), (0, 11));
    assert_eq!(body, protocol::encode_node_info(0, 3, "a"));
    let (st, tag, body) = r.response(b);
    assert_eq!((st, tag, body.len()), (0, 12, 64));
    assert_eq!(body[..4], 1u32.to_le_bytes());
    assert_eq!(body[4..8], 1u32.to_le_bytes(), "b is up");
    assert_eq!(body[36..40], 0u32.to_le_bytes(), "c is down");
    assert_eq!(r.used(0), vec![(0, 16 + 24), (2, 16 + 64)]);
}

#[test]
fn ping_is_parked_until_its_answer_arrives() {
    let mut r = rig();
    r.dev.handle(Inbound::PeerState {
        node: 1,
        state: PeerState::Up,
    });
    let resp = r.ping(1, 5, b"hello");
    let (out, _) = r.dev.process_requests();
    let id = match &out[..] {
        [Outbound::Ping {
            node: 1,
            id,
            payload,
        }] if payload == b"hello" => *id,
        other => panic!("unexpected {other:?}"),
    };
    assert!(r.used(0).is_empty(), "nothing completes before the answer");
    assert_eq!(r.dev.pending_pings(), 1);
    r.dev.handle(Inbound::PingResult {
        id,
        result: Ok(b"hello".to_vec()),
    });
    assert_eq!(r.response(resp), (0, 5, b"hello".to_vec()));
    assert_eq!(r.used(0), vec![(0, 16 + 5)]);
    assert_eq!(r.dev.pending_pings(), 0);
    // A second answer for the same id is ignored.
    r.dev.handle(Inbound::PingResult {
        id,
        result: Ok(vec![]),
    });
    assert_eq!(r.used(0).len(), 1);
}

#[test]
fn ping_errors_map_to_errnos() {
    let mut r = rig();
    let down = r.ping(1, 1, b"x");
    let own = r.ping(0, 2, b"x");
    let unknown = r.ping(9, 3, b"x");
    r.dev.handle(Inbound::PeerState {
        node: 2,
        state: PeerState::Up,
    });
    let lost = r.ping(2, 4, b"x");
    let (out, _) = r.dev.process_requests();
    assert_eq!(r.response(down).0, -errno::ENOTCONN);
    assert_eq!(r.response(own).0, -errno::EHOSTUNREACH);
    assert_eq!(r.response(unknown).0, -errno::EHOSTUNREACH);
    let Outbound::Ping { id, .. } = out[0].clone() else {
        panic!()
    };
    r.dev.handle(Inbound::PingResult {
        id,
        result: Err(errno::ECONNRESET),
    });
    assert_eq!(r.response(lost), (-errno::ECONNRESET, 4, vec![]));
}

#[test]
fn incoming_ping_becomes_an_event_and_the_pong_goes_back() {
    let mut r = rig();
    r.dev.handle(Inbound::PingIn {
        src: 2,
        request: 77,
        payload: b"abc".to_vec(),
    });
    assert!(r.used(1).is_empty(), "no event buffer yet: held back");
    let ev = r.buf(&[], 0);
    r.post(1, &[(ev, 4096 + 24, true)]);
    r.dev.process_event_buffers();
    assert_eq!(r.used(1), vec![(0, 24 + 3)]);
    let kind: u32 = r.mem.read_obj(GuestAddress(ev)).unwrap();
    let src: u32 = r.mem.read_obj(GuestAddress(ev + 4)).unwrap();
    let token: u64 = r.mem.read_obj(GuestAddress(ev + 8)).unwrap();
    assert_eq!((kind, src), (protocol::EVENT_PING_IN, 2));
    let mut p = token.to_le_bytes().to_vec();
    p.extend_from_slice(b"abc");
    let ok = r.send(&request(protocol::REQ_PONG, 8, &p));
    let stale = r.send(&request(protocol::REQ_PONG, 9, &p));
    let (out, _) = r.dev.process_requests();
    assert_eq!(
        out,
        vec![Outbound::Pong {
            node: 2,
            request: 77,
            payload: b"abc".to_vec()
        }]
    );
    assert_eq!(r.response(ok).0, 0);
    assert_eq!(r.response(stale).0, -errno::ENOENT, "a token answers once");
}

#[test]
fn malformed_chains_get_errors_and_the_device_keeps_serving() {
    let mut r = rig();
    // Unknown type; header only; readable buffer outside guest memory; no writable part.
    let unknown = r.send(&request(42, 1, &[]));
    let short = r.send(&[1, 2, 3]);
    let resp = r.buf(&[], 0);
    r.post(0, &[(0xffff_0000, 24, false), (resp, 64, true)]);
    let req = r.buf(&request(protocol::REQ_NODE_INFO, 1, &[]), 24);
    r.post(0, &[(req, 24, false)]);
    let tiny = r.buf(&[], 0);
    let req2 = r.buf(&request(protocol::REQ_NODE_INFO, 3, &[]), 24);
    r.post(0, &[(req2, 24, false), (tiny, 20, true)]);
    let good = r.send(&request(protocol::REQ_NODE_INFO, 2, &[]));
    r.dev.process_requests();
    assert_eq!(r.response(unknown).0, -errno::EINVAL);
    assert_eq!(r.response(short).0, -errno::EINVAL);
    assert_eq!(r.response(resp).0, -errno::EINVAL);
    assert_eq!(r.response(tiny).0, -errno::EMSGSIZE);
    let used = r.used(0);
    assert_eq!(used.len(), 6, "every chain is returned: {used:?}");
    assert_eq!(
        used[3].1, 0,
        "a chain without room for a response is returned empty"
    );
    assert_eq!(r.response(good).0, 0);
}

#[test]
fn too_many_pending_pings_get_ebusy() {
    let mut r = rig();
    r.dev.handle(Inbound::PeerState {
        node: 1,
        state: PeerState::Up,
    });
    let mut last = 0;
    for i in 0..=MAX_PENDING_PINGS as u64 {
        // The 16-entry queue is reused: parked chains keep their memory, not their slot (the
        // test's guest does not reuse descriptors it has not got back; here we only check the
        // device's own limit).
        last = r.ping(1, i, b"p");
        r.dev.process_requests();
    }
    assert_eq!(r.dev.pending_pings(), MAX_PENDING_PINGS);
    assert_eq!(r.response(last).0, -errno::EBUSY);
}

#[test]
fn reset_forgets_parked_requests() {
    let mut r = rig();
    r.dev.handle(Inbound::PeerState {
        node: 1,
        state: PeerState::Up,
    });
    r.ping(1, 1, b"x");
    let (out, _) = r.dev.process_requests();
    let Outbound::Ping { id, .. } = out[0].clone() else {
        panic!()
    };
    r.dev.reset();
    r.dev.handle(Inbound::PingResult {
        id,
        result: Ok(vec![]),
    });
    assert!(r.used(0).is_empty());
}

mod guestmsg;
mod syscall;
