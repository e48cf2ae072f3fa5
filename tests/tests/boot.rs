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

/// Proves the console works both ways and the monitor stops cleanly: piped host input reaches a
/// guest command once the guest is up (input that arrives during the guest's boot can lose its
/// first bytes: a known open problem, see the project notes); without a
/// command the guest shell reads its commands from the console and vmm exits 0 when it powers
/// off (its input comes once the shell is up, after leading newlines: a guest shell may discard
/// typeahead when it sets up its terminal, as on a real serial line); SIGTERM stops a running VM with status 143 (128 + 15) instead of killing the monitor.
#[test]
fn console_input_shell_and_sigterm() {
    let h = Harness::locate().expect("harness");
    let script = r#"
(sleep 8; printf 'hello from the host\n') | vmm launch -- sh -c 'read line; echo "got=[$line]"'
echo "input-status=$?"
(sleep 8; printf '\n\necho "shell says $((6 * 7))"\nexit 5\n') | vmm launch
echo "shell-status=$?"
vmm launch -- sleep 600 &
pid=$!
sleep 5
kill -TERM $pid
wait $pid
echo "term-status=$?"
"#;
    let r = h
        .run(script, &opts("console-and-signals"))
        .expect("test host run");
    println!("host: {}\n{}", r.host, r.output);
    assert!(
        r.output.contains("got=[hello from the host]"),
        "{}",
        r.output
    );
    assert!(r.output.contains("input-status=0"), "{}", r.output);
    assert!(r.output.contains("shell says 42"), "{}", r.output);
    assert!(r.output.contains("shell-status=0"), "{}", r.output);
    assert!(r.output.contains("term-status=143"), "{}", r.output);
}
