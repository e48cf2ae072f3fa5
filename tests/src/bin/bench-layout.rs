//! `bench-layout`: what a layout change costs when the process has a thread on another node
//! (docs/offload-threads.md, "Pushes to every shadow"). `ot-layout` runs ROUNDS rounds of 5
//! layout calls made at home (mmap, munmap of half, mremap, mprotect, munmap) whose region a
//! worker thread sums, in two placements in the same run: **home** (`offload run`, worker in a)
//! and **split** (`offload run --place 1=b`, worker on b, every change pushed to b before the
//! call returns). Each placement also runs with 0 rounds; the difference divided by ROUNDS is
//! the cost of one round, free of process start, spawn and the file checks.
//!
//! Counts come from `vmm` statistics snapshots (SIGUSR1) at the guest's phase markers.
//! Usage: `bench-layout [--rounds N] [--out FILE]` (defaults: 20, build/bench/layout.txt).
//! A round moves ~30 pages between the VMs; in the emulated test host a run that moves a
//! thousand pages or more often ends with an L2 guest's triple fault (docs/dsm.md), so the
//! default stays at 20 rounds and such a run is repeated up to 3 times.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use offload_tests::bench::{self, parse_blocks, Block};
use offload_tests::{Harness, RunOpts};

/// Phases of a's script, in order; a snapshot is taken at each marker.
const PHASES: [&str; 5] = ["phase-s0", "phase-sr", "phase-h0", "phase-hr", "phase-end"];

fn script(rounds: u64) -> String {
    let wait = r#"wait_state() { i=0; while ! offload nodes | grep -q "^$1 [0-9]* $2\$"; do i=$((i+1)); [ $i -gt 240 ] && return 1; sleep 0.5; done; }"#;
    let run = |tag: &str, how: &str, r: u64| {
        // The sleep lets the run's last page traffic (its end, the shadow's) fall in its phase.
        format!(
            "timeout 600 offload run {how}-- ot-layout -r {r} | sed \"s/^/{tag}: /\"; sleep 2\n"
        )
    };
    let ga = format!(
        "{wait}\nwait_state b up || exit 9\necho phase-s0\n{}echo phase-sr\n{}echo phase-h0\n{}\
         echo phase-hr\n{}echo phase-end\nsleep 2",
        run("split-0", "--place 1=b ", 0),
        run("split", "--place 1=b ", rounds),
        run("home-0", "", 0),
        run("home", "", rounds),
    );
    let gb = format!("{wait}\nwait_state a up || exit 9\nwait_state a lost; exit 0");
    let phases = PHASES.join(" ");
    format!(
        r#"set -u
printf 'benchmark cluster key, longer than 32 bytes' > /tmp/key; chmod 600 /tmp/key
P=a=127.0.0.1:7001,b=127.0.0.1:7002
vmm launch --node b --peers $P --secret /tmp/key --exit-stats /tmp/b.stats -- sh -c '{gb}' > /tmp/b.log 2>/tmp/b.err &
B=$!
vmm launch --node a --peers $P --secret /tmp/key --exit-stats /tmp/a.stats -- sh -c '{ga}' > /tmp/a.log 2>/tmp/a.err &
A=$!
for phase in {phases}; do
  # Stop waiting once a's monitor is gone (its guest died: the run is repeated).
  i=0; until grep -q "^$phase" /tmp/a.log || [ $i -gt 6000 ]; do
    kill -0 $A 2>/dev/null || break; sleep 0.1; i=$((i+1)); done
  kill -USR1 $A $B
done
wait $A; echo "a-status=$?"
wait $B; echo "b-status=$?"
grep -E '^(split|home)(-0)?: ' /tmp/a.log
sed 's/^/a-vmm: /' /tmp/a.err; sed 's/^/b-vmm: /' /tmp/b.err
sed 's/^/a-stats: /' /tmp/a.stats; sed 's/^/b-stats: /' /tmp/b.stats
"#
    )
}

/// The cost of one round of placement `p` (0: split, 1: home) for `key`, from snapshots
/// s0..s4: (rounds phase − 0-round phase) / rounds.
fn per_round(blocks: &[Block], p: usize, key: &str, rounds: f64) -> Result<f64> {
    if blocks.len() < PHASES.len() {
        bail!("expected {} snapshots, got {}", PHASES.len(), blocks.len());
    }
    let g = |i: usize| blocks[i].get(key).copied().unwrap_or(0.0);
    let base = 2 * p;
    let zero = g(base + 1) - g(base);
    let full = g(base + 2) - g(base + 1);
    Ok((full - zero) / rounds)
}

