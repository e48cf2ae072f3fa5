//! Targeted tests of the protocol's flows, one page at a time, messages delivered by hand.

use super::*;

const R: Want = Want::Read;
const W: Want = Want::Write;

/// `nodes` nodes on a window of `2 * nodes` pages; every test works on page 0 (node 0's).
struct Net {
    p: Vec<Protocol>,
    st: Vec<PageState>,
    lost: Vec<u64>,
}

impl Net {
    fn new(nodes: u16) -> Self {
        let geo = Geometry::new(u64::from(nodes) * 2, nodes).unwrap();
        let p: Vec<Protocol> = (0..nodes).map(|n| Protocol::new(n, geo).unwrap()).collect();
        let st = p.iter().map(|p| p.page_state(0)).collect();
        let lost = vec![0; usize::from(nodes)];
        Self { p, st, lost }
    }

    fn fault(&mut self, n: NodeIdx, want: Want) -> Vec<Action> {
        let i = usize::from(n);
        self.p[i].fault(&mut self.st[i], 0, want, self.lost[i])
    }

    fn recv(&mut self, to: NodeIdx, from: NodeIdx, msg: Msg) -> Vec<Action> {
        self.try_recv(to, from, msg).unwrap()
    }

    fn try_recv(
        &mut self,
        to: NodeIdx,
        from: NodeIdx,
        msg: Msg,
    ) -> Result<Vec<Action>, ProtocolError> {
        let i = usize::from(to);
        self.p[i].receive(&mut self.st[i], 0, from, msg, self.lost[i])
    }

    /// Node `n` declares `gone` lost.
    fn lose(&mut self, n: NodeIdx, gone: NodeIdx) -> Vec<Action> {
        let i = usize::from(n);
        self.lost[i] |= bit(gone);
        self.p[i].peer_lost(&mut self.st[i], 0, gone)
    }

    fn reset(&mut self) -> Vec<Action> {
        self.p[0].reset(&mut self.st[0], 0, self.lost[0]).unwrap()
    }

    fn local(&self, n: NodeIdx) -> Local {
        self.st[usize::from(n)].local()
    }

    fn view(&self) -> ManagerView {
        self.st[0].manager_view().unwrap()
    }

    /// Node `n` reads page 0 through the whole flow (the manager must be idle).
    fn read(&mut self, n: NodeIdx) {
        assert_eq!(self.fault(n, R), [send(0, Msg::Req { want: R })]);
        let out = self.recv(0, n, Msg::Req { want: R });
        let from = match out.last() {
            Some(&Action::Send {
                to,
                msg: Msg::Fetch { .. },
                ..
            }) => {
                self.recv(
                    to,
                    0,
                    Msg::Fetch {
                        requester: n,
                        want: R,
                    },
                );
                to
            }
            _ => 0,
        };
        let out = self.recv(n, from, Msg::Data { want: R });
        assert_eq!(out, [install(R, InstallSrc::Message), done(R)]);
        self.recv(0, n, Msg::Done { want: R });
    }

    /// Node `n` (not the manager, no copy) writes page 0, the only copy being at `owner`.
    fn write_alone(&mut self, n: NodeIdx, owner: NodeIdx) {
        self.fault(n, W);
        let out = self.recv(0, n, Msg::Req { want: W });
        if owner != 0 {
            assert_eq!(
                out,
                [send(
                    owner,
                    Msg::Fetch {
                        requester: n,
                        want: W
                    }
                )]
            );
            self.recv(
                owner,
                0,
                Msg::Fetch {
                    requester: n,
                    want: W,
                },
            );
        }
        self.recv(n, owner, Msg::Data { want: W });
        self.recv(0, n, Msg::Done { want: W });
        assert_eq!(self.local(n), Local::Write);
    }
}

fn send(to: NodeIdx, msg: Msg) -> Action {
    Action::Send {
        to,
        msg,
        data: None,
    }
}

fn data(to: NodeIdx, want: Want, src: DataSrc) -> Action {
    Action::Send {
        to,
        msg: Msg::Data { want },
        data: Some(src),
    }
}

fn done(want: Want) -> Action {
    send(0, Msg::Done { want })
}

fn install(access: Want, src: InstallSrc) -> Action {
    Action::Install { access, src }
}

