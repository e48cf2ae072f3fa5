//! This monitor's place in the cluster: the link to the other monitors (the `transport`
//! crate) as the offload device sees it, and the logging of peers coming and going.
//!
//! Device pings become transport requests; transport requests from peers become `PING_IN`
//! events for the guest; every transport outcome maps to the errno the guest driver returns.
//! The syscall router's messages travel as one-way `App` messages of kind
//! [`APP_KIND_SYSCALL`] (the DSM's as kind [`APP_KIND_DSM`]). Guest messages are transport
//! requests carrying an `App` message of kind [`APP_KIND_GUEST_MSG`], answered by a response
//! of the same kind; their payloads are encoded and checked by [`crate::offload::guestmsg`],
//! this module only carries them (and maps the transport's failures to errnos).

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::time::Duration;

use std::sync::Arc;

use transport::{Event, Message, NodeId, RequestError, Transport, TransportSender};

use crate::devices::offload::handler::ClusterLink;
use crate::devices::offload::protocol::{errno, PeerState};
use crate::devices::offload::{Inbound, Outbound};
use crate::dsm::wire::APP_KIND_DSM;
use crate::dsm::{Dsm, PeerSender};
use crate::offload::wire::{self as sys_wire, APP_KIND_SYSCALL};
pub use crate::offload::{APP_KIND_GUEST_MSG, GUEST_MSG_TIMEOUT};
use crate::ratelimit::RateLimiter;

/// How long a guest-to-guest ping may take before it fails with `ETIMEDOUT`.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The offload device's view of a running transport.
pub struct TransportLink {
    transport: Transport,
    /// Transport request id → device ping id.
    pings: HashMap<u64, u64>,
    /// Transport request id → device guest-message id.
    guest_msgs: HashMap<u64, u64>,
    refused: RateLimiter,
    dsm: Option<Arc<Dsm>>,
}

/// The DSM engine's way out: one-way `App` messages of kind [`APP_KIND_DSM`].
struct DsmSender(TransportSender);

impl PeerSender for DsmSender {
    fn send(&self, to: u16, payload: Vec<u8>) {
        let msg = Message::App {
            kind: APP_KIND_DSM,
            payload,
        };
        if let Err(e) = self.0.send(NodeId(to), msg) {
            log::debug!("dsm message to node {to} not sent: {e}");
        }
    }
}

impl TransportLink {
    /// Wraps a started transport.
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            pings: HashMap::new(),
            guest_msgs: HashMap::new(),
            refused: RateLimiter::new(module_path!(), Duration::from_secs(5)),
            dsm: None,
        }
    }

    fn name(&self, node: NodeId) -> String {
        self.transport.cluster().name(node).to_string()
    }

    fn map_event(&mut self, event: Event) -> Option<Inbound> {
        match event {
            Event::PeerUp { node } => {
                log::info!("peer {} is up", self.name(node));
                if let Some(d) = &self.dsm {
                    d.peer_up(node.0);
                }
                Some(peer_state(node, PeerState::Up))
            }
            Event::PeerDown { node, reason } => {
                log::warn!("peer {} is lost: {reason}", self.name(node));
                if let Some(d) = &self.dsm {
                    d.peer_lost(node.0);
                }
                Some(peer_state(node, PeerState::Lost))
            }
            Event::ConnectFailed { node, reason } => {
                let who = node.map_or_else(|| "an unknown peer".to_string(), |n| self.name(n));
                self.refused
                    .warn(format_args!("connection with {who} failed: {reason}"));
                None
            }
            Event::Request {
                node,
                id,
                message: Message::Ping { payload },
            } => Some(Inbound::PingIn {
                src: u32::from(node.0),
                request: id,
                payload,
            }),
            Event::Request {
                node,
                id,
                message: Message::App { kind, payload },
            } if kind == APP_KIND_GUEST_MSG => Some(Inbound::GuestMsgIn {
                src: u32::from(node.0),
                request: id,
                payload,
            }),
            Event::Request { node, id, message } => {
                log::warn!(
                    "peer {} sent an unsupported request {message:?}",
                    self.name(node)
                );
                let refusal = Message::Error {
                    code: transport::error_code::UNHANDLED,
                    message: "unsupported request".into(),
                };
                let _ = self.transport.respond(node, id, refusal);
                None
            }
            Event::Response { id, result, .. } => {
                if let Some(msg) = self.guest_msgs.remove(&id) {
                    return Some(Inbound::GuestMsgResult {
                        id: msg,
                        result: guest_msg_result(result),
                    });
                }
                let ping = self.pings.remove(&id)?;
                Some(Inbound::PingResult {
                    id: ping,
                    result: ping_result(result),
                })
            }
            Event::Message { node, message } => self.map_message(node, message),
        }
    }

    /// A one-way message from a peer: DSM traffic goes to the engine, syscall router
    /// messages to the device.
    fn map_message(&mut self, node: NodeId, message: Message) -> Option<Inbound> {
        match message {
            Message::App { kind, payload } if kind == APP_KIND_DSM && self.dsm.is_some() => {
                if let Some(d) = &self.dsm {
                    d.receive(node.0, &payload);
                }
                None
            }
            Message::App { kind, payload } if kind == APP_KIND_SYSCALL => Some(Inbound::Syscall {
                src: u32::from(node.0),
                payload,
            }),
            message => {
                log::debug!("peer {}: ignored message {message:?}", self.name(node));
                None
            }
        }
    }
}

