//! The DSM page-coherence protocol (docs/dsm.md) as a pure, per-page state machine.
//!
//! [`Protocol`] holds what never changes on a node: its index and the window [`Geometry`].
//! [`PageState`] is one page's state on that node: the local copy ([`Local`]), the request this
//! node waits on, and, on the page's manager only, the manager's directory (owner, copy set,
//! current transaction, queue of requests). Every input — a guest fault, a peer's message, a
//! peer's loss, a reset of a freed page — mutates one `PageState` and returns the [`Action`]s
//! the engine executes, in order, under that page's lock. Messages a node sends to itself (the
//! manager faulting on its own pages) are handled inside, in order, and never appear as
//! actions. No I/O, clocks or threads here: `sim.rs` drives this code through random
//! schedules with unordered delivery and lost nodes.

use std::collections::VecDeque;
use std::ops::Range;

use thiserror::Error;

/// A node's index in the cluster (its position in `--peers`).
pub type NodeIdx = u16;
/// A page of the window, counted from the window's start.
pub type PageNo = u64;
/// Size of a protocol page.
pub const PAGE_SIZE: usize = 4096;
/// Most nodes a window can span (node sets are `u64` bit masks).
pub const MAX_NODES: usize = 64;

/// Why an input was refused. The page state is unchanged whenever one is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("invalid geometry: {0}")]
    Geometry(&'static str),
    #[error("node {0} out of range")]
    Node(NodeIdx),
    #[error("page {0} out of range")]
    Page(PageNo),
    #[error("{msg} from node {from}, but this node does not manage the page")]
    NotManager { msg: &'static str, from: NodeIdx },
    #[error("{msg} from node {from}, but only the manager (node {manager}) sends it")]
    NotFromManager {
        msg: &'static str,
        from: NodeIdx,
        manager: NodeIdx,
    },
    #[error("{msg} from lost node {from}")]
    FromLost { msg: &'static str, from: NodeIdx },
    #[error("{msg} from this node itself")]
    FromSelf { msg: &'static str },
    #[error("unexpected {msg} from node {from} (local {local:?}, pending {pending:?})")]
    Unexpected {
        msg: &'static str,
        from: NodeIdx,
        local: Local,
        pending: Option<Want>,
    },
    #[error("reset of page {0}, which this node does not manage")]
    ResetNotManager(PageNo),
}

/// The access a fault or a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Read,
    Write,
}

impl Want {
    fn local(self) -> Local {
        match self {
            Want::Read => Local::Read,
            Want::Write => Local::Write,
        }
    }
}

/// How the window's pages are split among the nodes: node `i` manages the pages
/// `[i * per, (i + 1) * per)` with `per = pages / nodes`; the last node also the remainder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pages: u64,
    nodes: u16,
}

impl Geometry {
    /// `nodes` in 1..=64 and at least one page per node.
    pub fn new(pages: u64, nodes: u16) -> Result<Self, ProtocolError> {
        if nodes == 0 || usize::from(nodes) > MAX_NODES {
            return Err(ProtocolError::Geometry("node count must be 1 to 64"));
        }
        if pages < u64::from(nodes) {
            return Err(ProtocolError::Geometry("fewer pages than nodes"));
        }
        Ok(Self { pages, nodes })
    }

    pub fn pages(&self) -> u64 {
        self.pages
    }

    pub fn nodes(&self) -> u16 {
        self.nodes
    }

    fn per(&self) -> u64 {
        self.pages / u64::from(self.nodes)
    }

    /// The node that manages `page`: `min(page / per, nodes - 1)`.
    pub fn manager(&self, page: PageNo) -> NodeIdx {
        let last = self.nodes - 1;
        NodeIdx::try_from(page / self.per()).map_or(last, |n| n.min(last))
    }

    /// The pages `node` manages (empty for a node out of range).
    pub fn slice(&self, node: NodeIdx) -> Range<PageNo> {
        if node >= self.nodes {
            return self.pages..self.pages;
        }
        let start = u64::from(node) * self.per();
        let end = if node + 1 == self.nodes {
            self.pages
        } else {
            start + self.per()
        };
        start..end
    }
}

/// This node's copy of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Exclusive owner of an all-zero page that is not populated (the manager, initially and
    /// after a reset).
    Zero,
    /// No valid copy; not populated.
    None,
    /// Valid read-only copy: populated, write-protected.
    Read,
    /// Exclusive writable copy: populated, not protected.
    Write,
    /// Abandoned after a peer loss: populated, writable, contents meaningless, never coherent
    /// again.
    Lost,
}

