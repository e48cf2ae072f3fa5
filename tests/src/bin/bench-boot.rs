//! `bench-boot`: boot-time benchmark of `vmm` against QEMU's microvm machine, booting the same
//! kernel (our bzImage), initramfs, memory and vCPU count on the same test host, interleaved run
//! by run. Reports launch-to-init (first console line of the guest init) and launch-to-exit
//! medians, their ratios, and vmm's VM exits by kind (exits to the monitor and KVM's own counters).
//!
//! Usage: `bench-boot [--runs N] [--out FILE]` (defaults: 5 runs, build/bench/boot.txt).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use offload_tests::{bench, Harness, RunOpts};

/// Guest shape shared by both monitors.
const MEM: &str = "256M";
const VCPUS: u32 = 2;
/// The guest command: `nproc` (both guests must see all vCPUs), base64-encoded the way `vmm`
/// passes commands to the guest init.
const GUEST_ARGV: &str = "vmm.argv64 xbnByb2M=";
/// Kernel parameters for QEMU: vmm's defaults, except that microvm has no i8042, so the guest
/// resets by triple fault (`reboot=t`), which ends QEMU under `-no-reboot`.
const QEMU_CMDLINE: &str = "console=ttyS0 reboot=t panic=-1 quiet";
/// Longest a single boot may take before the run counts as failed.
const BOOT_TIMEOUT_SECS: u32 = 120;
/// Environment variable (a kernel parameter without a dot) that makes the init print its marker.
const MARK_PARAM: &str = "vmm_mark=1";

fn script(runs: u32) -> String {
    let vmm = format!(
        "boottime --timeout {BOOT_TIMEOUT_SECS} --log /tmp/vmm.log -- vmm launch --kernel /usr/share/vmm/bzImage \
         --initrd /usr/share/vmm/initramfs.cpio.gz --mem {MEM} --vcpus {VCPUS} \
         --cmdline {MARK_PARAM} --exit-stats /tmp/vmm-stats -- nproc"
    );
    let qemu = format!(
        "boottime --timeout {BOOT_TIMEOUT_SECS} --log /tmp/qemu.log -- qemu-system-x86_64 -M microvm,auto-kernel-cmdline=off \
         -accel kvm -cpu host -m {MEM} -smp {VCPUS} -nodefaults -no-user-config -display none \
         -serial stdio -no-reboot -kernel /usr/share/vmm/bzImage \
         -initrd /usr/share/vmm/initramfs.cpio.gz \
         -append '{QEMU_CMDLINE} {MARK_PARAM} -- {GUEST_ARGV}'"
    );
    // check WHO: the guest ran its command, saw every vCPU, and reported success.
    let mut s = format!(
        "set -u\ncheck() {{ tr -d '\\r' < /tmp/$1.log | grep -qx {VCPUS} && grep -q 'vmm-guest: exit-status=0' /tmp/$1.log \
         || {{ echo \"bench error: $1 guest failed\"; tail -20 /tmp/$1.log; }}; }}\n"
    );
    for i in 1..=runs {
        let _ = writeln!(s, "{vmm} | sed 's/^/bench vmm {i} /'");
        let _ = writeln!(s, "sed 's/^/bench vmm-stats {i} /' /tmp/vmm-stats");
        let _ = writeln!(s, "check vmm");
        let _ = writeln!(s, "{qemu} | sed 's/^/bench qemu {i} /'");
        let _ = writeln!(s, "check qemu");
    }
    s
}

/// One timed run: (launch-to-init ms, launch-to-exit ms).
type Sample = (f64, f64);