impl TransportLink {
    /// Sends a router message; one that the transport refuses at once comes back.
    fn send_syscall(&mut self, node: u32, msg: sys_wire::SysMsg) -> Option<Inbound> {
        let unsent = Some(Inbound::SyscallUnsent { node, msg });
        let Ok(to) = u16::try_from(node) else {
            return unsent;
        };
        let app = Message::App {
            kind: APP_KIND_SYSCALL,
            payload: sys_wire::encode(&msg),
        };
        match self.transport.send(NodeId(to), app) {
            Ok(()) => None,
            Err(e) => {
                log::debug!("syscall {} to node {node} not sent: {e}", msg.name());
                unsent
            }
        }
    }
}

impl TransportLink {
    /// Sends a guest message as a transport request; one the transport refuses at once
    /// fails with `-ENOTCONN`.
    fn send_guest_msg(&mut self, node: u32, id: u64, payload: Vec<u8>) -> Option<Inbound> {
        let failed = Some(Inbound::GuestMsgResult {
            id,
            result: Err(errno::ENOTCONN),
        });
        let Ok(to) = u16::try_from(node) else {
            return failed;
        };
        let app = Message::App {
            kind: APP_KIND_GUEST_MSG,
            payload,
        };
        match self
            .transport
            .send_request(NodeId(to), app, GUEST_MSG_TIMEOUT)
        {
            Ok(rid) => {
                self.guest_msgs.insert(rid, id);
                None
            }
            Err(e) => {
                log::debug!("guest message to node {node} not sent: {e}");
                failed
            }
        }
    }
}

fn peer_state(node: NodeId, state: PeerState) -> Inbound {
    Inbound::PeerState {
        node: u32::from(node.0),
        state,
    }
}

/// The outcome of a guest message for the device: the reply's payload (checked there), or
/// the transport's failure as a positive errno, as for a ping. A reply that is not an `App`
/// message of the right kind becomes an empty payload, which the device counts as malformed.
fn guest_msg_result(result: Result<Message, RequestError>) -> Result<Vec<u8>, i32> {
    match result {
        Ok(Message::App { kind, payload }) if kind == APP_KIND_GUEST_MSG => Ok(payload),
        Ok(_) => Ok(Vec::new()),
        Err(e) => ping_result(Err(e)),
    }
}

