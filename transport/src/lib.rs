//! Monitor-to-monitor protocol: typed messages, framing, authentication, heartbeats.
//!
//! This crate has no KVM dependency so it can be tested and fuzzed on its own.
//! It is filled in by the "two monitors" work; for now it only fixes the crate boundary.

/// Version of the monitor-to-monitor protocol spoken by this build.
pub const PROTOCOL_VERSION: u16 = 1;
