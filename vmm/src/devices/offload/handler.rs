//! Event-loop side of the offload device: wakes on the queues' notification eventfds and on
//! the cluster link, moves work between the device state machine and the cluster, and never
//! blocks (the device lock is held only while the state machine runs).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::{Inbound, OffloadDevice, Outbound};
use crate::dsm::Dsm;

/// The cluster as the offload device sees it: where outbound messages go and where inbound
/// ones come from. Implemented over the transport by the cluster module; a single node has
/// no link.
pub trait ClusterLink: Send {
    /// Sends (or queues) a message; never blocks. A message that fails at once (peer not
    /// connected) comes back as its result.
    fn send(&mut self, msg: Outbound) -> Option<Inbound>;
    /// A descriptor that becomes readable when [`ClusterLink::poll`] has something.
    fn wake_fd(&self) -> Option<RawFd>;
    /// Everything that arrived since the last call.
    fn poll(&mut self) -> Vec<Inbound>;
    /// Carries the DSM engine's messages and peer events from now on (no-op without peers).
    fn attach_dsm(&mut self, _dsm: Arc<Dsm>) {}
}

/// No cluster: this node is alone (peers are all down).
pub struct NoCluster;

impl ClusterLink for NoCluster {
    fn send(&mut self, msg: Outbound) -> Option<Inbound> {
        match msg {
            Outbound::Ping { id, .. } => Some(Inbound::PingResult {
                id,
                result: Err(super::protocol::errno::ENOTCONN),
            }),
            Outbound::GuestMsg { id, .. } => Some(Inbound::GuestMsgResult {
                id,
                result: Err(super::protocol::errno::ENOTCONN),
            }),
            Outbound::Pong { .. } | Outbound::GuestMsgRet { .. } => None,
            Outbound::Syscall { node, msg } => Some(Inbound::SyscallUnsent { node, msg }),
        }
    }
    fn wake_fd(&self) -> Option<RawFd> {
        None
    }
    fn poll(&mut self) -> Vec<Inbound> {
        vec![]
    }
}

const TOKEN_REQUESTS: u32 = 0;
const TOKEN_EVENTS: u32 = 1;
const TOKEN_CLUSTER: u32 = 2;
const TOKEN_LOST_PAGES: u32 = 3;

/// The subscriber that drives one offload device.
pub struct OffloadHandler {
    device: Arc<Mutex<OffloadDevice>>,
    queue_evts: [EventFd; 2],
    cluster: Box<dyn ClusterLink>,
    dsm: Option<Arc<Dsm>>,
}

impl OffloadHandler {
    /// Drives `device`, woken by `queue_evts` (requests, events) and `cluster`.
    pub fn new(
        device: Arc<Mutex<OffloadDevice>>,
        queue_evts: [EventFd; 2],
        cluster: Box<dyn ClusterLink>,
    ) -> Self {
        Self {
            device,
            queue_evts,
            cluster,
            dsm: None,
        }
    }

    /// Serves the window from `dsm`: the device's window requests, the DSM's traffic through
    /// the cluster link, and its lost pages as guest events.
    pub fn attach_dsm(&mut self, dsm: Arc<Dsm>) {
        self.lock().set_window(dsm.clone());
        self.cluster.attach_dsm(dsm.clone());
        self.dsm = Some(dsm);
    }

    /// The device this handler drives.
    pub fn device(&self) -> Arc<Mutex<OffloadDevice>> {
        self.device.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OffloadDevice> {
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_requests(&mut self) {
        let _ = self.queue_evts[0].read();
        let (out, more) = self.lock().process_requests();
        self.forward(out);
        if more {
            // Come back after the other events of this round: a flooding guest cannot starve
            // the loop.
            let _ = self.queue_evts[0].write(1);
        }
    }

    fn on_cluster(&mut self) {
        for inbound in self.cluster.poll() {
            let out = self.lock().handle(inbound);
            self.forward(out);
        }
    }

    fn forward(&mut self, out: Vec<Outbound>) {
        let mut queue: std::collections::VecDeque<Outbound> = out.into();
        while let Some(msg) = queue.pop_front() {
            if let Some(result) = self.cluster.send(msg) {
                queue.extend(self.lock().handle(result));
            }
        }
    }

    fn on_lost_pages(&mut self) {
        let Some(dsm) = self.dsm.clone() else { return };
        let lost = dsm.take_lost();
        if lost.is_empty() {
            return;
        }
        {
            let mut device = self.lock();
            for run in lost.chunk_by(|x, y| x.node == y.node) {
                let shown: Vec<String> = run
                    .iter()
                    .take(8)
                    .map(|p| format!("{:#x}", p.offset()))
                    .collect();
                log::warn!(
                    "window: {} pages lost with node {} (offsets {}{}); the guest kills the processes using them",
                    run.len(),
                    run[0].node,
                    shown.join(" "),
                    if run.len() > 8 { " ..." } else { "" }
                );
                let offsets: Vec<u64> = run.iter().map(|p| p.offset()).collect();
                device.pages_lost(run[0].node, &offsets);
            }
        }
        // Let the guest take the event (and signal the processes) before the vCPUs stuck on
        // those pages continue.
        std::thread::sleep(LOST_GRACE);
        dsm.resolve_lost(&lost);
    }
}

/// How long a vCPU stuck on a lost page stays stuck after the guest was told of the loss.
const LOST_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

impl MutEventSubscriber for OffloadHandler {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            TOKEN_REQUESTS => self.on_requests(),
            TOKEN_EVENTS => {
                let _ = self.queue_evts[1].read();
                self.lock().process_event_buffers();
            }
            TOKEN_CLUSTER => self.on_cluster(),
            TOKEN_LOST_PAGES => self.on_lost_pages(),
            _ => {}
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let mut add = |fd: RawFd, token| {
            if let Err(e) = ops.add(Events::with_data_raw(fd, token, EventSet::IN)) {
                log::error!("offload: cannot watch fd {fd}: {e:?}");
            }
        };
        add(self.queue_evts[0].as_raw_fd(), TOKEN_REQUESTS);
        add(self.queue_evts[1].as_raw_fd(), TOKEN_EVENTS);
        if let Some(fd) = self.cluster.wake_fd() {
            add(fd, TOKEN_CLUSTER);
        }
        if let Some(dsm) = &self.dsm {
            add(dsm.lost_event_fd(), TOKEN_LOST_PAGES);
        }
    }
}