/// The guest-visible outcome of a ping request.
fn ping_result(result: Result<Message, RequestError>) -> Result<Vec<u8>, i32> {
    match result {
        Ok(Message::Pong { payload }) => Ok(payload),
        Ok(_) => Err(errno::EINVAL),
        Err(RequestError::PeerLost | RequestError::Shutdown) => Err(errno::ECONNRESET),
        Err(RequestError::Timeout) => Err(errno::ETIMEDOUT),
        Err(RequestError::NotConnected) => Err(errno::ENOTCONN),
        Err(RequestError::Remote { .. }) => Err(errno::EBUSY),
        Err(RequestError::Invalid(_)) => Err(errno::EINVAL),
    }
}

impl ClusterLink for TransportLink {
    fn send(&mut self, msg: Outbound) -> Option<Inbound> {
        match msg {
            Outbound::Ping { node, id, payload } => {
                let to = NodeId(u16::try_from(node).ok()?);
                match self
                    .transport
                    .send_request(to, Message::Ping { payload }, PING_TIMEOUT)
                {
                    Ok(rid) => {
                        self.pings.insert(rid, id);
                        None
                    }
                    Err(e) => {
                        log::debug!("ping to node {node} not sent: {e}");
                        Some(Inbound::PingResult {
                            id,
                            result: Err(errno::ENOTCONN),
                        })
                    }
                }
            }
            Outbound::Pong {
                node,
                request,
                payload,
            } => {
                let to = NodeId(u16::try_from(node).ok()?);
                if let Err(e) = self
                    .transport
                    .respond(to, request, Message::Pong { payload })
                {
                    log::debug!("pong to node {node} not sent: {e}");
                }
                None
            }
            Outbound::Syscall { node, msg } => self.send_syscall(node, msg),
            Outbound::GuestMsg { node, id, payload } => self.send_guest_msg(node, id, payload),
            Outbound::GuestMsgRet {
                node,
                request,
                payload,
            } => {
                let to = NodeId(u16::try_from(node).ok()?);
                let app = Message::App {
                    kind: APP_KIND_GUEST_MSG,
                    payload,
                };
                if let Err(e) = self.transport.respond(to, request, app) {
                    log::debug!("guest message reply to node {node} not sent: {e}");
                }
                None
            }
        }
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.transport.event_fd())
    }

    fn attach_dsm(&mut self, dsm: Arc<Dsm>) {
        dsm.set_sender(Arc::new(DsmSender(self.transport.sender())));
        self.dsm = Some(dsm);
    }

    fn poll(&mut self) -> Vec<Inbound> {
        let events = self.transport.events();
        events
            .into_iter()
            .filter_map(|e| self.map_event(e))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_outcomes_map_to_guest_errnos() {
        assert_eq!(
            ping_result(Ok(Message::Pong { payload: vec![1] })),
            Ok(vec![1])
        );
        assert_eq!(
            ping_result(Err(RequestError::PeerLost)),
            Err(errno::ECONNRESET)
        );
        assert_eq!(
            ping_result(Err(RequestError::Timeout)),
            Err(errno::ETIMEDOUT)
        );
        assert_eq!(
            ping_result(Err(RequestError::NotConnected)),
            Err(errno::ENOTCONN)
        );
        assert_eq!(ping_result(Ok(Message::Heartbeat)), Err(errno::EINVAL));
    }

    #[test]
    fn guest_message_replies_carry_their_payload_or_errno() {
        let reply = Ok(Message::App {
            kind: APP_KIND_GUEST_MSG,
            payload: vec![1, 2],
        });
        assert_eq!(guest_msg_result(reply), Ok(vec![1, 2]));
        let other_kind = Ok(Message::App {
            kind: APP_KIND_SYSCALL,
            payload: vec![0; 8],
        });
        assert_eq!(guest_msg_result(other_kind), Ok(vec![]));
        assert_eq!(guest_msg_result(Ok(Message::Heartbeat)), Ok(vec![]));
        assert_eq!(
            guest_msg_result(Err(RequestError::Timeout)),
            Err(errno::ETIMEDOUT)
        );
        assert_eq!(
            guest_msg_result(Err(RequestError::PeerLost)),
            Err(errno::ECONNRESET)
        );
    }
}
