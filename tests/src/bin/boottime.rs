//! `boottime`: runs a VM monitor command inside a test host and times it from launch to the
//! first console line containing a marker (the guest init has started) and to the monitor's exit.
//!
//! Usage: `boottime [--marker TEXT] [--log FILE] [--timeout SECS] -- COMMAND...`
//! Prints one line: `boottime: marker_ms=M exit_ms=E status=S` (`marker_ms=-1` if the marker
//! never appeared, `status=-1` if the command was killed at the timeout, default 300 s). The
//! command's output goes to FILE (default: discarded).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

struct Args {
    marker: String,
    log: Option<String>,
    timeout: Duration,
    command: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        marker: "vmm-guest: init-start".into(),
        log: None,
        timeout: Duration::from_secs(300),
        command: vec![],
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--marker" => args.marker = it.next().context("--marker needs a value")?,
            "--log" => args.log = Some(it.next().context("--log needs a value")?),
            "--timeout" => {
                let secs: u64 = it
                    .next()
                    .context("--timeout SECS")?
                    .parse()
                    .context("--timeout SECS")?;
                args.timeout = Duration::from_secs(secs);
            }
            "--" => {
                args.command = it.collect();
                break;
            }
            other => bail!("unknown argument {other}"),
        }
    }
    if args.command.is_empty() {
        bail!("usage: boottime [--marker TEXT] [--log FILE] -- COMMAND...");
    }
    Ok(args)
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let mut log: Box<dyn Write> = match &args.log {
        Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {p}"))?),
        None => Box::new(std::io::sink()),
    };
    let start = Instant::now();
    let mut child = Command::new(&args.command[0])
        .args(&args.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", args.command[0]))?;
    let mut out = BufReader::new(child.stdout.take().context("child stdout")?);
    // A monitor that hangs (a stuck guest) is killed at the deadline; its output then ends.
    let pid = child.id();
    let timeout = args.timeout;
    std::thread::spawn(move || {
        std::thread::sleep(timeout);
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    });
    let mut marker_ms: i64 = -1;
    let mut line = Vec::new();
    loop {
        line.clear();
        if out.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if marker_ms < 0 && String::from_utf8_lossy(&line).contains(&args.marker) {
            marker_ms = start.elapsed().as_millis() as i64;
        }
        log.write_all(&line)?;
    }
    let status = child.wait()?;
    let exit_ms = start.elapsed().as_millis();
    println!(
        "boottime: marker_ms={marker_ms} exit_ms={exit_ms} status={}",
        status.code().unwrap_or(-1)
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boottime: {e:#}");
            ExitCode::from(2)
        }
    }
}
