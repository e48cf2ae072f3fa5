//! `tcpecho`: the raw TCP round trip that guest-to-guest pings are compared with.
//!
//! `tcpecho serve ADDR` echoes one connection; `tcpecho ping ADDR -c N -s SIZE` sends SIZE
//! bytes N times, waits for each echo, and prints
//! `tcpecho: n=N size=SIZE min_us=.. median_us=.. max_us=..`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};

fn serve(addr: &str) -> Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    let (mut s, _) = listener.accept()?;
    s.set_nodelay(true)?;
    let mut buf = [0u8; 65536];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n])?;
    }
}

fn ping(addr: &str, count: usize, size: usize) -> Result<()> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    let out = vec![0x5au8; size];
    let mut back = vec![0u8; size];
    let mut rtts = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        s.write_all(&out)?;
        s.read_exact(&mut back)?;
        rtts.push(t.elapsed().as_micros());
        if back != out {
            bail!("echo differs from what was sent");
        }
    }
    rtts.sort_unstable();
    let (min, med, max) = (rtts[0], rtts[rtts.len() / 2], rtts[rtts.len() - 1]);
    println!("tcpecho: n={count} size={size} min_us={min} median_us={med} max_us={max}");
    Ok(())
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str, default: usize| -> Result<usize> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).context("missing value")?.parse()?),
            None => Ok(default),
        }
    };
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("serve"), Some(addr)) => serve(addr),
        (Some("ping"), Some(addr)) => {
            let count = opt("-c", 100)?;
            if count == 0 {
                bail!("-c must be at least 1");
            }
            ping(addr, count, opt("-s", 56)?)
        }
        _ => bail!("usage: tcpecho serve ADDR | tcpecho ping ADDR [-c N] [-s SIZE]"),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcpecho: {e:#}");
            ExitCode::FAILURE
        }
    }
}
