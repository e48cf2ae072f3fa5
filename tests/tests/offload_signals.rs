//! End-to-end: signals to an offloaded thread (issue 5, item 5), two VMs a and b on one test
//! host. `ot-signals` (tests/guest/signals.c) checks EINTR of an interrupted blocking call
//! without SA_RESTART, the restart of the same call with SA_RESTART, a signal sent to the
//! process, a blocked signal that stays pending until the thread unblocks it, and a signal
//! sent by another process while the thread computes, whose handler must interrupt the
//! thread itself (on its own stack, with the sender's si_pid). It must
//! print the same lines unmarked, marked at home and with its thread on b (`--on b`), where
//! the blocking read runs at home in the thread's executor and the signal arrives at home.

use std::sync::OnceLock;

use offload_tests::{Harness, RunOpts};

const GUEST_LIB: &str = r#"wait_up() { i=0; while ! offload nodes | grep -q "^$1 [0-9]* up\$"; do i=$((i+1)); [ $i -gt 120 ] && { echo "timeout waiting for $1"; return 1; }; sleep 0.5; done; }"#;

/// a: the program in the three modes, each line tagged; a bounded wait for each.
const SCRIPT_A: &str = r#"wait_up b || exit 9
for m in local marked remote; do
  case $m in local) p=;; marked) p="offload run --";; remote) p="offload run --on b --";; esac
  timeout 120 $p ot-signals > /tmp/$m.out 2>&1; echo "$m-status=$?"
  sed "s/^/$m| /" /tmp/$m.out
done
offload mem write 0x7ff3800 1"#;

/// b: stays up until a is done.
const SCRIPT_B: &str = "wait_up a || exit 9\noffload mem wait 0x7ff3800 1 --timeout-ms 600000";

fn run() -> &'static str {
    static OUT: OnceLock<String> = OnceLock::new();
    OUT.get_or_init(|| {
        let script = format!(
            r#"printf 'an example cluster key of more than 32 bytes' > /tmp/key; chmod 600 /tmp/key
P=a=127.0.0.1:7001,b=127.0.0.1:7002
vmm launch --node b --peers $P --secret /tmp/key -- sh -c '{GUEST_LIB}
{SCRIPT_B}' > /tmp/b.log 2>/tmp/b.err &
B=$!
vmm launch --node a --peers $P --secret /tmp/key -- sh -c '{GUEST_LIB}
{SCRIPT_A}' > /tmp/a.log 2>/tmp/a.err
echo "a-status=$?"
wait $B; echo "b-status=$?"
sed 's/^/a| /' /tmp/a.log; sed 's/^/b| /' /tmp/b.log
sed 's/^/a-vmm| /' /tmp/a.err; sed 's/^/b-vmm| /' /tmp/b.err
"#
        );
        let opts = RunOpts {
            name: "offload-signals".into(),
            timeout: Some(std::time::Duration::from_secs(900)),
            // An L2 guest of the emulated host triple-faults now and then on its own (docs/dsm.md),
            // b mostly while it polls a's window word; such a run is repeated, and says so.
            triple_fault_retries: Some(3),
            ..Default::default()
        };
        let h = Harness::locate().expect("harness");
        let r = h.run(&script, &opts).expect("test host run");
        println!("host: {}\n{}", r.host, r.output);
        r.output
    })
}

/// The lines mode `m` printed, without the tag.
fn lines(out: &str, m: &str) -> Vec<String> {
    let tag = format!("a| {m}| ");
    out.lines()
        .filter_map(|l| l.strip_prefix(&tag))
        .map(str::to_string)
        .collect()
}

/// Proves that the program's own checks pass unmarked and marked at home (the reference).
#[test]
fn signals_behave_as_linux_says_at_home() {
    let out = run();
    for m in ["local", "marked"] {
        assert!(out.contains(&format!("a| {m}-status=0")), "{m}:\n{out}");
        assert!(
            lines(out, m).contains(&"signals: done handled=5".to_string()),
            "{m}:\n{out}"
        );
    }
}

/// Proves that a thread on b sees the same signal semantics: EINTR, SA_RESTART, delivery of
/// a signal sent to the process, a blocked signal held pending until unblocked, and a
/// handler that runs in the thread on b when the signal comes while it computes (the
/// executor in a hands the signal on instead of running the handler itself).
#[test]
fn an_offloaded_thread_sees_the_same_signal_semantics() {
    let out = run();
    assert!(out.contains("a| remote-status=0"), "{out}");
    assert_eq!(lines(out, "remote"), lines(out, "local"), "{out}");
    assert!(
        out.contains("a-status=0") && out.contains("b-status=0"),
        "{out}"
    );
}