#[test]
fn geometry_splits_pages_into_slices() {
    let g = Geometry::new(10, 3).unwrap();
    assert_eq!((g.slice(0), g.slice(1), g.slice(2)), (0..3, 3..6, 6..10));
    let managers: Vec<NodeIdx> = (0..10).map(|p| g.manager(p)).collect();
    assert_eq!(managers, [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]);
    assert_eq!(g.slice(3), 10..10);
    assert_eq!(Geometry::new(5, 1).unwrap().slice(0), 0..5);
    assert!(Geometry::new(10, 0).is_err());
    assert!(Geometry::new(100, 65).is_err());
    assert!(Geometry::new(2, 3).is_err());
    assert!(Geometry::new(64, 64).is_ok());
    assert_eq!(Protocol::new(3, g).unwrap_err(), ProtocolError::Node(3));
    let p = Protocol::new(1, g).unwrap();
    assert_eq!(p.page_state(3).local(), Local::Zero);
    assert_eq!(p.page_state(2).local(), Local::None);
    assert!(p.page_state(2).manager_view().is_none());
}

#[test]
fn zero_page_fault_installs_zeros_locally() {
    let mut net = Net::new(2);
    assert_eq!(net.fault(0, R), [install(W, InstallSrc::Zero)]);
    assert_eq!(net.local(0), Local::Write);
    assert_eq!(net.fault(0, W), [Action::Wake]);
    assert_eq!(net.view().copyset, 0b1);
}

#[test]
fn read_fault_gets_data_from_the_owner() {
    let mut net = Net::new(2);
    assert_eq!(net.fault(1, R), [send(0, Msg::Req { want: R })]);
    assert_eq!(net.st[1].pending(), Some(R));
    let out = net.recv(0, 1, Msg::Req { want: R });
    assert_eq!(
        out,
        [install(R, InstallSrc::Zero), data(1, R, DataSrc::Zero)]
    );
    assert_eq!(net.local(0), Local::Read);
    let out = net.recv(1, 0, Msg::Data { want: R });
    assert_eq!(out, [install(R, InstallSrc::Message), done(R)]);
    assert!(net.view().busy);
    assert_eq!(net.recv(0, 1, Msg::Done { want: R }), []);
    assert_eq!((net.view().copyset, net.view().owner), (0b11, Some(0)));
    assert!(net.st[0].is_idle() && net.st[1].is_idle());
}

#[test]
fn owner_manager_answers_a_remote_write_in_order() {
    let mut net = Net::new(2);
    net.fault(0, W);
    net.fault(1, W);
    let out = net.recv(0, 1, Msg::Req { want: W });
    let protect = Action::Protect { access: R };
    assert_eq!(out, [protect, data(1, W, DataSrc::Local), Action::Drop]);
    assert_eq!(net.local(0), Local::None);
    let out = net.recv(1, 0, Msg::Data { want: W });
    assert_eq!(out, [install(W, InstallSrc::Message), done(W)]);
    net.recv(0, 1, Msg::Done { want: W });
    assert_eq!((net.view().copyset, net.view().owner), (0b10, Some(1)));
}

#[test]
fn write_fault_invalidates_every_reader_first() {
    let mut net = Net::new(4);
    net.read(1);
    net.read(2);
    assert_eq!(net.view().copyset, 0b111);
    net.fault(3, W);
    let out = net.recv(0, 3, Msg::Req { want: W });
    assert_eq!(out, [send(1, Msg::Inval), send(2, Msg::Inval)]);
    assert_eq!(
        net.recv(1, 0, Msg::Inval),
        [Action::Drop, send(0, Msg::InvAck)]
    );
    assert_eq!(net.recv(0, 1, Msg::InvAck), []);
    net.recv(2, 0, Msg::Inval);
    let out = net.recv(0, 2, Msg::InvAck);
    assert_eq!(out, [data(3, W, DataSrc::Local), Action::Drop]);
    net.recv(3, 0, Msg::Data { want: W });
    net.recv(0, 3, Msg::Done { want: W });
    assert_eq!(net.view().copyset, 0b1000);
    let locals: Vec<Local> = (0..4).map(|n| net.local(n)).collect();
    assert_eq!(
        locals,
        [Local::None, Local::None, Local::None, Local::Write]
    );
}

