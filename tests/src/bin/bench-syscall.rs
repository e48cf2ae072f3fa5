//! `bench-syscall`: the syscall benchmark of issue 5 (the table of the research this project
//! follows). In one test host, two VMs a and b; the guest program `ot-bench-syscall`
//! (tests/guest/bench-syscall.c) times `open`+`close`, `unlink`, `mkdir`, `rmdir`, `symlink`
//! and `unlink` of the links on a directory five levels deep in a's file system, in three
//! modes, one after the other in the same run:
//! - **A**: an unmarked process on a;
//! - **B**: a marked process on a (`offload run`: shim loaded, every call trapped, memory in
//!   the window), nothing forwarded;
//! - **C**: the same program with `offload run --on b`: its thread runs in b and every call
//!   is forwarded to a.
//!
//! Prints the per-call times (A, B, C), the ratios B/A and C/B, the `offload ping` round trip
//! of the same run, and per call in each mode the VM exits (both VMs), forwarded calls,
//! DSM messages and pages moved, from `vmm` statistics snapshots (SIGUSR1) taken at the
//! program's phase markers, less what an idle second costs. Every mode must succeed with the
//! same result line, else the benchmark fails (CI runs it as a smoke test).
//!
//! Usage: `bench-syscall [--calls N] [--modes ABC] [--out FILE]` (defaults: 200, all three
//! modes, build/bench/syscall.txt). `--modes AB` leaves mode C out (columns of modes not run
//! read NaN).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use offload_tests::bench::{self, parse_blocks, ping_median_ms, Block};
use offload_tests::{Harness, RunOpts};

/// The modes in run order, with the command prefix that runs the program in each.
const MODES: [(&str, &str); 3] = [
    ("A", ""),
    ("B", "offload run -- "),
    ("C", "offload run --on b -- "),
];
/// The program's phases (batches), after its `idle` phase, in order.
const CALLS: [(&str, &str); 6] = [
    ("open_close", "open+close"),
    ("unlink", "unlink"),
    ("mkdir", "mkdir"),
    ("rmdir", "rmdir"),
    ("symlink", "symlink"),
    ("unlink_symlink", "unlink (link)"),
];
/// The research paper's figures (ms; two Core i7 hosts, 1 Gb Ethernet, NFS): A, B, C.
const PAPER: [(&str, [f64; 3]); 4] = [
    ("open+close", [0.275, 0.279, 4.304]),
    ("mkdir", [1.355, 1.365, 1.385]),
    ("rmdir", [0.985, 0.992, 1.029]),
    ("symlink", [1.755, 1.756, 1.772]),
];

fn guest_a(calls: u64, modes: &str) -> String {
    let wait = r#"wait_up() { i=0; while ! offload nodes | grep -q "^$1 [0-9]* up\$"; do i=$((i+1)); [ $i -gt 240 ] && return 1; sleep 0.5; done; }"#;
    let mut s = format!("{wait}\nwait_up b || exit 9\n");
    // Lines are prefixed by a shell loop, not sed: busybox sed holds each line back until
    // the next one arrives (it looks ahead for `$`), which would show every phase marker
    // only after its batch.
    for (mode, prefix) in MODES.iter().filter(|(m, _)| modes.contains(m)) {
        let _ = writeln!(
            s,
            "{prefix}ot-bench-syscall -p -n {calls} -d /tmp/bench-{mode} 2>&1 | while IFS= read -r l; do echo \"{mode}: $l\"; done"
        );
    }
    s.push_str("echo \"mark: ping\"; offload ping b -c 20 | tail -1 | sed \"s/^/ping: /\"\n");
    s
}

