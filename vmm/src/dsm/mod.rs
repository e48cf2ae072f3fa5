//! The coherent window (DESIGN.md decision 4): a guest-physical range at the same address in
//! every VM, backed in each monitor by anonymous memory under userfaultfd and kept coherent
//! page by page by a single-writer / multiple-reader invalidation protocol (docs/dsm.md).
//!
//! - [`protocol`]: the per-page protocol as a pure state machine (tested by [`sim`]).
//! - [`wire`]: its messages as transport payloads.
//! - [`uffd`], [`backing`]: the userfaultfd binding and the backing memory.
//! - [`alloc`]: this node's slice allocator for the guest driver.
//! - [`engine`]: runs the protocol on the backing memory: fault threads, per-page locks,
//!   messages from and to the peers, lost peers.

pub mod alloc;
pub mod backing;
pub mod engine;
pub mod protocol;
pub mod uffd;
pub mod wire;

#[cfg(test)]
mod sim;

pub use engine::{Dsm, DsmError, DsmStats, LostPage, PeerSender};