#[test]
fn upgrade_is_granted_without_data() {
    let mut net = Net::new(2);
    net.read(1);
    assert_eq!(net.fault(1, W), [send(0, Msg::Req { want: W })]);
    let out = net.recv(0, 1, Msg::Req { want: W });
    assert_eq!(out, [Action::Drop, send(1, Msg::Grant { want: W })]);
    let out = net.recv(1, 0, Msg::Grant { want: W });
    assert_eq!(out, [Action::Protect { access: W }, done(W)]);
    net.recv(0, 1, Msg::Done { want: W });
    assert_eq!((net.local(0), net.local(1)), (Local::None, Local::Write));
}

#[test]
fn manager_upgrades_its_own_copy() {
    let mut net = Net::new(2);
    net.read(1);
    assert_eq!(net.fault(0, W), [send(1, Msg::Inval)]);
    assert_eq!(net.st[0].pending(), Some(W));
    net.recv(1, 0, Msg::Inval);
    let out = net.recv(0, 1, Msg::InvAck);
    assert_eq!(out, [Action::Protect { access: W }]);
    assert!(net.st[0].is_idle());
    assert_eq!((net.view().copyset, net.local(0)), (0b1, Local::Write));
}

#[test]
fn upgrade_racing_an_invalidation_gets_data() {
    let mut net = Net::new(3);
    net.read(1);
    net.read(2);
    // Both readers upgrade; node 2's request arrives first.
    net.fault(1, W);
    net.fault(2, W);
    let out = net.recv(0, 2, Msg::Req { want: W });
    assert_eq!(out, [send(1, Msg::Inval), Action::Drop]);
    net.recv(1, 0, Msg::Inval);
    assert_eq!(
        net.st[1].pending(),
        Some(W),
        "an invalidation keeps the request"
    );
    assert_eq!(net.recv(0, 1, Msg::Req { want: W }), [], "queued");
    assert_eq!(
        net.recv(0, 1, Msg::InvAck),
        [send(2, Msg::Grant { want: W })]
    );
    net.recv(2, 0, Msg::Grant { want: W });
    // Node 2's Done starts node 1's transaction: node 1 lost its copy, so it gets data.
    let out = net.recv(0, 2, Msg::Done { want: W });
    assert_eq!(
        out,
        [send(
            2,
            Msg::Fetch {
                requester: 1,
                want: W
            }
        )]
    );
    let out = net.recv(
        2,
        0,
        Msg::Fetch {
            requester: 1,
            want: W,
        },
    );
    let protect = Action::Protect { access: R };
    assert_eq!(out, [protect, data(1, W, DataSrc::Local), Action::Drop]);
    let out = net.recv(1, 2, Msg::Data { want: W });
    assert_eq!(out, [install(W, InstallSrc::Message), done(W)]);
    net.recv(0, 1, Msg::Done { want: W });
    assert_eq!(net.view().copyset, 0b10);
}

#[test]
fn faults_on_a_pending_page_coalesce() {
    let mut net = Net::new(2);
    assert_eq!(net.fault(1, R).len(), 1);
    assert_eq!(net.fault(1, W), []);
    assert_eq!(net.fault(1, R), []);
    net.recv(0, 1, Msg::Req { want: R });
    net.recv(1, 0, Msg::Data { want: R });
    // The writer re-faults after the install woke it.
    assert_eq!(net.fault(1, W), [send(0, Msg::Req { want: W })]);
    // Its request overtakes the read's Done: queued, served after it.
    assert_eq!(net.recv(0, 1, Msg::Req { want: W }), []);
    let out = net.recv(0, 1, Msg::Done { want: R });
    assert_eq!(out, [Action::Drop, send(1, Msg::Grant { want: W })]);
}

#[test]
fn stale_faults_wake() {
    let mut net = Net::new(2);
    net.read(1);
    assert_eq!(net.fault(1, R), [Action::Wake]);
    net.fault(0, W);
    net.recv(1, 0, Msg::Inval);
    net.recv(0, 1, Msg::InvAck);
    assert_eq!(net.fault(0, W), [Action::Wake]);
    assert_eq!(net.fault(0, R), [Action::Wake]);
}

