//! What the benchmark commands share: their two options and how they write results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Parses `[FLAG N] [--out FILE]` (for example `--runs 5`); N must be at least 1.
pub fn parse_args(usage: &str, flag: &str, default: u64) -> Result<(u64, Option<PathBuf>)> {
    let mut args = std::env::args().skip(1);
    let (mut n, mut out) = (default, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            f if f == flag => {
                n = args
                    .next()
                    .context(format!("{flag} N"))?
                    .parse()
                    .context(format!("{flag} N"))?
            }
            "--out" => out = Some(args.next().context("--out FILE")?.into()),
            other => bail!("unknown argument {other}; usage: {usage}"),
        }
    }
    if n == 0 {
        bail!("{flag} must be at least 1");
    }
    Ok((n, out))
}

/// Writes the report to `path` (creating its folder), prints it, and says where it went.
pub fn write_results(path: &Path, text: &str, name: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    print!("{text}");
    eprintln!("[{name}] results written to {}", path.display());
    Ok(())
}

/// The process exit code for a benchmark's result, printing the error if any.
pub fn exit(name: &str, result: Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Counters of one snapshot block: "<source>.<key>" → value.
pub type Block = BTreeMap<String, f64>;

/// Parses `snapshot N` / `final` blocks of a stats file (lines prefixed with `prefix`).
pub fn parse_blocks(output: &str, prefix: &str) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    for line in output.lines().filter_map(|l| l.strip_prefix(prefix)) {
        let mut words = line.split_whitespace();
        let Some(source) = words.next() else { continue };
        if source == "snapshot" || source == "final" {
            blocks.push(Block::new());
            continue;
        }
        let Some(block) = blocks.last_mut() else {
            continue;
        };
        if source == "elapsed_ms" {
            if let Some(v) = words.next().and_then(|v| v.parse().ok()) {
                block.insert("elapsed_ms".into(), v);
            }
            continue;
        }
        for w in words {
            if let Some((k, v)) = w.split_once('=') {
                if let Ok(v) = v.parse() {
                    block.insert(format!("{source}.{k}"), v);
                }
            }
        }
    }
    blocks
}

/// The number after `key` (e.g. `median_us=`) on the first output line starting with `prefix`.
pub fn field(output: &str, prefix: &str, key: &str) -> Option<f64> {
    let line = output.lines().find(|l| l.starts_with(prefix))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|v| v.parse().ok())
}

/// The median of the first `offload ping` summary (`... min/median/max = A/B/C ms`) in `output`.
pub fn ping_median_ms(output: &str) -> Option<f64> {
    let line = output.lines().find(|l| l.contains("min/median/max"))?;
    let nums = line.rsplit('=').next()?.trim().trim_end_matches(" ms");
    nums.split('/').nth(1)?.trim().parse().ok()
}
