//! The monitors' syscall router (docs/offload-threads.md, section 4): a thread running in
//! this VM forwards its system calls to its home node, and calls forwarded by other nodes'
//! threads are handed to this VM's guest. Also the guest-to-guest messages that start and
//! end shadows (docs/offload-threads.md, "Interfaces for migration and shadows").
//!
//! - [`wire`]: the router's messages as transport `App` payloads of kind `0x0200`, and the
//!   64-byte call record.
//! - [`router`]: the protocol as a pure state machine (calls waiting for their home, calls
//!   waiting for this guest); the offload device (`devices::offload`) drives it.
//! - [`guestmsg`]: guest-to-guest messages (`GUEST_MSG`), carried as transport requests of
//!   `App` kind `0x0300`, as a pure state machine with its wire format.

pub mod guestmsg;
pub mod router;
pub mod wire;

pub use guestmsg::{GuestMsgStats, GuestMsgs, APP_KIND_GUEST_MSG, GUEST_MSG_TIMEOUT};
pub use router::{Arrival, Loss, Outgoing, Router, RouterError, RouterStats, MAX_OUTSTANDING};
pub use wire::{CallRecord, SysMsg, APP_KIND_SYSCALL};