#[test]
fn unexpected_messages_are_rejected_without_change() {
    let mut net = Net::new(3);
    net.read(1);
    net.fault(2, R); // pending, request not delivered yet
    net.lost[0] = bit(2);
    let cases: Vec<(NodeIdx, NodeIdx, Msg)> = vec![
        (1, 0, Msg::Data { want: R }),  // nothing pending
        (2, 0, Msg::Data { want: W }),  // pending a read
        (1, 2, Msg::Grant { want: W }), // not from the manager
        (1, 0, Msg::Grant { want: W }), // nothing pending
        (2, 0, Msg::Inval),             // no copy
        (
            2,
            0,
            Msg::Fetch {
                requester: 1,
                want: R,
            },
        ), // not the owner
        (
            1,
            0,
            Msg::Fetch {
                requester: 1,
                want: R,
            },
        ), // data to itself
        (
            1,
            0,
            Msg::Fetch {
                requester: 9,
                want: R,
            },
        ), // no such node
        (1, 2, Msg::Req { want: R }),   // not the manager
        (0, 1, Msg::InvAck),            // no invalidation
        (0, 1, Msg::Done { want: R }),  // no transaction
        (0, 1, Msg::Gone { lost: 1 }),  // lost == sender
        (0, 1, Msg::Gone { lost: 7 }),  // no such node
        (1, 0, Msg::Gone { lost: 0 }),  // lost == sender
        (1, 2, Msg::Gone { lost: 0 }),  // not from the manager
        (0, 2, Msg::Req { want: R }),   // from a lost node
        (0, 0, Msg::Req { want: R }),   // from itself
        (0, 5, Msg::Req { want: R }),   // no such node
    ];
    for (to, from, msg) in cases {
        let i = usize::from(to);
        let before = format!("{:?}", net.st[i]);
        let r = net.try_recv(to, from, msg);
        assert!(r.is_err(), "{msg:?} from {from} at {to} accepted: {r:?}");
        assert_eq!(
            format!("{:?}", net.st[i]),
            before,
            "{msg:?} changed the state"
        );
    }
}

#[test]
fn out_of_range_inputs_are_rejected() {
    let mut net = Net::new(2);
    let before = format!("{:?}", net.st[0]);
    let r = net.p[0].receive(&mut net.st[0], 99, 1, Msg::Req { want: R }, 0);
    assert_eq!(r, Err(ProtocolError::Page(99)));
    assert_eq!(format!("{:?}", net.st[0]), before);
    let mut other = net.p[1].page_state(0);
    assert!(net.p[1].reset(&mut other, 0, 0).is_err());
    assert!(net.p[0].reset(&mut net.st[0], 99, 0).is_err());
    assert_eq!(net.p[0].peer_lost(&mut net.st[0], 0, 0), []);
    assert_eq!(net.p[0].peer_lost(&mut net.st[0], 0, 9), []);
}

#[test]
fn reset_invalidates_every_copy_and_zeroes_the_page() {
    let mut net = Net::new(3);
    net.read(1);
    net.read(2);
    assert_eq!(net.reset(), [send(1, Msg::Inval), send(2, Msg::Inval)]);
    // A request arriving meanwhile waits for the reset.
    net.recv(1, 0, Msg::Inval);
    net.fault(1, R);
    assert_eq!(net.recv(0, 1, Msg::Req { want: R }), []);
    net.recv(2, 0, Msg::Inval);
    net.recv(0, 1, Msg::InvAck);
    let out = net.recv(0, 2, Msg::InvAck);
    let done = Action::ResetDone { retired: false };
    // Reset done, then node 1's read is served from the zero page.
    let expect = [
        Action::Drop,
        done,
        install(R, InstallSrc::Zero),
        data(1, R, DataSrc::Zero),
    ];
    assert_eq!(out, expect);
    net.recv(1, 0, Msg::Data { want: R });
    net.recv(0, 1, Msg::Done { want: R });
    assert_eq!((net.view().copyset, net.local(0)), (0b11, Local::Read));
}

#[test]
fn reset_of_an_idle_zero_page_is_immediate() {
    let mut net = Net::new(2);
    assert_eq!(net.reset(), [Action::ResetDone { retired: false }]);
    net.fault(0, W);
    assert_eq!(
        net.reset(),
        [Action::Drop, Action::ResetDone { retired: false }]
    );
    assert_eq!(net.local(0), Local::Zero);
}

