//! `bench-dsm`: the coherent window between two VMs on one test host. Guest a writes regions
//! of its slice; guest b then (1) reads 4 MiB of them (remote read faults: one page copy each),
//! (2) writes the same 4 MiB (ownership upgrades: it already holds read copies), (3) writes
//! another 4 MiB it never read (ownership with a page transfer), (4) reads a 64 MiB region a
//! filled (throughput), and (5) runs `offload ping a` for the transport's round trip in the
//! same run. Reports the per-page latencies (as the guest measured them), their ratio to the
//! ping, the throughput, and per page the DSM messages and bytes on both sides.
//!
//! Per-phase counts come from `vmm` statistics snapshots (SIGUSR1) at b's phase markers.
//!
//! Runs twice: without prefetch and with `--window-prefetch 8` (each remote read fault also
//! requests the next 8 pages), one test-host run each.
//!
//! Usage: `bench-dsm [--mib N] [--out FILE]` (defaults: 64 MiB region, build/bench/dsm.txt).
//!
//! In the emulated test host an L2 guest sometimes triple-faults on its own (also while booting,
//! with no window traffic at all: docs/dsm.md); a run that ends that way is repeated (at most 4
//! runs), and the report says how many runs it took.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use offload_tests::bench::{self, field, parse_blocks, ping_median_ms, Block};
use offload_tests::{Harness, RunOpts};

/// Region offsets in a's slice (window offsets): two 4 MiB regions, the fill mailbox.
const R1: &str = "0x1000000";
const R2: &str = "0x1400000";
/// Size in KiB of the regions of the per-page phases: 4 MiB, or half the `--mib` region
/// when that is smaller (CI's smoke run stays short: see docs/dsm.md on the emulated host).
fn small_kib(mib: u64) -> u64 {
    (mib * 512).min(4096)
}
const MAILBOX: &str = "0x7fff000";
const FLAG: &str = "0x7ffe000";
/// The runs: without prefetch, then with 8 pages prefetched per remote read fault.
const PREFETCH: [u64; 2] = [0, 8];

fn script(mib: u64, prefetch: u64) -> String {
    let small = format!("{}K", small_kib(mib));
    let small = small.as_str();
    let wait = r#"wait_up() { i=0; while ! offload nodes | grep -q "^$1 [0-9]* up\$"; do i=$((i+1)); [ $i -gt 240 ] && return 1; sleep 0.5; done; }"#;
    let ga = format!(
        "{wait}\nwait_up b || exit 9\n\
         offload mem touch {R1} {small} --write > /dev/null && offload mem touch {R2} {small} --write > /dev/null || exit 3\n\
         offload mem write {FLAG} 1\n\
         offload mem fill --bytes {mib}M --seed 3 --mailbox {MAILBOX} || exit 4\n\
         offload mem wait {FLAG} 2 --timeout-ms 600000; exit $?"
    );
    let mark = "echo phase-$1; sleep 1";
    let gb = format!(
        "{wait}\nmark() {{ {mark}; }}\nwait_up a || exit 9\n\
         offload mem wait {FLAG} 1 --timeout-ms 600000 || exit 3\n\
         mark read; offload mem touch {R1} {small} --read | sed \"s/^/read: /\"\n\
         mark upgrade; offload mem touch {R1} {small} --write | sed \"s/^/upgrade: /\"\n\
         mark own; offload mem touch {R2} {small} --write | sed \"s/^/own: /\"\n\
         mark sum; offload mem sum --mailbox {MAILBOX} | sed \"s/^/sum: /\"\n\
         mark ping; offload ping a -c 50 | tail -1 | sed \"s/^/ping: /\"\n\
         mark end; offload mem write {FLAG} 2"
    );
    format!(
        r#"set -u
printf 'benchmark cluster key, longer than 32 bytes' > /tmp/key; chmod 600 /tmp/key
P=a=127.0.0.1:7001,b=127.0.0.1:7002
vmm launch --node a --peers $P --secret /tmp/key --window-prefetch {prefetch} --exit-stats /tmp/a.stats -- sh -c '{ga}' > /tmp/a.log 2>&1 &
A=$!
vmm launch --node b --peers $P --secret /tmp/key --window-prefetch {prefetch} --exit-stats /tmp/b.stats -- sh -c '{gb}' > /tmp/b.log 2>&1 &
B=$!
for phase in read upgrade own sum ping end; do
  # Stop waiting once b's monitor is gone (its guest died: the run is repeated).
  i=0; until grep -q "^phase-$phase" /tmp/b.log || [ $i -gt 6000 ]; do
    kill -0 $B 2>/dev/null || break; sleep 0.1; i=$((i+1)); done
  kill -USR1 $A $B
done
wait $B; echo "b-status=$?"
wait $A; echo "a-status=$?"
grep -h 'failed on vCPU' /tmp/a.log /tmp/b.log
grep -E '^(read|upgrade|own|sum|ping): ' /tmp/b.log
grep checksum= /tmp/a.log | sed 's/^/fill: /'
sed 's/^/a-stats: /' /tmp/a.stats; sed 's/^/b-stats: /' /tmp/b.stats
"#
    )
}