/// A protocol message about one page (the page number travels next to it, see `wire.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// Requester → manager: give me `want` access.
    Req { want: Want },
    /// Manager → owner: send your copy to `requester` (and, for `Write`, give it up).
    Fetch { requester: NodeIdx, want: Want },
    /// Owner → requester: the page contents (4096 bytes follow on the wire).
    Data { want: Want },
    /// Manager → requester: your copy is valid, take `want` access without data.
    Grant { want: Want },
    /// Requester → manager: installed; the transaction is over.
    Done { want: Want },
    /// Manager → copy holder: drop your copy.
    Inval,
    /// Copy holder → manager: dropped.
    InvAck,
    /// Manager → requester: the page is lost.
    Refuse,
    /// `lost` is gone for the sender. Requester → manager (when it declares `lost` lost while
    /// waiting on a request, or as the answer to the manager's `Gone`): no data from `lost`
    /// will ever reach it, so the manager may fetch again from another copy without ever
    /// causing a second `Data`. Manager → requester: a fetch for your request went to `lost`;
    /// answer with `Gone` once you have declared it lost too (docs/dsm.md, "Orphaned fetches").
    Gone { lost: NodeIdx },
}

impl Msg {
    /// A short lower-case name for statistics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Req { .. } => "req",
            Msg::Fetch { .. } => "fetch",
            Msg::Data { .. } => "data",
            Msg::Grant { .. } => "grant",
            Msg::Done { .. } => "done",
            Msg::Inval => "inval",
            Msg::InvAck => "inv_ack",
            Msg::Refuse => "refuse",
            Msg::Gone { .. } => "gone",
        }
    }
}

/// Contents attached to a sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSrc {
    /// This node's populated copy, read when the `Send` executes.
    Local,
    /// 4096 zero bytes.
    Zero,
}

/// Contents an `Install` puts into the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallSrc {
    /// The data carried by the message being handled.
    Message,
    /// 4096 zero bytes.
    Zero,
}

/// What the engine must do, in list order, under the page's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send `msg` about this page to `to` (never to self: self-messages are processed inside the
    /// machine). `data`: attach the page contents — `Local` = read this node's populated copy at
    /// the time this action executes (earlier actions of the same list have run), `Zero` = 4096 zeros.
    Send {
        to: NodeIdx,
        msg: Msg,
        data: Option<DataSrc>,
    },
    /// Populate the (unpopulated) page with the data of the message being handled (or zeros),
    /// write-protected if `access == Read`; wakes every thread faulting on it.
    Install { access: Want, src: InstallSrc },
    /// Change the protection of the populated page: Read = write-protect, Write = remove the
    /// protection and wake faulting threads.
    Protect { access: Want },
    /// Unpopulate the page (MADV_DONTNEED).
    Drop,
    /// Wake threads faulting on the page (stale fault: the page already allows the access).
    Wake,
    /// The page just became Lost on this node (emitted once): make it accessible (populated →
    /// remove protection + wake; not populated → install zeros writable) and tell the guest.
    Lost { populated: bool },
    /// A reset started by `reset` finished; `retired` = the page was lost and must never be reused.
    ResetDone { retired: bool },
}

/// The non-manager part of a page's state (every node has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodeSide {
    local: Local,
    pending: Option<Want>,
}

impl NodeSide {
    /// A request is pending and no copy is here: the answer must bring data. (A node that
    /// holds a copy got the data of any earlier fetch, and its pending request is an upgrade
    /// that will be granted without data.)
    fn waits_for_data(&self) -> bool {
        self.pending.is_some() && self.local == Local::None
    }
}

/// One page's protocol state on one node.
#[derive(Debug, Clone)]
pub struct PageState {
    node: NodeSide,
    mgr: Option<Box<manager::Manager>>,
}

/// A read-only summary of the manager's directory (for statistics, logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagerView {
    /// The owner, if any node holds a valid copy.
    pub owner: Option<NodeIdx>,
    /// Nodes with a valid copy.
    pub copyset: u64,
    /// The page is lost for good.
    pub lost: bool,
    /// A transaction is in progress.
    pub busy: bool,
    /// Requests waiting behind it.
    pub queued: usize,
}

impl PageState {
    pub fn local(&self) -> Local {
        self.node.local
    }

    /// The request this node waits on.
    pub fn pending(&self) -> Option<Want> {
        self.node.pending
    }

    /// No request pending, and (at the manager) no transaction and no queued request.
    pub fn is_idle(&self) -> bool {
        let manager_idle = match &self.mgr {
            Some(m) => m.is_idle(),
            None => true,
        };
        self.node.pending.is_none() && manager_idle
    }