#[test]
fn lost_owner_hands_ownership_to_another_copy() {
    let mut net = Net::new(3);
    net.write_alone(1, 0);
    net.read(2); // fetched from node 1, which keeps a read copy
    assert_eq!(net.view().copyset, 0b110);
    assert_eq!(net.lose(0, 1), []);
    assert_eq!(net.lose(2, 1), []);
    assert_eq!(net.view().owner, Some(2));
    // The manager's own read is fetched from the new owner.
    assert_eq!(
        net.fault(0, R),
        [send(
            2,
            Msg::Fetch {
                requester: 0,
                want: R
            }
        )]
    );
}

#[test]
fn lost_only_copy_loses_the_page() {
    let mut net = Net::new(3);
    net.write_alone(1, 0);
    assert_eq!(net.lose(0, 1), [Action::Lost { populated: false }]);
    assert!(net.view().lost);
    assert_eq!(net.lose(2, 1), []);
    net.fault(2, R);
    assert_eq!(net.recv(0, 2, Msg::Req { want: R }), [send(2, Msg::Refuse)]);
    assert_eq!(
        net.recv(2, 0, Msg::Refuse),
        [Action::Lost { populated: false }]
    );
    assert_eq!(
        net.recv(2, 0, Msg::Refuse),
        [],
        "a second refusal changes nothing"
    );
    assert_eq!(net.fault(2, W), [Action::Wake]);
    assert_eq!(net.reset(), [Action::ResetDone { retired: true }]);
}

#[test]
fn lost_manager_loses_its_pages_where_held_or_awaited() {
    let mut net = Net::new(4);
    net.read(1);
    net.fault(2, R);
    assert_eq!(net.lose(1, 0), [Action::Lost { populated: true }]);
    assert_eq!(net.lose(2, 0), [Action::Lost { populated: false }]);
    assert_eq!(net.lose(3, 0), []);
    assert_eq!(net.local(3), Local::None);
    assert_eq!(net.fault(3, W), [Action::Lost { populated: false }]);
    assert_eq!(net.fault(3, W), [Action::Wake]);
}

#[test]
fn fetch_from_a_lost_owner_waits_for_the_requester() {
    let gone = Msg::Gone { lost: 1 };
    // The data reached the requester: its Done saves the page.
    let mut net = Net::new(3);
    net.write_alone(1, 0);
    net.fault(2, R);
    net.recv(0, 2, Msg::Req { want: R });
    net.recv(
        1,
        0,
        Msg::Fetch {
            requester: 2,
            want: R,
        },
    );
    // No copy known, but the data may be on its way: ask the requester.
    assert_eq!(net.lose(0, 1), [send(2, gone)]);
    net.recv(2, 1, Msg::Data { want: R });
    assert_eq!(net.lose(2, 1), []);
    assert_eq!(
        net.recv(2, 0, gone),
        [],
        "nothing pending: the Done is on its way"
    );
    net.recv(0, 2, Msg::Done { want: R });
    assert_eq!((net.view().owner, net.view().lost), (Some(2), false));

    // It did not: the requester says so, and the page is lost.
    let mut net = Net::new(3);
    net.write_alone(1, 0);
    net.fault(2, R);
    net.recv(0, 2, Msg::Req { want: R });
    assert_eq!(net.lose(0, 1), [send(2, gone)]);
    assert_eq!(
        net.recv(2, 0, gone),
        [],
        "node 2 has not declared node 1 lost yet"
    );
    assert_eq!(net.lose(2, 1), [send(0, gone)]);
    let out = net.recv(0, 2, gone);
    assert_eq!(
        out,
        [Action::Lost { populated: false }, send(2, Msg::Refuse)]
    );
    assert_eq!(net.recv(0, 2, gone), [], "a late answer changes nothing");
    assert_eq!(
        net.recv(2, 0, Msg::Refuse),
        [Action::Lost { populated: false }]
    );
}

