//! The manager's side of the protocol: the per-page directory (owner, copy set, lost flag),
//! the one transaction in progress and the queue behind it, and how a peer's loss changes them.
//! Requests from the manager's own node go through the same queue (as self-addressed messages).

use std::collections::VecDeque;

use super::{
    allows, become_lost, bit, lowest, members, unexpected, Action, Ctx, InstallSrc, Local,
    ManagerView, Msg, NodeIdx, NodeSide, PageNo, PageState, Protocol, ProtocolError, Want,
};

/// What a transaction does (a request's `Want`, or the reset of a freed page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Read,
    Write,
    Reset,
}

/// Where the current transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `Inval` sent to every node in `waiting`; their `InvAck`s are due.
    Inval { waiting: u64 },
    /// `Fetch` sent to `from`; the requester's `Done` is due.
    Fetch { from: NodeIdx },
    /// `Fetch` had been sent to `from`, which is lost: whether its data reached the requester
    /// is unknown until the requester's `Done` (it did) or `Gone { lost: from }` (it never will).
    Orphan { from: NodeIdx },
    /// `Grant` sent; the requester's `Done` is due.
    Grant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Txn {
    requester: NodeIdx,
    op: Op,
    stage: Stage,
    /// The requester was lost during the invalidations: finish collecting the acks (so that no
    /// stray `InvAck` can ever be taken for a later transaction's), then end without a grant.
    aborted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    node: NodeIdx,
    op: Op,
}

/// The manager's directory for one page.
#[derive(Debug, Clone)]
pub(super) struct Manager {
    /// Holder of the authoritative copy; meaningful while `copyset != 0`.
    owner: NodeIdx,
    /// Nodes whose copy is valid and stays valid (nodes being invalidated are already out).
    copyset: u64,
    /// The page lost its last copy: every request is refused from now on.
    lost: bool,
    txn: Option<Txn>,
    queue: VecDeque<Entry>,
}

impl Manager {
    /// The directory of a page its manager `me` has just started managing (Zero, owned by `me`).
    pub(super) fn new(me: NodeIdx) -> Self {
        Self {
            owner: me,
            copyset: bit(me),
            lost: false,
            txn: None,
            queue: VecDeque::new(),
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.txn.is_none() && self.queue.is_empty()
    }

    pub(super) fn view(&self) -> ManagerView {
        ManagerView {
            owner: (self.copyset != 0).then_some(self.owner),
            copyset: self.copyset,
            lost: self.lost,
            busy: self.txn.is_some(),
            queued: self.queue.len(),
        }
    }
}

fn op(want: Want) -> Op {
    match want {
        Want::Read => Op::Read,
        Want::Write => Op::Write,
    }
}

impl Protocol {
    pub(super) fn handle_manager(
        &self,
        st: &mut PageState,
        page: PageNo,
        from: NodeIdx,
        msg: Msg,
        cx: &mut Ctx,
    ) -> Result<(), ProtocolError> {
        let (true, Some(m)) = (
            self.geometry.manager(page) == self.me,
            st.mgr.as_deref_mut(),
        ) else {
            let msg = msg.name();
            return Err(ProtocolError::NotManager { msg, from });
        };
        let node = &mut st.node;
        match msg {
            Msg::Req { want } => self.on_req(node, m, from, want, cx)?,
            Msg::Done { want } => self.on_done(node, m, from, want)?,
            Msg::InvAck => self.on_inv_ack(node, m, from, cx)?,
            Msg::Gone { lost } => self.on_gone(node, m, from, lost, cx)?,
            _ => return Err(unexpected(&msg, from, node)),
        }
        self.pump(node, m, cx);
        Ok(())
    }

    /// Queues the reset of a freed page (or reports a lost page retired at once).
    pub(super) fn enqueue_reset(&self, node: &mut NodeSide, m: &mut Manager, cx: &mut Ctx) {
        if m.lost {
            return cx.out.push(Action::ResetDone { retired: true });
        }
        m.queue.push_back(Entry {
            node: self.me,
            op: Op::Reset,
        });
        self.pump(node, m, cx);
    }

