//! `testhost`: runs a shell script on a test host (native or emulated, see the harness) where
//! `vmm` and the guest images are installed, prints what it printed, and exits with its status.
//!
//! Usage: `testhost [--timeout SECONDS] [--bin PATH]... [--file SRC:DEST]... SCRIPT...`
//! (the words are joined into one script; `--bin` adds an executable to the script's PATH,
//! `--file` a data file at DEST in the test host).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use offload_tests::{Harness, RunOpts};

fn run() -> Result<i32> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = RunOpts {
        name: "testhost".into(),
        // An experiment wants to see a guest's triple fault, not a second run.
        triple_fault_retries: Some(0),
        ..Default::default()
    };
    while let (Some(opt), Some(value)) = (args.first(), args.get(1)) {
        match opt.as_str() {
            "--timeout" => {
                let secs: u64 = value
                    .parse()
                    .context("--timeout needs a number of seconds")?;
                opts.timeout = Some(Duration::from_secs(secs));
            }
            "--bin" => opts.binaries.push(value.into()),
            "--file" => {
                let (src, dest) = value.split_once(':').context("--file needs SRC:DEST")?;
                opts.files.push((src.into(), dest.into()));
            }
            _ => break,
        }
        args.drain(..2);
    }
    if args.is_empty() {
        anyhow::bail!(
            "usage: testhost [--timeout SECONDS] [--bin PATH]... [--file SRC:DEST]... SCRIPT..."
        );
    }
    let harness = Harness::locate()?;
    let result = harness.run(&args.join(" "), &opts)?;
    print!("{}", result.output);
    eprintln!(
        "[testhost] script exit status {} on the {} host after {:.1}s",
        result.status,
        match result.host {
            offload_tests::HostKind::Native => "native",
            offload_tests::HostKind::Emulated => "emulated",
        },
        result.elapsed.as_secs_f64()
    );
    Ok(result.status)
}

fn main() -> ExitCode {
    match run() {
        Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("testhost: {e:#}");
            ExitCode::from(125)
        }
    }
}