#[test]
fn a_node_holding_a_copy_never_says_gone() {
    let gone = Msg::Gone { lost: 1 };
    let mut net = Net::new(3);
    net.write_alone(1, 0);
    net.fault(2, R);
    net.recv(0, 2, Msg::Req { want: R });
    net.recv(
        1,
        0,
        Msg::Fetch {
            requester: 2,
            want: R,
        },
    );
    net.recv(2, 1, Msg::Data { want: R }); // its Done is slow
    assert_eq!(net.fault(2, W), [send(0, Msg::Req { want: W })]);
    assert_eq!(net.lose(0, 1), [send(2, gone)]);
    // Node 2 waits on an upgrade, not on data: the fetch from node 1 reached it.
    assert_eq!(net.lose(2, 1), []);
    assert_eq!(net.recv(2, 0, gone), []);
    assert_eq!(
        net.recv(0, 2, Msg::Req { want: W }),
        [],
        "queued behind the read"
    );
    let out = net.recv(0, 2, Msg::Done { want: R });
    assert_eq!(out, [send(2, Msg::Grant { want: W })]);
}

#[test]
fn gone_refetches_from_another_copy() {
    let gone = Msg::Gone { lost: 1 };
    let mut net = Net::new(4);
    net.write_alone(1, 0);
    net.read(3); // copies at 1 (owner) and 3
    net.fault(2, R);
    net.recv(0, 2, Msg::Req { want: R });
    // Node 2 hears of the loss first; the manager does not fetch from node 1 yet.
    assert_eq!(net.lose(2, 1), [send(0, gone)]);
    assert_eq!(net.recv(0, 2, gone), []);
    assert_eq!(net.lose(0, 1), [send(2, gone)]);
    assert_eq!(net.recv(2, 0, gone), [send(0, gone)]);
    let out = net.recv(0, 2, gone);
    assert_eq!(
        out,
        [send(
            3,
            Msg::Fetch {
                requester: 2,
                want: R
            }
        )]
    );
    net.recv(
        3,
        0,
        Msg::Fetch {
            requester: 2,
            want: R,
        },
    );
    net.recv(2, 3, Msg::Data { want: R });
    net.recv(0, 2, Msg::Done { want: R });
    assert_eq!((net.view().copyset, net.view().owner), (0b1100, Some(3)));
}

#[test]
fn manager_fetches_its_own_copy_first() {
    let mut net = Net::new(3);
    net.write_alone(1, 0);
    // The manager reads: copies at 1 (owner) and 0.
    assert_eq!(
        net.fault(0, R),
        [send(
            1,
            Msg::Fetch {
                requester: 0,
                want: R
            }
        )]
    );
    net.recv(
        1,
        0,
        Msg::Fetch {
            requester: 0,
            want: R,
        },
    );
    assert_eq!(
        net.recv(0, 1, Msg::Data { want: R }),
        [install(R, InstallSrc::Message)]
    );
    net.fault(2, W);
    let out = net.recv(0, 2, Msg::Req { want: W });
    assert_eq!(out, [send(1, Msg::Inval)]);
    net.recv(1, 0, Msg::Inval);
    let out = net.recv(0, 1, Msg::InvAck);
    assert_eq!(out, [data(2, W, DataSrc::Local), Action::Drop]);
}

#[test]
fn lost_requester_during_invalidation_collects_the_acks() {
    let mut net = Net::new(4);
    net.read(1);
    net.read(2);
    net.fault(3, W);
    net.recv(0, 3, Msg::Req { want: W });
    net.fault(0, W); // queued behind node 3
    assert_eq!(net.lose(0, 3), []);
    net.recv(1, 0, Msg::Inval);
    assert_eq!(net.recv(0, 1, Msg::InvAck), []);
    net.recv(2, 0, Msg::Inval);
    // The aborted transaction ends with the last ack; the manager's own upgrade follows.
    assert_eq!(net.recv(0, 2, Msg::InvAck), [Action::Protect { access: W }]);
    assert_eq!((net.view().copyset, net.local(0)), (0b1, Local::Write));
}

#[test]
fn lost_requester_of_a_write_loses_the_page() {
    let mut net = Net::new(3);
    net.fault(1, W);
    net.recv(0, 1, Msg::Req { want: W });
    let out = net.lose(0, 1);
    assert_eq!(out, [Action::Lost { populated: false }]);
}