fn script(calls: u64, modes: &str) -> String {
    let ga = guest_a(calls, modes);
    let mut phases = String::new();
    for (mode, _) in MODES.iter().filter(|(m, _)| modes.contains(m)) {
        for p in std::iter::once("idle")
            .chain(CALLS.iter().map(|c| c.0))
            .chain(["end"])
        {
            let _ = write!(phases, "{mode}:{p} ");
        }
    }
    format!(
        r#"set -u
printf 'benchmark cluster key, longer than 32 bytes' > /tmp/key; chmod 600 /tmp/key
P=a=127.0.0.1:7001,b=127.0.0.1:7002
vmm launch --node b --peers $P --secret /tmp/key --exit-stats /tmp/b.stats -- sh -c 'i=0; while [ $i -lt 3000 ] && ! offload nodes | grep -q "^a [0-9]* lost"; do i=$((i+1)); sleep 1; done' > /tmp/b.log 2>&1 &
B=$!
vmm launch --node a --peers $P --secret /tmp/key --exit-stats /tmp/a.stats -- sh -c '{ga}' > /tmp/a.log 2>&1 &
A=$!
n=0
for ph in {phases}; do
  mode=${{ph%%:*}}; name=${{ph#*:}}; n=$((n+1))
  # The guest console ends lines with CR LF. A mode that fails leaves its markers out: stop
  # waiting once a is past every mode.
  until grep -q "^$mode: bench phase $name[[:space:]]*\$" /tmp/a.log || grep -q "^mark: ping" /tmp/a.log; do
    kill -0 $A 2>/dev/null || break; sleep 0.1; done
  grep -q "^$mode: bench phase $name[[:space:]]*\$" /tmp/a.log || echo "bench: no marker for $ph"
  kill -USR1 $A $B
  # Signals sent close together would give one snapshot: wait for both before going on.
  i=0; until [ "$(grep -c '^snapshot' /tmp/a.stats)" -ge $n ] && [ "$(grep -c '^snapshot' /tmp/b.stats)" -ge $n ]; do
    i=$((i+1)); [ $i -gt 100 ] && {{ echo "bench: snapshot $n of $ph missing"; break; }}; sleep 0.05; done
done
wait $A; echo "a-status=$?"
kill $B 2>/dev/null; wait $B
grep -h 'failed on vCPU' /tmp/a.log /tmp/b.log
grep -E '^(A|B|C|ping): ' /tmp/a.log | grep -v ': bench phase '
sed 's/^/a-stats: /' /tmp/a.stats; sed 's/^/b-stats: /' /tmp/b.stats
"#
    )
}

/// The keys summed over both VMs for the per-call counts, with their labels.
const COUNTS: [(&str, &str); 5] = [
    ("user_exits.total", "exits to vmm"),
    ("kvm_exits.exits", "KVM exits"),
    ("offload.syscalls_out", "calls forwarded"),
    ("dsm.msgs_sent", "DSM msgs"),
    ("dsm.pages_in", "pages moved"),
];

/// Per-call counts of one batch: (a + b) deltas over the batch, less the idle second's.
fn per_call(a: &[Block], b: &[Block], at: usize, idle: usize, key: &str, n: f64) -> f64 {
    let d = |blocks: &[Block], i: usize| {
        let g = |k: usize| blocks.get(k).and_then(|bl| bl.get(key)).copied();
        match (g(i), g(i + 1)) {
            (Some(x), Some(y)) => y - x,
            _ => f64::NAN,
        }
    };
    let batch = d(a, at) + d(b, at);
    let base = d(a, idle) + d(b, idle);
    if batch.is_nan() || base.is_nan() {
        return f64::NAN; // a missing snapshot must not read as zero
    }
    (batch - base).max(0.0) / n
}

/// `ns_per_call` of `call` in `mode`'s output, in ms.
fn ms(output: &str, mode: &str, call: &str) -> Option<f64> {
    let prefix = format!("{mode}: bench call={call} ");
    let line = output.lines().find(|l| l.starts_with(&prefix))?;
    let ns: f64 = line.split("ns_per_call=").nth(1)?.trim().parse().ok()?;
    Some(ns / 1e6)
}

fn check_results(output: &str, modes: &str) -> Result<String> {
    if !output.contains("a-status=0") {
        bail!("guest a failed:\n{output}");
    }
    let results: Vec<_> = MODES
        .iter()
        .filter(|(m, _)| modes.contains(m))
        .map(|(m, _)| {
            output
                .lines()
                .find(|l| l.starts_with(&format!("{m}: bench result ")))
                .map(|l| l[3..].to_string())
        })
        .collect();
    match results.first() {
        Some(Some(first))
            if first.ends_with("left=0") && results.iter().all(|r| r.as_ref() == Some(first)) =>
        {
            Ok(first.clone())
        }
        _ => bail!("a mode failed or the results differ ({results:?}):\n{output}"),
    }
}

fn report(output: &str, calls: u64, modes: &str, host: &str) -> Result<String> {
    let result = check_results(output, modes)?;
    let ping = ping_median_ms(output).context("no ping result")?;
    let mut r = String::new();
    writeln!(
        r,
        "# syscall benchmark (test host: {host}; {calls} calls per batch)"
    )?;
    writeln!(
        r,
        "## time per call (ms): A unmarked on a, B marked on a, C thread on b"
    )?;
    writeln!(
        r,
        "{:<14} {:>9} {:>9} {:>9} {:>7} {:>7}",
        "call", "A", "B", "C", "B/A", "C/B"
    )?;
    for (key, label) in CALLS {
        let t: Vec<f64> = MODES
            .iter()
            .map(|(m, _)| ms(output, m, key).unwrap_or(f64::NAN))
            .collect();
        writeln!(
            r,
            "{label:<14} {:>9.3} {:>9.3} {:>9.3} {:>7.2} {:>7.2}",
            t[0],
            t[1],
            t[2],
            t[1] / t[0],
            t[2] / t[1]
        )?;
    }
    writeln!(
        r,
        "offload ping a→b round trip (median of 20, same run): {ping:.3} ms"
    )?;
    writeln!(r, "every mode: {result}")?;
    // The host loop says when a phase marker or a snapshot did not come: the counts of
    // such a batch would be wrong, so the table of counts is withheld.
    let gaps: Vec<&str> = output
        .lines()
        .filter(|l| l.starts_with("bench: "))
        .collect();
    if gaps.is_empty() {
        counts(&mut r, output, calls, modes)?;
    } else {
        writeln!(r, "## per-call counts withheld: {}", gaps.join("; "))?;
    }
    writeln!(
        r,
        "## reference: the paper (ms; two Core i7 hosts, 1 Gb Ethernet, NFS)"
    )?;
    for (label, [pa, pb, pc]) in PAPER {
        writeln!(r, "{label:<14} {pa:>9.3} {pb:>9.3} {pc:>9.3}")?;
    }
    Ok(r)
}

/// Per call in each mode: the counters' deltas over both VMs, less an idle second's.
fn counts(r: &mut String, output: &str, calls: u64, modes: &str) -> Result<()> {
    let (a, b) = (
        parse_blocks(output, "a-stats: "),
        parse_blocks(output, "b-stats: "),
    );
    let phases = CALLS.len() + 2; // idle, the calls, end
    for (m, (mode, _)) in MODES.iter().filter(|(m, _)| modes.contains(m)).enumerate() {
        writeln!(
            r,
            "## per call in mode {mode} (both VMs, an idle second subtracted)"
        )?;
        write!(r, "{:<14}", "call")?;
        for (_, label) in COUNTS {
            write!(r, " {label:>15}")?;
        }
        writeln!(r)?;
        let idle = m * phases;
        for (c, (_, label)) in CALLS.iter().enumerate() {
            write!(r, "{label:<14}")?;
            for (key, _) in COUNTS {
                let v = per_call(&a, &b, idle + 1 + c, idle, key, calls as f64);
                write!(r, " {v:>15.2}")?;
            }
            writeln!(r)?;
        }
    }
    Ok(())
}

/// `--calls N`, `--modes ABC`, `--out FILE`.
fn parse_args() -> Result<(u64, String, Option<std::path::PathBuf>)> {
    let usage = "usage: bench-syscall [--calls N] [--modes ABC] [--out FILE]";
    let (mut calls, mut modes, mut out) = (200, "ABC".to_string(), None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{a} needs a value; {usage}"))
        };
        match a.as_str() {
            "--calls" => calls = value()?.parse().context("--calls N")?,
            "--modes" => modes = value()?,
            "--out" => out = Some(value()?.into()),
            _ => bail!("unknown argument {a}; {usage}"),
        }
    }
    if calls == 0 || modes.is_empty() || !modes.chars().all(|c| "ABC".contains(c)) {
        bail!("--calls must be at least 1 and --modes letters of ABC; {usage}");
    }
    Ok((calls, modes, out))
}

fn run() -> Result<()> {
    let (calls, modes, out) = parse_args()?;
    let h = Harness::locate()?;
    let out = out.unwrap_or_else(|| h.root.join("build/bench/syscall.txt"));
    let opts = RunOpts {
        timeout: Some(Duration::from_secs(900 + 3 * calls)),
        name: "bench-syscall".into(),
        // An L2 guest of the emulated host sometimes triple-faults on its own (docs/dsm.md).
        triple_fault_retries: Some(3),
        ..Default::default()
    };
    let r = h.run(&script(calls, &modes), &opts)?;
    let mut text = report(&r.output, calls, &modes, &r.host.to_string())?;
    if r.attempts > 1 {
        let _ = writeln!(
            text,
            "(took {} test-host runs: the earlier ones ended with a guest triple fault)",
            r.attempts
        );
    }
    bench::write_results(&out, &text, "bench-syscall")
}

fn main() -> std::process::ExitCode {
    bench::exit("bench-syscall", run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_must_agree_across_modes() {
        let ok = "a-status=0\nA: bench result calls=12 left=0\nB: bench result calls=12 left=0\nC: bench result calls=12 left=0\n";
        assert_eq!(
            check_results(ok, "ABC").unwrap(),
            "bench result calls=12 left=0"
        );
        let differ = ok.replace("C: bench result calls=12", "C: bench result calls=11");
        assert!(check_results(&differ, "ABC").is_err());
        assert!(check_results(&differ, "AB").is_ok());
        let missing = ok.replace("B: bench result calls=12 left=0\n", "B: bench error: x\n");
        assert!(check_results(&missing, "ABC").is_err());
        assert!(check_results(&ok.replace("a-status=0", "a-status=1"), "A").is_err());
    }

    #[test]
    fn per_call_counts_subtract_the_idle_second() {
        let out = "a: snapshot 1\na: user_exits total=100\na: snapshot 2\na: user_exits total=110\na: snapshot 3\na: user_exits total=150\n";
        let a = parse_blocks(out, "a: ");
        let b = parse_blocks("", "b: ");
        // Idle 1→2 costs 10; the batch 2→3 costs 40: 30 over 10 calls, b missing → NaN.
        assert!(per_call(&a, &b, 1, 0, "user_exits.total", 10.0).is_nan());
        assert_eq!(per_call(&a, &a, 1, 0, "user_exits.total", 10.0), 6.0);
        assert_eq!(
            ms(
                "A: bench call=mkdir n=5 ns_per_call=2500000\n",
                "A",
                "mkdir"
            ),
            Some(2.5)
        );
    }

    #[test]
    fn a_missed_marker_withholds_the_counts() {
        let mut out = String::from("a-status=0\nA: bench result calls=6 left=0\n");
        out.push_str("ping: rtt min/median/max = 1.0/2.0/3.0 ms\n");
        let full = report(&out, 1, "A", "native").unwrap();
        assert!(full.contains("## per call in mode A"), "{full}");
        out.push_str("bench: no marker for A:mkdir\n");
        let gap = report(&out, 1, "A", "native").unwrap();
        assert!(!gap.contains("## per call in mode A"), "{gap}");
        assert!(
            gap.contains("withheld: bench: no marker for A:mkdir"),
            "{gap}"
        );
    }
}