    fn on_req(
        &self,
        node: &mut NodeSide,
        m: &mut Manager,
        from: NodeIdx,
        want: Want,
        cx: &mut Ctx,
    ) -> Result<(), ProtocolError> {
        if m.lost {
            self.refuse(node, cx, from);
            return Ok(());
        }
        // A node has one request at a time. Its new request may overtake the `Done` of its
        // previous one (an upgrade after a read; or any request after a late `Fetch` of an
        // aborted transaction write-protected its copy): it waits in the queue like any other.
        if m.queue.iter().any(|e| e.node == from && e.op != Op::Reset) {
            return Err(unexpected(&Msg::Req { want }, from, node));
        }
        m.queue.push_back(Entry {
            node: from,
            op: op(want),
        });
        Ok(())
    }

    fn on_done(
        &self,
        node: &mut NodeSide,
        m: &mut Manager,
        from: NodeIdx,
        want: Want,
    ) -> Result<(), ProtocolError> {
        let ok = m.txn.is_some_and(|t| {
            t.requester == from
                && t.op == op(want)
                && !t.aborted
                && !matches!(t.stage, Stage::Inval { .. })
        });
        if !ok {
            return Err(unexpected(&Msg::Done { want }, from, node));
        }
        match want {
            Want::Read => {
                if m.copyset == 0 {
                    m.owner = from;
                }
                m.copyset |= bit(from);
            }
            Want::Write => {
                m.owner = from;
                m.copyset = bit(from);
            }
        }
        m.txn = None;
        Ok(())
    }

    fn on_inv_ack(
        &self,
        node: &mut NodeSide,
        m: &mut Manager,
        from: NodeIdx,
        cx: &mut Ctx,
    ) -> Result<(), ProtocolError> {
        let Some(Txn {
            stage: Stage::Inval { waiting },
            ..
        }) = m
            .txn
            .filter(|t| matches!(t.stage, Stage::Inval { waiting } if waiting & bit(from) != 0))
        else {
            return Err(unexpected(&Msg::InvAck, from, node));
        };
        let waiting = waiting & !bit(from);
        if let Some(t) = m.txn.as_mut() {
            t.stage = Stage::Inval { waiting };
        }
        if waiting == 0 {
            self.after_inval(node, m, cx);
        }
        Ok(())
    }

    /// `from`, waiting on its request, has declared `lost` gone: no data from `lost` can reach
    /// it any more, so a fetch orphaned by `lost` can be sent again without a risk of two.
    fn on_gone(
        &self,
        node: &mut NodeSide,
        m: &mut Manager,
        from: NodeIdx,
        lost: NodeIdx,
        cx: &mut Ctx,
    ) -> Result<(), ProtocolError> {
        if lost >= self.geometry.nodes() || lost == from || lost == self.me {
            return Err(unexpected(&Msg::Gone { lost }, from, node));
        }
        let orphan = Stage::Orphan { from: lost };
        if !m.lost
            && m.txn
                .is_some_and(|t| t.requester == from && t.stage == orphan)
        {
            self.dispatch(node, m, cx);
        }
        Ok(())
    }

    /// Refuses `to`'s request (the page is lost).
    fn refuse(&self, node: &mut NodeSide, cx: &mut Ctx, to: NodeIdx) {
        if to == self.me {
            become_lost(node, cx);
        } else {
            self.send(cx, to, Msg::Refuse, None);
        }
    }

    /// Starts queued requests while no transaction runs.
    fn pump(&self, node: &mut NodeSide, m: &mut Manager, cx: &mut Ctx) {
        while m.txn.is_none() && !m.lost {
            let Some(e) = m.queue.pop_front() else {
                break;
            };
            self.start(node, m, e, cx);
        }
    }

