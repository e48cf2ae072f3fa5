//! Everything that runs inside the guest: the `offload` command (and, later, the syscall shim
//! and the agent that creates shadows).
//!
//! The kernel module lives in `kmod/` (C, built by `images/build.sh` against the guest kernel);
//! [`abi`] mirrors its ioctl ABI, [`device`] wraps `/dev/offload`, [`cli`] parses the command's
//! arguments, [`report`] formats its output, [`run`] runs the `nodes` and `ping` subcommands,
//! [`mem`] maps the memory window and runs the `mem` subcommands, and [`forward`] runs
//! `serve` and `call` (forwarded system calls), [`launch`] runs `run` (a marked process),
//! [`record`] encodes and checks spawn records, and [`shadow`] runs `spawn`, `shadow` and
//! `ps`. Layout and the driver's design: `guest-shim/README.md`.

pub mod abi;
pub mod cli;
pub mod device;
pub mod forward;
pub mod launch;
pub mod mem;
pub mod record;
pub mod report;
pub mod run;
pub mod shadow;
