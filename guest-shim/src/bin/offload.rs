//! The `offload` command (runs inside the guest): `offload nodes`, `offload ping NODE`,
//! `offload mem ...` (the memory window), `offload serve` / `offload call` (forwarded
//! system calls), `offload run` (a marked process), `offload ps` / `offload spawn` /
//! `offload shadow` (shadows; `shadow` is started by offload.ko).
//! Exit status: 0 on success (for ping: every reply came back intact), 1 on failure,
//! 2 on bad usage. Built statically by images/build.sh into build/guest-bin/offload.

use std::io::{self, Write};
use std::process::ExitCode;

use guest_shim::cli::{self, Command, SYNOPSIS, USAGE};
use guest_shim::device::Device;
use guest_shim::run::{self, RunError};
use guest_shim::{forward, launch, mem, shadow};

fn main() -> ExitCode {
    // std's runtime handles SIGBUS (stack overflow detection): for a SIGBUS it did not cause
    // it resets the handler and returns, so the asynchronous SIGBUS offload.ko sends to the
    // processes that map lost window pages would be survived once. This command must die of
    // it, as a C program would.
    // SAFETY: restores the default disposition of one signal; no handler of ours involved.
    unsafe {
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("offload: {e}\n{SYNOPSIS}");
            return ExitCode::from(2);
        }
    };
    match execute(command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        // The reader went away (`offload nodes | grep -q b`): stop quietly, as SIGPIPE would.
        Err(RunError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(1),
        Err(e) => {
            eprintln!("offload: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs one command; `Ok(false)` when it ran but not everything succeeded.
fn execute(command: Command) -> Result<bool, RunError> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let ok = match command {
        Command::Help => {
            writeln!(out, "{USAGE}")?;
            true
        }
        Command::Nodes => {
            run::nodes(&Device::open()?, &mut out)?;
            true
        }
        Command::Ping(args) => run::ping(&Device::open()?, &args, &mut out)?.all_received(),
        Command::Mem(cmd) => {
            mem::run(&Device::open()?, &cmd, &mut out)?;
            true
        }
        Command::Serve(args) => {
            forward::serve(&Device::open()?, &args, &mut out)?;
            true
        }
        Command::Call(args) => {
            forward::call(&Device::open()?, &args, &mut out)?;
            true
        }
        Command::Ps => {
            shadow::ps(&Device::open()?, &mut out)?;
            true
        }
        Command::Spawn(args) => {
            shadow::spawn(&Device::open()?, &args, &mut out)?;
            true
        }
        Command::Shadow(args) => {
            let e = shadow::shadow(&args);
            shadow::log_to_kmsg(&args, &e);
            std::process::exit(1);
        }
        Command::Run(args) => {
            out.flush()?;
            let e = launch::run(&args);
            eprintln!("offload: run: {e}");
            std::process::exit(e.status().into());
        }
    };
    out.flush()?;
    Ok(ok)
}