    fn start(&self, node: &mut NodeSide, m: &mut Manager, e: Entry, cx: &mut Ctx) {
        let want = match e.op {
            Op::Reset => return self.start_reset(node, m, cx),
            Op::Read => Want::Read,
            Op::Write => Want::Write,
        };
        if e.node == self.me {
            // This node's own request: it may have become moot (a reset made the page Zero).
            if node.pending.is_none() {
                return;
            }
            if node.local == Local::Zero {
                node.pending = None;
                node.local = Local::Write;
                let (access, src) = (Want::Write, InstallSrc::Zero);
                return cx.out.push(Action::Install { access, src });
            }
            if allows(node.local, want) {
                node.pending = None;
                return cx.out.push(Action::Wake);
            }
        }
        m.txn = Some(Txn {
            requester: e.node,
            op: e.op,
            stage: Stage::Grant,
            aborted: false,
        });
        self.dispatch(node, m, cx);
    }

    /// (Re)starts the current read or write transaction from the manager's knowledge.
    fn dispatch(&self, node: &mut NodeSide, m: &mut Manager, cx: &mut Ctx) {
        let Some(t) = m.txn else {
            return;
        };
        if m.copyset == 0 {
            return self.page_lost(node, m, cx);
        }
        let r = t.requester;
        let has = m.copyset & bit(r) != 0;
        match t.op {
            Op::Read => self.grant_or_fetch(m, Want::Read, cx),
            Op::Write => {
                let mut inval = m.copyset & !bit(r);
                if !has {
                    // The copy the data will come from is kept (and owns the page meanwhile).
                    m.owner = self.source(m);
                    inval &= !bit(m.owner);
                }
                m.copyset &= !inval;
                if has {
                    m.owner = r;
                }
                self.set_stage(m, Stage::Inval { waiting: inval });
                for n in members(inval) {
                    self.send(cx, n, Msg::Inval, None);
                }
                if inval == 0 {
                    self.after_inval(node, m, cx);
                }
            }
            Op::Reset => {}
        }
    }

    /// Where a fetch goes: this node if it holds a valid copy (all copies are equal when there
    /// are several, and this one is at hand), else the owner.
    fn source(&self, m: &Manager) -> NodeIdx {
        if m.copyset & bit(self.me) != 0 {
            self.me
        } else {
            m.owner
        }
    }

    /// The requester has a valid copy → `Grant`; else `Fetch` from [`Self::source`].
    fn grant_or_fetch(&self, m: &mut Manager, want: Want, cx: &mut Ctx) {
        let Some(t) = m.txn else {
            return;
        };
        let r = t.requester;
        if m.copyset & bit(r) != 0 {
            self.set_stage(m, Stage::Grant);
            self.send(cx, r, Msg::Grant { want }, None);
        } else {
            let from = self.source(m);
            self.set_stage(m, Stage::Fetch { from });
            let msg = Msg::Fetch { requester: r, want };
            self.send(cx, from, msg, None);
        }
    }

    fn set_stage(&self, m: &mut Manager, stage: Stage) {
        if let Some(t) = m.txn.as_mut() {
            t.stage = stage;
        }
    }

    /// Every invalidated copy is gone: continue the transaction.
    fn after_inval(&self, node: &mut NodeSide, m: &mut Manager, cx: &mut Ctx) {
        let Some(t) = m.txn else {
            return;
        };
        if t.aborted {
            m.txn = None;
            return;
        }
        match t.op {
            Op::Reset => self.finish_reset(node, m, cx),
            Op::Write if m.copyset == 0 => self.page_lost(node, m, cx),
            Op::Write => self.grant_or_fetch(m, Want::Write, cx),
            Op::Read => {}
        }
    }

