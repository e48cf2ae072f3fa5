//! `bench-ping`: guest-to-guest `offload ping` (guest a → vmm a → transport → vmm b → guest b's
//! driver and back) against a raw TCP echo between two processes on the same test host, in the
//! same run. Reports the median round trips and their ratio, and per ping the VM exits (exits
//! to the monitor and KVM's own count), offload-device interrupts and requests on each side.
//!
//! Per-ping costs come from `vmm` statistics snapshots (SIGUSR1) around an idle phase and the
//! ping phase: cost = (ping-phase count − idle rate × ping-phase time) / pings.
//!
//! Usage: `bench-ping [--count N] [--out FILE]` (defaults: 200 pings, build/bench/ping.txt).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use offload_tests::bench::{self, field, parse_blocks, ping_median_ms, Block};
use offload_tests::{Harness, RunOpts};

const SIZE: usize = 56;

fn script(count: usize) -> String {
    let wait = r#"wait_state() { i=0; while ! offload nodes | grep -q "^$1 [0-9]* $2\$"; do i=$((i+1)); [ $i -gt 240 ] && return 1; sleep 0.5; done; }"#;
    let ga = format!(
        "{wait}\nwait_state b up || exit 9\necho phase-idle; sleep 4\necho phase-ping\n\
         offload ping b -c {count} -s {SIZE} > /tmp/p; s=$?\necho phase-end; tail -1 /tmp/p; sleep 2; exit $s"
    );
    let gb = format!("{wait}\nwait_state a up || exit 9\nwait_state a lost; exit 0");
    format!(
        r#"set -u
printf 'benchmark cluster key, longer than 32 bytes' > /tmp/key; chmod 600 /tmp/key
P=a=127.0.0.1:7001,b=127.0.0.1:7002
tcpecho serve 127.0.0.1:7100 & sleep 1
tcpecho ping 127.0.0.1:7100 -c {count} -s {SIZE}
vmm launch --node b --peers $P --secret /tmp/key --exit-stats /tmp/b.stats -- sh -c '{gb}' > /tmp/b.log 2>&1 &
B=$!
vmm launch --node a --peers $P --secret /tmp/key --exit-stats /tmp/a.stats -- sh -c '{ga}' > /tmp/a.log 2>&1 &
A=$!
for phase in phase-idle phase-ping phase-end; do
  # Stop waiting once a's monitor is gone (its guest died: the run is repeated).
  i=0; until grep -q "^$phase" /tmp/a.log || [ $i -gt 2400 ]; do
    kill -0 $A 2>/dev/null || break; sleep 0.1; i=$((i+1)); done
  kill -USR1 $A $B
done
wait $A; echo "a-status=$?"
wait $B; echo "b-status=$?"
grep -E 'min/median/max|error' /tmp/a.log | sed 's/^/guest-ping: /'
sed 's/^/a-stats: /' /tmp/a.stats; sed 's/^/b-stats: /' /tmp/b.stats
"#
    )
}

/// Per-ping cost of each counter, from snapshots 1 (idle start), 2 (ping start), 3 (ping end).
fn per_ping(blocks: &[Block], pings: f64) -> Result<Block> {
    if blocks.len() < 3 {
        bail!("expected 3 snapshots, got {}", blocks.len());
    }
    let (s1, s2, s3) = (&blocks[0], &blocks[1], &blocks[2]);
    let t = |a: &Block, b: &Block| {
        b.get("elapsed_ms").copied().unwrap_or(0.0) - a.get("elapsed_ms").copied().unwrap_or(0.0)
    };
    let (idle_ms, ping_ms) = (t(s1, s2), t(s2, s3));
    let mut out = Block::new();
    for key in s3.keys().filter(|k| *k != "elapsed_ms") {
        let g = |b: &Block| b.get(key).copied().unwrap_or(0.0);
        let idle_rate = if idle_ms > 0.0 {
            (g(s2) - g(s1)) / idle_ms
        } else {
            0.0
        };
        let cost = (g(s3) - g(s2) - idle_rate * ping_ms) / pings;
        out.insert(key.clone(), cost);
    }
    Ok(out)
}

