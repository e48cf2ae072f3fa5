//! The monitors' syscall router (docs/offload-threads.md, section 4): a thread running in
//! this VM forwards its system calls to its home node, and calls forwarded by other nodes'
//! threads are handed to this VM's guest.
//!
//! - [`wire`]: the router's messages as transport `App` payloads of kind `0x0200`, and the
//!   64-byte call record.
//! - [`router`]: the protocol as a pure state machine (calls waiting for their home, calls
//!   waiting for this guest); the offload device (`devices::offload`) drives it.

pub mod router;
pub mod wire;

pub use router::{Arrival, Loss, Outgoing, Router, RouterError, RouterStats, MAX_OUTSTANDING};
pub use wire::{CallRecord, SysMsg, APP_KIND_SYSCALL};