    fn start_reset(&self, node: &mut NodeSide, m: &mut Manager, cx: &mut Ctx) {
        let inval = m.copyset & !bit(self.me);
        // The contents no longer matter: the page is this node's from now on.
        m.owner = self.me;
        m.copyset = bit(self.me);
        m.txn = Some(Txn {
            requester: self.me,
            op: Op::Reset,
            stage: Stage::Inval { waiting: inval },
            aborted: false,
        });
        for n in members(inval) {
            self.send(cx, n, Msg::Inval, None);
        }
        if inval == 0 {
            self.finish_reset(node, m, cx);
        }
    }

    fn finish_reset(&self, node: &mut NodeSide, m: &mut Manager, cx: &mut Ctx) {
        if matches!(node.local, Local::Read | Local::Write) {
            cx.out.push(Action::Drop);
        }
        node.local = Local::Zero;
        m.owner = self.me;
        m.copyset = bit(self.me);
        m.txn = None;
        cx.out.push(Action::ResetDone { retired: false });
    }

    /// No valid copy is left: the page is lost for good. Refuses every request.
    fn page_lost(&self, node: &mut NodeSide, m: &mut Manager, cx: &mut Ctx) {
        m.lost = true;
        m.copyset = 0;
        become_lost(node, cx);
        let current = m.txn.take().filter(|t| !t.aborted).map(|t| Entry {
            node: t.requester,
            op: t.op,
        });
        let queued = std::mem::take(&mut m.queue);
        for e in current.into_iter().chain(queued) {
            match e.op {
                Op::Reset => cx.out.push(Action::ResetDone { retired: true }),
                _ => self.refuse(node, cx, e.node),
            }
        }
    }

    pub(super) fn manager_peer_lost(
        &self,
        node: &mut NodeSide,
        m: &mut Manager,
        lost: NodeIdx,
        cx: &mut Ctx,
    ) {
        if m.lost {
            return;
        }
        m.queue.retain(|e| e.node != lost);
        m.copyset &= !bit(lost);
        let next = self.txn_peer_lost(m, lost);
        if m.copyset != 0 && m.copyset & bit(m.owner) == 0 {
            m.owner = lowest(m.copyset);
        }
        let hope = m
            .txn
            .is_some_and(|t| t.op == Op::Reset || matches!(t.stage, Stage::Orphan { .. }));
        if m.copyset == 0 && !hope {
            return self.page_lost(node, m, cx);
        }
        match next {
            Next::Dispatch => self.dispatch(node, m, cx),
            Next::AfterInval => self.after_inval(node, m, cx),
            Next::Ask(r) => self.send(cx, r, Msg::Gone { lost }, None),
            Next::Nothing => {}
        }
        self.pump(node, m, cx);
    }

    /// What the current transaction does about `lost`; returns how to continue it once the
    /// directory is updated.
    fn txn_peer_lost(&self, m: &mut Manager, lost: NodeIdx) -> Next {
        let Some(t) = m.txn.as_mut() else {
            return Next::Nothing;
        };
        if let Stage::Inval { waiting } = t.stage {
            // A lost node's ack counts as received.
            let waiting = waiting & !bit(lost);
            t.stage = Stage::Inval { waiting };
            if t.requester == lost {
                t.aborted = true;
            }
            return if waiting == 0 {
                Next::AfterInval
            } else {
                Next::Nothing
            };
        }
        if t.requester == lost {
            if t.op == Op::Write {
                // The copy was sent (or granted) to the lost node, or will be.
                m.copyset = 0;
            }
            m.txn = None;
            return Next::Nothing;
        }
        match t.stage {
            // This node knows its own request got nothing; another requester is asked.
            Stage::Fetch { from } if from == lost && t.requester == self.me => Next::Dispatch,
            Stage::Fetch { from } if from == lost => {
                t.stage = Stage::Orphan { from };
                Next::Ask(t.requester)
            }
            _ => Next::Nothing,
        }
    }
}

/// How a transaction continues after a peer loss.
enum Next {
    Nothing,
    Dispatch,
    AfterInval,
    /// Send `Gone { lost }` to this requester of an orphaned fetch.
    Ask(NodeIdx),
}