/// The line ot-layout printed under `tag`, which must say ok.
fn result_line<'a>(output: &'a str, tag: &str) -> Result<&'a str> {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{tag}: ")))
        .with_context(|| format!("no {tag} result"))?;
    if !line.ends_with(" ok") {
        bail!("{tag}: {line}");
    }
    Ok(line)
}

fn report(output: &str, rounds: u64, host: &str) -> Result<String> {
    if !output.contains("a-status=0") || !output.contains("b-status=0") {
        bail!("a monitor or guest failed:\n{output}");
    }
    let (split, home) = (result_line(output, "split")?, result_line(output, "home")?);
    if split != home {
        bail!("results differ: split `{split}`, home `{home}`");
    }
    result_line(output, "split-0")?;
    result_line(output, "home-0")?;
    let (a, b) = (
        parse_blocks(output, "a-stats: "),
        parse_blocks(output, "b-stats: "),
    );
    let n = rounds as f64;
    let both = |p: usize, key: &str| -> Result<f64> {
        Ok(per_round(&a, p, key, n)? + per_round(&b, p, key, n)?)
    };
    let mut r = String::new();
    writeln!(r, "# layout calls at home with a thread on another node ({rounds} rounds of 5 calls: mmap, munmap, mremap, mprotect, munmap)")?;
    writeln!(r, "test host: {host}; both monitors and both guests on it")?;
    writeln!(r, "result (same in both placements): {split}")?;
    writeln!(
        r,
        "## per round (5 layout calls), the 0-round run subtracted"
    )?;
    writeln!(r, "{:<34}{:>12}{:>12}", "", "home", "split")?;
    let ms = [
        per_round(&a, 1, "elapsed_ms", n)?,
        per_round(&a, 0, "elapsed_ms", n)?,
    ];
    writeln!(r, "{:<34}{:>12.2}{:>12.2}", "time (ms)", ms[0], ms[1])?;
    let rows = [
        (
            "guest messages a->b (PUSH)",
            "offload.guest_msgs_out",
            false,
        ),
        ("calls forwarded to a", "offload.syscalls_in", false),
        ("DSM messages (both sides)", "dsm.msgs_sent", true),
        ("pages moved (both sides)", "dsm.pages_in", true),
        ("exits to vmm (both sides)", "user_exits.total", true),
        ("KVM exits (both sides)", "kvm_exits.exits", true),
    ];
    for (name, key, sum) in rows {
        let v = |p| {
            if sum {
                both(p, key)
            } else {
                per_round(&a, p, key, n)
            }
        };
        writeln!(r, "{name:<34}{:>12.2}{:>12.2}", v(1)?, v(0)?)?;
    }
    if ms[0] > 0.0 {
        writeln!(r, "time split/home: {:.1}", ms[1] / ms[0])?;
    }
    Ok(r)
}

fn run() -> Result<()> {
    let usage = "bench-layout [--rounds N] [--out FILE]";
    let (rounds, out) = bench::parse_args(usage, "--rounds", 20)?;
    let h = Harness::locate()?;
    let out = out.unwrap_or_else(|| h.root.join("build/bench/layout.txt"));
    let opts = RunOpts {
        timeout: Some(Duration::from_secs(900 + 4 * rounds)),
        name: "bench-layout".into(),
        triple_fault_retries: Some(3),
        ..Default::default()
    };
    let r = h.run(&script(rounds), &opts)?;
    let text = report(&r.output, rounds, &r.host.to_string())?;
    bench::write_results(&out, &text, "bench-layout")
}

fn main() -> std::process::ExitCode {
    bench::exit("bench-layout", run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_costs_the_difference_to_the_zero_round_run() {
        let mut out = String::new();
        for v in [0, 10, 1010, 1012, 1062, 2000] {
            out += &format!("a-stats: snapshot\na-stats: offload guest_msgs_out={v}\n");
        }
        let blocks = parse_blocks(&out, "a-stats: ");
        // split: the 0-round phase counts 10, the 100-round phase 1000: (1000 - 10) / 100;
        // home: 2 and 50 over 10 rounds: 4.8.
        let split = per_round(&blocks, 0, "offload.guest_msgs_out", 100.0).unwrap();
        assert!((split - 9.9).abs() < 1e-9);
        let home = per_round(&blocks, 1, "offload.guest_msgs_out", 10.0).unwrap();
        assert!((home - 4.8).abs() < 1e-9);
        assert!(per_round(&blocks[..4], 0, "x", 1.0).is_err());
    }

    #[test]
    fn a_result_must_say_ok() {
        let out =
            "split: layout: rounds=3 sum=9 file=same ok\nhome: layout: rounds=3 BAD round=2\n";
        assert!(result_line(out, "split").is_ok());
        assert!(result_line(out, "home").is_err());
        assert!(result_line(out, "home-0").is_err());
    }
}