fn report(output: &str, count: usize, host: &str) -> Result<String> {
    if !output.contains("a-status=0") || !output.contains("b-status=0") {
        bail!("a monitor or guest failed:\n{output}");
    }
    let tcp_us = field(output, "tcpecho:", "median_us=").context("no TCP echo result")?;
    let guest_ms = ping_median_ms(output).context("no guest ping summary")?;
    let mut r = String::new();
    writeln!(
        r,
        "# guest-to-guest ping vs raw TCP echo ({count} round trips of {SIZE} bytes each)"
    )?;
    writeln!(
        r,
        "test host: {host}; both monitors and both guests on it, over loopback"
    )?;
    writeln!(
        r,
        "median round trip: offload ping {guest_ms:.3} ms, TCP echo {:.3} ms, ratio {:.1}",
        tcp_us / 1000.0,
        guest_ms * 1000.0 / tcp_us
    )?;
    writeln!(
        r,
        "transport messages per ping: 2 (request + response), each one Noise frame"
    )?;
    for (side, prefix) in [("a (pinging)", "a-stats: "), ("b (answering)", "b-stats: ")] {
        let blocks = parse_blocks(output, prefix);
        let cost = per_ping(&blocks, count as f64)?;
        writeln!(r, "per ping on {side}:")?;
        for key in [
            "user_exits.total",
            "user_exits.mmio_read",
            "user_exits.mmio_write",
            "user_exits.io_out",
            "kvm_exits.exits",
            "kvm_exits.mmio_exits",
            "kvm_exits.io_exits",
            "kvm_exits.irq_exits",
            "kvm_exits.halt_exits",
            "offload.interrupts",
            "offload.requests",
            "offload.events",
        ] {
            if let Some(v) = cost.get(key) {
                writeln!(r, "  {key:<24} {v:8.2}")?;
            }
        }
    }
    Ok(r)
}

fn run() -> Result<()> {
    let usage = "bench-ping [--count N] [--out FILE]";
    let (count, out) = bench::parse_args(usage, "--count", 200)?;
    let count = usize::try_from(count).context("--count is too large")?;
    let h = Harness::locate()?;
    let out = out.unwrap_or_else(|| h.root.join("build/bench/ping.txt"));
    let tcpecho = std::env::current_exe()?.with_file_name("tcpecho");
    let opts = RunOpts {
        binaries: vec![tcpecho],
        files: vec![],
        timeout: Some(Duration::from_secs(600 + count as u64)),
        name: "bench-ping".into(),
        ..Default::default()
    };
    let r = h.run(&script(count), &opts)?;
    let text = report(&r.output, count, &r.host.to_string())?;
    bench::write_results(&out, &text, "bench-ping")
}

fn main() -> std::process::ExitCode {
    bench::exit("bench-ping", run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ping_costs_subtract_the_idle_rate() {
        let out = "a-stats: snapshot 1\na-stats: user_exits total=100\na-stats: elapsed_ms 1000\n\
                   a-stats: snapshot 2\na-stats: user_exits total=110\na-stats: elapsed_ms 2000\n\
                   a-stats: snapshot 3\na-stats: user_exits total=1130\na-stats: elapsed_ms 4000\n\
                   a-stats: final\na-stats: user_exits total=2000\na-stats: elapsed_ms 9000\n";
        let blocks = parse_blocks(out, "a-stats: ");
        assert_eq!(blocks.len(), 4);
        let cost = per_ping(&blocks, 100.0).unwrap();
        // 1020 in the ping phase, 20 of them idle (10 per second for 2 s): 10 per ping.
        assert!((cost["user_exits.total"] - 10.0).abs() < 1e-9);
        assert!(per_ping(&blocks[..2], 1.0).is_err());
    }

    #[test]
    fn guest_summary_is_parsed() {
        let out = "guest-ping: 200 sent, 200 received, min/median/max = 7.9/14.3/22.2 ms\n";
        assert_eq!(ping_median_ms(out), Some(14.3));
        assert_eq!(
            field("tcpecho: n=1 median_us=120 x", "tcpecho:", "median_us="),
            Some(120.0)
        );
    }
}