fn parse_samples(output: &str, who: &str) -> Result<Vec<Sample>> {
    let prefix = format!("bench {who} ");
    let mut samples = vec![];
    let lines = output
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains("boottime:"));
    for line in lines {
        let field = |name: &str| -> Option<f64> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.parse().ok())
        };
        let (Some(m), Some(e), Some(st)) =
            (field("marker_ms="), field("exit_ms="), field("status="))
        else {
            continue;
        };
        if m < 0.0 || st != 0.0 {
            bail!("{who} run failed: {line}");
        }
        samples.push((m, e));
    }
    Ok(samples)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn report(output: &str, runs: u32, host: &str) -> Result<String> {
    let vmm = parse_samples(output, "vmm")?;
    let qemu = parse_samples(output, "qemu")?;
    if vmm.len() != runs as usize || qemu.len() != runs as usize {
        bail!(
            "expected {runs} runs each, got vmm {} and qemu {}:\n{output}",
            vmm.len(),
            qemu.len()
        );
    }
    let med = |s: &[Sample], f: fn(&Sample) -> f64| median(s.iter().map(f).collect());
    let (vi, ve) = (med(&vmm, |s| s.0), med(&vmm, |s| s.1));
    let (qi, qe) = (med(&qemu, |s| s.0), med(&qemu, |s| s.1));
    let mut r = String::new();
    writeln!(
        r,
        "# boot benchmark: vmm vs QEMU microvm (same bzImage, initramfs, {MEM}, {VCPUS} vCPUs)"
    )?;
    writeln!(r, "test host: {host}")?;
    writeln!(r, "runs: {runs} each, interleaved; times are wall ms inside the test host (absolute values mean little here, compare ratios)")?;
    writeln!(
        r,
        "{:<8} {:>16} {:>16}",
        "monitor", "launch-to-init", "launch-to-exit"
    )?;
    writeln!(r, "{:<8} {:>16.0} {:>16.0}", "vmm", vi, ve)?;
    writeln!(r, "{:<8} {:>16.0} {:>16.0}", "qemu", qi, qe)?;
    writeln!(
        r,
        "ratio vmm/qemu: launch-to-init {:.2}, launch-to-exit {:.2}",
        vi / qi,
        ve / qe
    )?;
    writeln!(r, "vmm samples (init, exit): {vmm:?}")?;
    writeln!(r, "qemu samples (init, exit): {qemu:?}")?;
    writeln!(r, "vmm VM exits per boot (first run):")?;
    for line in output
        .lines()
        .filter(|l| l.starts_with("bench vmm-stats 1 "))
    {
        writeln!(r, "  {}", line.trim_start_matches("bench vmm-stats 1 "))?;
    }
    Ok(r)
}

fn run() -> Result<()> {
    let usage = "bench-boot [--runs N] [--out FILE]";
    let (runs, out) = bench::parse_args(usage, "--runs", 5)?;
    let runs = u32::try_from(runs).context("--runs is too large")?;
    let h = Harness::locate()?;
    let out = out.unwrap_or_else(|| h.root.join("build/bench/boot.txt"));
    let boottime = std::env::current_exe()?.with_file_name("boottime");
    let qemu = PathBuf::from("/usr/bin/qemu-system-x86_64");
    let mut files = vec![(
        h.guest_dir.join("bzImage"),
        "/usr/share/vmm/bzImage".to_string(),
    )];
    for fw in ["qboot.rom", "bios-microvm.bin", "linuxboot_dma.bin"] {
        let p = PathBuf::from("/usr/share/qemu").join(fw);
        if p.exists() {
            files.push((p.clone(), p.display().to_string()));
        }
    }
    let opts = RunOpts {
        binaries: vec![boottime, qemu],
        files,
        timeout: Some(Duration::from_secs(120 + 120 * u64::from(runs))),
        name: "bench-boot".into(),
        ..Default::default()
    };
    let r = h.run(&script(runs), &opts)?;
    if r.status != 0 || r.output.contains("bench error") {
        bail!(
            "benchmark script failed (status {}):\n{}",
            r.status,
            r.output
        );
    }
    let text = report(&r.output, runs, &r.host.to_string())?;
    bench::write_results(&out, &text, "bench-boot")
}

fn main() -> std::process::ExitCode {
    bench::exit("bench-boot", run())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_and_medians() {
        let out = "bench vmm 1 boottime: marker_ms=100 exit_ms=300 status=0\nbench vmm-stats 1 user_exits io_in=1\nbench vmm 2 boottime: marker_ms=120 exit_ms=310 status=0\nbench qemu 1 boottime: marker_ms=200 exit_ms=600 status=0\nbench qemu 2 boottime: marker_ms=220 exit_ms=620 status=0\n";
        let r = report(out, 2, "emulated").unwrap();
        assert!(
            r.contains("ratio vmm/qemu: launch-to-init 0.52, launch-to-exit 0.50"),
            "{r}"
        );
        assert!(r.contains("user_exits io_in=1"));
        assert!(report(
            "bench vmm 1 boottime: marker_ms=-1 exit_ms=3 status=0",
            1,
            "x"
        )
        .is_err());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