/// Difference of `key` between snapshot blocks `i` and `i + 1`.
fn delta(blocks: &[Block], i: usize, key: &str) -> f64 {
    let g = |b: &Block| b.get(key).copied().unwrap_or(0.0);
    match (blocks.get(i), blocks.get(i + 1)) {
        (Some(a), Some(b)) => g(b) - g(a),
        _ => f64::NAN,
    }
}

fn report(output: &str, mib: u64, prefetch: u64) -> Result<String> {
    let small_pages = (small_kib(mib) / 4) as f64;
    if !output.contains("a-status=0") || !output.contains("b-status=0") {
        bail!("a monitor or guest failed:\n{output}");
    }
    let ping = ping_median_ms(output).context("no ping result")?;
    let mut r = String::new();
    writeln!(r, "## prefetch {prefetch} (--window-prefetch)")?;
    writeln!(r, "offload ping round trip (median of 50): {ping:.3} ms")?;
    let (a, b) = (
        parse_blocks(output, "a-stats: "),
        parse_blocks(output, "b-stats: "),
    );
    let phases = [
        ("read", "remote read fault (copy from a)", 0),
        ("upgrade", "write upgrade (b holds a copy)", 1),
        ("own", "write ownership (page moves a→b)", 2),
    ];
    writeln!(
        r,
        "{:<36} {:>10} {:>8} {:>10} {:>12}",
        format!("per page ({small_pages} pages)"),
        "latency_ms",
        "x ping",
        "msgs",
        "bytes"
    )?;
    for (name, what, i) in phases {
        let ns = field(output, &format!("{name}: "), "ns_per_page=").context(name)?;
        let msgs = (delta(&a, i, "dsm.msgs_sent") + delta(&b, i, "dsm.msgs_sent")) / small_pages;
        let bytes = (delta(&a, i, "dsm.bytes_sent") + delta(&b, i, "dsm.bytes_sent")) / small_pages;
        writeln!(
            r,
            "{what:<36} {:>10.3} {:>8.2} {msgs:>10.2} {bytes:>12.0}",
            ns / 1e6,
            ns / 1e6 / ping
        )?;
    }
    let ns = field(output, "sum: ", "ns=").context("no sum result")?;
    let bytes = field(output, "sum: ", "bytes=").context("no sum size")?;
    let pages = bytes / 4096.0;
    let msgs = (delta(&a, 3, "dsm.msgs_sent") + delta(&b, 3, "dsm.msgs_sent")) / pages;
    writeln!(
        r,
        "read of a {mib} MiB region written in a: {:.2} MiB/s ({:.3} ms per page, {msgs:.2} msgs per page)",
        bytes / 1048576.0 / (ns / 1e9),
        ns / 1e6 / pages
    )?;
    let same = output
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("checksum=")))
        .collect::<Vec<_>>();
    if same.len() != 2 || same[0] != same[1] {
        bail!("checksums differ or are missing: {same:?}\n{output}");
    }
    writeln!(r, "checksums in a and b agree: {}", same[0])?;
    Ok(r)
}

fn run() -> Result<()> {
    let usage = "bench-dsm [--mib N] [--out FILE]";
    let (mib, out) = bench::parse_args(usage, "--mib", 64)?;
    if mib > 120 {
        bail!("--mib must fit in a's slice (at most 120)");
    }
    let h = Harness::locate()?;
    let out = out.unwrap_or_else(|| h.root.join("build/bench/dsm.txt"));
    let opts = RunOpts {
        timeout: Some(Duration::from_secs(1200 + 20 * mib)),
        name: "bench-dsm".into(),
        triple_fault_retries: Some(3),
        ..Default::default()
    };
    let mut text = String::new();
    for prefetch in PREFETCH {
        let r = h.run(&script(mib, prefetch), &opts)?;
        if text.is_empty() {
            writeln!(
                text,
                "# coherent window between two VMs (test host: {}, both monitors on loopback)",
                r.host
            )?;
        }
        text.push_str(&report(&r.output, mib, prefetch)?);
        writeln!(
            text,
            "runs needed: {} ({} ended by a guest triple fault)\n",
            r.attempts,
            r.attempts - 1
        )?;
    }
    bench::write_results(&out, &text, "bench-dsm")
}

fn main() -> std::process::ExitCode {
    bench::exit("bench-dsm", run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_lines_are_parsed() {
        let out = "read: pages=1024 ns=2048000 ns_per_page=2000\nping: 50 sent, 50 received, min/median/max = 1.0/2.5/3.0 ms\n";
        assert_eq!(field(out, "read: ", "ns_per_page="), Some(2000.0));
        assert_eq!(ping_median_ms(out), Some(2.5));
        let blocks = parse_blocks(
            "x: snapshot 1\nx: dsm msgs_sent=10\nx: snapshot 2\nx: dsm msgs_sent=30\n",
            "x: ",
        );
        assert_eq!(delta(&blocks, 0, "dsm.msgs_sent"), 20.0);
        assert!(delta(&blocks, 1, "dsm.msgs_sent").is_nan());
    }
}