    /// The manager's directory, on the page's manager only.
    pub fn manager_view(&self) -> Option<ManagerView> {
        self.mgr.as_ref().map(|m| m.view())
    }
}

/// Actions produced so far and self-addressed messages still to handle, in order.
#[derive(Default)]
struct Ctx {
    out: Vec<Action>,
    work: VecDeque<Msg>,
    /// The peers this node knows lost (as the engine passed them).
    lost_peers: u64,
}

impl Ctx {
    fn new(lost_peers: u64) -> Self {
        Self {
            lost_peers,
            ..Self::default()
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Self-addressed messages the machine rejected (a bug); the simulator checks it stays 0.
    pub(crate) static INTERNAL_ERRORS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn bit(n: NodeIdx) -> u64 {
    1u64.checked_shl(u32::from(n)).unwrap_or(0)
}

fn lowest(set: u64) -> NodeIdx {
    NodeIdx::try_from(set.trailing_zeros()).unwrap_or(0)
}

fn members(set: u64) -> impl Iterator<Item = NodeIdx> {
    (0..64u16).filter(move |&n| set & bit(n) != 0)
}

fn allows(local: Local, want: Want) -> bool {
    match want {
        Want::Read => matches!(local, Local::Read | Local::Write),
        Want::Write => local == Local::Write,
    }
}

fn populated(local: Local) -> bool {
    matches!(local, Local::Read | Local::Write | Local::Lost)
}

fn unexpected(msg: &Msg, from: NodeIdx, node: &NodeSide) -> ProtocolError {
    ProtocolError::Unexpected {
        msg: msg.name(),
        from,
        local: node.local,
        pending: node.pending,
    }
}

/// The page becomes Lost on this node (once).
fn become_lost(node: &mut NodeSide, cx: &mut Ctx) {
    if node.local != Local::Lost {
        let populated = populated(node.local);
        node.local = Local::Lost;
        node.pending = None;
        cx.out.push(Action::Lost { populated });
    }
}

/// A node's view of the protocol: its index and the window geometry.
#[derive(Debug, Clone, Copy)]
pub struct Protocol {
    me: NodeIdx,
    geometry: Geometry,
}

impl Protocol {
    pub fn new(me: NodeIdx, geometry: Geometry) -> Result<Self, ProtocolError> {
        if me >= geometry.nodes() {
            return Err(ProtocolError::Node(me));
        }
        Ok(Self { me, geometry })
    }

    pub fn me(&self) -> NodeIdx {
        self.me
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Initial state: Local::Zero (owner, copyset {me}) for pages this node manages, Local::None otherwise.
    pub fn page_state(&self, page: PageNo) -> PageState {
        if self.geometry.manager(page) != self.me {
            let node = NodeSide {
                local: Local::None,
                pending: None,
            };
            return PageState { node, mgr: None };
        }
        PageState {
            node: NodeSide {
                local: Local::Zero,
                pending: None,
            },
            mgr: Some(Box::new(manager::Manager::new(self.me))),
        }
    }

    /// A guest access `want` faulted on `page`. `lost_peers` = bitmask of nodes known lost: a fault
    /// needing a request to a lost manager makes the page Lost immediately.
    pub fn fault(
        &self,
        st: &mut PageState,
        page: PageNo,
        want: Want,
        lost_peers: u64,
    ) -> Vec<Action> {
        let node = &mut st.node;
        if node.local == Local::Lost || allows(node.local, want) {
            return vec![Action::Wake];
        }
        if node.local == Local::Zero {
            node.local = Local::Write;
            return vec![Action::Install {
                access: Want::Write,
                src: InstallSrc::Zero,
            }];
        }
        if node.pending.is_some() {
            return Vec::new();
        }
        let mut cx = Ctx::new(lost_peers);
        let manager = self.geometry.manager(page);
        if manager != self.me && lost_peers & bit(manager) != 0 {
            become_lost(node, &mut cx);
            return cx.out;
        }
        node.pending = Some(want);
        self.send(&mut cx, manager, Msg::Req { want }, None);
        self.run(st, page, &mut cx);
        cx.out
    }

    /// A message from peer `from` (never self). Unexpected messages (wrong role, wrong state, from a
    /// lost peer, page not managed here for manager-bound messages, etc.) → Err, state unchanged.
    pub fn receive(
        &self,
        st: &mut PageState,
        page: PageNo,
        from: NodeIdx,
        msg: Msg,
        lost_peers: u64,
    ) -> Result<Vec<Action>, ProtocolError> {
        if page >= self.geometry.pages() {
            return Err(ProtocolError::Page(page));
        }
        if from == self.me {
            return Err(ProtocolError::FromSelf { msg: msg.name() });
        }
        if from >= self.geometry.nodes() {
            return Err(ProtocolError::Node(from));
        }
        if lost_peers & bit(from) != 0 {
            let msg = msg.name();
            return Err(ProtocolError::FromLost { msg, from });
        }
        let mut cx = Ctx::new(lost_peers);
        self.handle(st, page, from, msg, &mut cx)?;
        self.run(st, page, &mut cx);
        Ok(cx.out)
    }

    /// Peer `lost` is gone for good (called by the engine for EVERY page after it set the lost bit).
    pub fn peer_lost(&self, st: &mut PageState, page: PageNo, lost: NodeIdx) -> Vec<Action> {
        if lost >= self.geometry.nodes() || lost == self.me {
            return Vec::new();
        }
        let mut cx = Ctx::new(bit(lost));
        let manager = self.geometry.manager(page);
        if manager == self.me {
            if let Some(m) = st.mgr.as_deref_mut() {
                self.manager_peer_lost(&mut st.node, m, lost, &mut cx);
            }
        } else if manager == lost {
            if st.node.pending.is_some() || matches!(st.node.local, Local::Read | Local::Write) {
                become_lost(&mut st.node, &mut cx);
            }
        } else if st.node.waits_for_data() {
            self.send(&mut cx, manager, Msg::Gone { lost }, None);
        }
        self.run(st, page, &mut cx);
        cx.out
    }

    /// The manager's guest freed this page: invalidate every copy and return the page to Zero
    /// (ResetDone{retired:false}), or ResetDone{retired:true} if it is lost. Err if not the manager.
    pub fn reset(
        &self,
        st: &mut PageState,
        page: PageNo,
        lost_peers: u64,
    ) -> Result<Vec<Action>, ProtocolError> {
        if page >= self.geometry.pages() {
            return Err(ProtocolError::Page(page));
        }
        let (true, Some(m)) = (
            self.geometry.manager(page) == self.me,
            st.mgr.as_deref_mut(),
        ) else {
            return Err(ProtocolError::ResetNotManager(page));
        };
        let mut cx = Ctx::new(lost_peers);
        self.enqueue_reset(&mut st.node, m, &mut cx);
        self.run(st, page, &mut cx);
        Ok(cx.out)
    }

    // ---- plumbing -------------------------------------------------------------------------

    /// Sends `msg`, or queues it for handling here if it is addressed to this node.
    fn send(&self, cx: &mut Ctx, to: NodeIdx, msg: Msg, data: Option<DataSrc>) {
        if to == self.me {
            cx.work.push_back(msg);
        } else {
            cx.out.push(Action::Send { to, msg, data });
        }
    }

    /// Handles the self-addressed messages, in the order they were produced.
    fn run(&self, st: &mut PageState, page: PageNo, cx: &mut Ctx) {
        while let Some(msg) = cx.work.pop_front() {
            if let Err(e) = self.handle(st, page, self.me, msg, cx) {
                log::error!("dsm: page {page}: own {} rejected: {e}", msg.name());
                #[cfg(test)]
                INTERNAL_ERRORS.with(|c| c.set(c.get() + 1));
            }
        }
    }

    fn handle(
        &self,
        st: &mut PageState,
        page: PageNo,
        from: NodeIdx,
        msg: Msg,
        cx: &mut Ctx,
    ) -> Result<(), ProtocolError> {
        let manager = self.geometry.manager(page);
        match msg {
            Msg::Req { .. } | Msg::Done { .. } | Msg::InvAck => {
                self.handle_manager(st, page, from, msg, cx)
            }
            Msg::Gone { .. } if manager == self.me => self.handle_manager(st, page, from, msg, cx),
            Msg::Data { want } => self.on_data(&mut st.node, page, from, want, cx),
            _ => {
                if from != manager {
                    let msg = msg.name();
                    return Err(ProtocolError::NotFromManager { msg, from, manager });
                }
                let node = &mut st.node;
                match msg {
                    Msg::Fetch { requester, want } => {
                        self.on_fetch(node, from, requester, want, cx)
                    }
                    Msg::Grant { want } => self.on_grant(node, page, want, cx),
                    Msg::Inval => self.on_inval(node, page, cx),
                    Msg::Gone { lost } => self.on_gone_asked(node, manager, lost, cx),
                    _ => self.on_refuse(node, cx),
                }
            }
        }
    }

    // ---- every node -----------------------------------------------------------------------

    /// The manager asks this node, the owner, to send its copy to `requester`.
    fn on_fetch(
        &self,
        node: &mut NodeSide,
        from: NodeIdx,
        requester: NodeIdx,
        want: Want,
        cx: &mut Ctx,
    ) -> Result<(), ProtocolError> {
        let msg = Msg::Fetch { requester, want };
        let owner = matches!(node.local, Local::Read | Local::Write | Local::Zero);
        if !owner || requester == self.me || requester >= self.geometry.nodes() {
            return Err(unexpected(&msg, from, node));
        }
        let was = node.local;
        if was == Local::Write {
            cx.out.push(Action::Protect { access: Want::Read });
        }
        if was == Local::Zero && want == Want::Read {
            cx.out.push(Action::Install {
                access: Want::Read,
                src: InstallSrc::Zero,
            });
        }
        let src = if was == Local::Zero {
            DataSrc::Zero
        } else {
            DataSrc::Local
        };
        self.send(cx, requester, Msg::Data { want }, Some(src));
        if want == Want::Write {
            if populated(was) {
                cx.out.push(Action::Drop);
            }
            node.local = Local::None;
        } else {
            node.local = Local::Read;
        }
        Ok(())
    }

    /// The owner's copy arrives for this node's pending request.
    fn on_data(
        &self,
        node: &mut NodeSide,
        page: PageNo,
        from: NodeIdx,
        want: Want,
        cx: &mut Ctx,
    ) -> Result<(), ProtocolError> {
        if node.pending != Some(want) || node.local != Local::None {
            return Err(unexpected(&Msg::Data { want }, from, node));
        }
        cx.out.push(Action::Install {
            access: want,
            src: InstallSrc::Message,
        });
        node.local = want.local();
        node.pending = None;
        self.send(cx, self.geometry.manager(page), Msg::Done { want }, None);
        Ok(())
    }

    /// The manager lets this node's valid copy serve its pending request.
    fn on_grant(
        &self,
        node: &mut NodeSide,
        page: PageNo,
        want: Want,
        cx: &mut Ctx,
    ) -> Result<(), ProtocolError> {
        let manager = self.geometry.manager(page);
        let fits = match want {
            Want::Read => matches!(node.local, Local::Read | Local::Write),
            Want::Write => node.local == Local::Read,
        };
        if node.pending != Some(want) || !fits {
            return Err(unexpected(&Msg::Grant { want }, manager, node));
        }
        cx.out.push(match want {
            Want::Read => Action::Wake,
            Want::Write => Action::Protect {
                access: Want::Write,
            },
        });
        if want == Want::Write {
            node.local = Local::Write;
        }
        node.pending = None;
        self.send(cx, manager, Msg::Done { want }, None);
        Ok(())
    }

    fn on_inval(
        &self,
        node: &mut NodeSide,
        page: PageNo,
        cx: &mut Ctx,
    ) -> Result<(), ProtocolError> {
        let manager = self.geometry.manager(page);
        if !matches!(node.local, Local::Read | Local::Write) {
            return Err(unexpected(&Msg::Inval, manager, node));
        }
        cx.out.push(Action::Drop);
        node.local = Local::None;
        self.send(cx, manager, Msg::InvAck, None);
        Ok(())
    }

    /// The manager's fetch for this node's request went to `lost`: confirm once this node has
    /// declared `lost` lost (if it has not, its `peer_lost` will; if nothing is pending, the
    /// data arrived and the `Done` is on its way).
    fn on_gone_asked(
        &self,
        node: &mut NodeSide,
        manager: NodeIdx,
        lost: NodeIdx,
        cx: &mut Ctx,
    ) -> Result<(), ProtocolError> {
        if lost >= self.geometry.nodes() || lost == self.me || lost == manager {
            return Err(unexpected(&Msg::Gone { lost }, manager, node));
        }
        if node.waits_for_data() && cx.lost_peers & bit(lost) != 0 {
            self.send(cx, manager, Msg::Gone { lost }, None);
        }
        Ok(())
    }

    /// The manager says the page is lost (possibly again: a duplicate changes nothing).
    fn on_refuse(&self, node: &mut NodeSide, cx: &mut Ctx) -> Result<(), ProtocolError> {
        become_lost(node, cx);
        Ok(())
    }
}

#[path = "protocol/manager.rs"]
mod manager;

#[cfg(test)]
#[path = "protocol/tests.rs"]
mod tests;
