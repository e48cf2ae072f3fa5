//! Everything that runs inside the guest: the `offload` command, the syscall shim and the agent.
//!
//! The kernel module lives in `kmod/` (C, built by `images/build.sh` against the guest kernel).
//! This crate is filled in by the offload work; for now it only fixes the crate boundary.
