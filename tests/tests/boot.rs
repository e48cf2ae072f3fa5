//! End-to-end: the real guest kernel and initramfs booted by `vmm` on a test host.

use offload_tests::{Harness, RunOpts};

fn opts(name: &str) -> RunOpts {
    RunOpts {
        name: name.into(),
        ..Default::default()
    }
}

/// Proves that `vmm launch` boots our 6.1 kernel with two vCPUs (the MP table, CPUID APIC ids and
/// the second vCPU's start work), that the guest init runs the command, and that the console
/// reaches the host: the guest prints its kernel release and two online CPUs, and vmm exits 0.
#[test]
fn guest_boots_with_two_vcpus_and_runs_a_command() {
    let h = Harness::locate().expect("harness");
    let release = h.guest_kernel_release().expect("kernel release");
    let script = r#"
vmm launch --vcpus 2 -- sh -c 'echo "release=$(uname -r)"; echo "online=$(cat /sys/devices/system/cpu/online)"; echo "nproc=$(nproc)"'
echo "vmm-status=$?"
"#;
    let r = h.run(script, &opts("boot-2-vcpus")).expect("test host run");
    println!("host: {}\n{}", r.host, r.output);
    assert_eq!(r.status, 0, "{}", r.output);
    assert!(
        r.output.contains(&format!("release={release}")),
        "{}",
        r.output
    );
    assert!(r.output.contains("online=0-1"), "{}", r.output);
    assert!(r.output.contains("nproc=2"), "{}", r.output);
    assert!(r.output.contains("vmm-status=0"), "{}", r.output);
}

/// Proves that the guest command's exit status becomes vmm's exit status (3 here), and that a
/// command that is not found gives the shell's 127, not a monitor failure.
#[test]
fn guest_command_status_becomes_vmm_status() {
    let h = Harness::locate().expect("harness");
    let script = r#"
vmm launch -- sh -c 'exit 3'
echo "first=$?"
vmm launch --mem 128M -- no-such-command
echo "second=$?"
"#;
    let r = h.run(script, &opts("exit-status")).expect("test host run");
    println!("host: {}\n{}", r.host, r.output);
    assert!(r.output.contains("first=3"), "{}", r.output);
    assert!(r.output.contains("second=127"), "{}", r.output);
}
