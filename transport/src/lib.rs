//! Monitor-to-monitor protocol: typed messages, framing, authentication, heartbeats.
//!
//! This crate has no KVM dependency so it can be tested and fuzzed on its own. Layers, from
//! the wire up (each one pure and unit-tested, I/O only in [`driver`]):
//!
//! - [`frame`]: `u16` big-endian length + Noise message on the wire; the 16-byte plaintext
//!   header inside; an incremental decoder over byte buffers.
//! - [`message`]: typed messages and their hand-written little-endian payload encoding.
//! - [`session`]: one connection: `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s` handshake with the
//!   cluster PSK, Hello exchange, sealing and opening frames.
//! - [`link`]: the per-peer state machine (connect, handshake, up, down), heartbeats, loss
//!   detection, reconnection backoff, requests completing exactly once.
//! - [`node`]: all links of one node plus accepted connections and the Hello admission rules.
//! - [`driver`]: the I/O thread (mio) and the [`Transport`] handle the monitor uses, with an
//!   eventfd it can poll.
//! - [`cluster`] and [`config`]: who is in the cluster, the secret, the knobs.
//!
//! See `transport/README.md` for the wire format and the rules.

pub mod cluster;
pub mod config;
pub mod driver;
pub mod event;
pub mod frame;
pub mod link;
pub mod message;
pub mod node;
pub mod session;

pub use cluster::{Cluster, ClusterError, NodeId, Secret};
pub use config::{Config, ConfigError};
pub use driver::{DriverError, Transport, TransportSender};
pub use event::{Event, RequestError};
pub use message::{error_code, Hello, Message};

/// Version of the monitor-to-monitor protocol spoken by this build (header byte 0 and
/// `Hello.protocol_version`).
pub const PROTOCOL_VERSION: u8 = 1;
