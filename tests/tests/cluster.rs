//! End-to-end: two monitors, two guests. Guest-to-guest pings through both monitors, the
//! wrong cluster key, a monitor that stops answering, and two test hosts joined by a network.

use offload_tests::{Harness, RunOpts};

fn opts(name: &str) -> RunOpts {
    RunOpts {
        name: name.into(),
        ..Default::default()
    }
}

/// Shell functions for the guest side: `wait_state NODE STATE SECONDS` polls `offload nodes`.
const GUEST_LIB: &str = r#"wait_state() { i=0; while ! offload nodes | grep -q "^$1 [0-9]* $2\$"; do i=$((i+1)); [ $i -gt $(($3*2)) ] && { echo "timeout waiting for $1 $2"; offload nodes; return 1; }; sleep 0.5; done; }"#;

/// Host-side prologue: a cluster key, and `gsh` to pass a guest script (with GUEST_LIB) to vmm.
fn prologue(peers: &str) -> String {
    format!(
        r#"printf 'an example cluster key of more than 32 bytes' > /tmp/key; chmod 600 /tmp/key
P={peers}
"#
    )
}

fn guest(script: &str) -> String {
    // The guest script travels as one argument of `sh -c`, single-quoted on the host.
    format!("'{GUEST_LIB}\n{script}'")
}

/// Proves the core of the paravirtual channel: `offload ping` in guest a reaches guest b's
/// driver through vmm a, the authenticated transport and vmm b, and comes back; and the same
/// from b to a at the same time; four threads of guest a pinging at once all get their own
/// answers (requests complete out of order). `offload nodes` shows each peer up.
#[test]
fn guests_ping_each_other_through_both_monitors() {
    let h = Harness::locate().expect("harness");
    let ga = guest(
        "wait_state b up 60 || exit 9\noffload nodes\noffload ping b -c 3 -s 200; s=$?\n\
         for i in 1 2 3 4; do offload ping b -c 5 -s $((i * 50)) > /tmp/p$i 2>&1 & done; wait\n\
         for i in 1 2 3 4; do tail -1 /tmp/p$i | sed \"s/^/thread$i: /\"; done\nsleep 8; exit $s",
    );
    let gb = guest("wait_state a up 60 || exit 9\noffload ping a -c 3; s=$?\nsleep 8; exit $s");
    let script = format!(
        r#"{}
vmm launch --node b --peers $P --secret /tmp/key -- sh -c {gb} > /tmp/b.log 2>&1 &
vmm launch --node a --peers $P --secret /tmp/key -- sh -c {ga} > /tmp/a.log 2>&1
echo "a-status=$?"
wait $!; echo "b-status=$?"
sed 's/^/a| /' /tmp/a.log; sed 's/^/b| /' /tmp/b.log
"#,
        prologue("a=127.0.0.1:7001,b=127.0.0.1:7002")
    );
    let r = h
        .run(&script, &opts("ping-both-ways"))
        .expect("test host run");
    println!("host: {}\n{}", r.host, r.output);
    assert!(r.output.contains("a-status=0"), "{}", r.output);
    assert!(r.output.contains("b-status=0"), "{}", r.output);
    assert!(r.output.contains("a| b 1 up"), "{}", r.output);
    assert!(r.output.contains("a| 3 sent, 3 received"), "{}", r.output);
    assert!(r.output.contains("b| 3 sent, 3 received"), "{}", r.output);
    assert!(r.output.contains("bytes=200"), "{}", r.output);
    for i in 1..=4 {
        let line = format!("a| thread{i}: 5 sent, 5 received");
        assert!(
            r.output.contains(&line),
            "concurrent pinger {i}: {}",
            r.output
        );
    }
}

/// Proves authentication: with a different key on b no link comes up, vmm a logs the failed
/// connection, guest a sees b down and `offload ping b` fails at once with a clear message.
#[test]
fn wrong_secret_keeps_the_peer_down() {
    let h = Harness::locate().expect("harness");
    let ga = guest("sleep 6; offload nodes; offload ping b -c 1; echo ping-status=$?");
    let script = format!(
        r#"{}
printf 'a different key, also longer than 32 bytes' > /tmp/other; chmod 600 /tmp/other
vmm launch --node b --peers $P --secret /tmp/other -- sleep 20 > /tmp/b.log 2>&1 &
vmm launch --node a --peers $P --secret /tmp/key -- sh -c {ga} > /tmp/a.log 2>&1
kill $! 2>/dev/null; wait
sed 's/^/a| /' /tmp/a.log; sed 's/^/b| /' /tmp/b.log
"#,
        prologue("a=127.0.0.1:7001,b=127.0.0.1:7002")
    );
    let r = h
        .run(&script, &opts("wrong-secret"))
        .expect("test host run");
    println!("host: {}\n{}", r.host, r.output);
    assert!(r.output.contains("a| b 1 down"), "{}", r.output);
    assert!(r.output.contains("peer b is down"), "{}", r.output);
    assert!(r.output.contains("ping-status=1"), "{}", r.output);
    assert!(
        r.output.contains("connection with b failed"),
        "vmm a logs it: {}",
        r.output
    );
    assert!(!r.output.contains("peer b is up"), "{}", r.output);
}

/// Proves loss detection and recovery: vmm b is frozen (SIGSTOP: its sockets stay open but it
/// sends nothing), vmm a declares it lost within the 2 s peer timeout, guest a sees it lost and
/// `offload ping b` fails with a clear error instead of hanging; a new vmm b comes back and the
/// link and pings work again. vmm a and guest a keep running throughout.
#[test]
fn frozen_monitor_is_declared_lost_and_a_restarted_one_comes_back() {
    let h = Harness::locate().expect("harness");
    let ga = guest(
        "wait_state b up 60 || exit 9\noffload ping b -c 1; echo first=$?\n\
         wait_state b lost 30 || exit 8\noffload ping b -c 1; echo second=$?\n\
         wait_state b up 90 || exit 7\noffload ping b -c 1; echo third=$?",
    );
    let script = format!(
        r#"{}
T=--peer-timeout-ms=2000
vmm launch --node b --peers $P --secret /tmp/key $T -- sleep 600 > /tmp/b1.log 2>&1 &
B=$!
vmm launch --node a --peers $P --secret /tmp/key $T -- sh -c {ga} > /tmp/a.log 2>&1 &
A=$!
i=0; until grep -q 'first=' /tmp/a.log || [ $i -gt 240 ]; do sleep 0.5; i=$((i+1)); done
kill -STOP $B; echo "froze b"
i=0; until grep -q 'second=' /tmp/a.log || [ $i -gt 240 ]; do sleep 0.5; i=$((i+1)); done
kill -KILL $B; wait $B 2>/dev/null
vmm launch --node b --peers $P --secret /tmp/key $T -- sleep 600 > /tmp/b2.log 2>&1 &
B=$!
wait $A; echo "a-status=$?"
kill $B; wait $B
sed 's/^/a| /' /tmp/a.log
"#,
        prologue("a=127.0.0.1:7001,b=127.0.0.1:7002")
    );
    let r = h.run(&script, &opts("lost-peer")).expect("test host run");
    println!("host: {}\n{}", r.host, r.output);
    assert!(r.output.contains("a| first=0"), "{}", r.output);
    assert!(r.output.contains("peer b is lost"), "{}", r.output);
    assert!(r.output.contains("a| second=1"), "{}", r.output);
    assert!(r.output.contains("a| third=0"), "{}", r.output);
    assert!(r.output.contains("a-status=0"), "{}", r.output);
}

/// Proves the same path across two hosts: each monitor runs in its own test host, the two
/// joined by a virtual network, and guest a pings guest b over it.
#[test]
fn ping_across_two_test_hosts() {
    let h = Harness::locate().expect("harness");
    let peers = "a=$TESTHOST_IP_A:7001,b=$TESTHOST_IP_B:7002";
    let ga = guest("wait_state b up 120 || exit 9\noffload ping b -c 3; s=$?\nsleep 5; exit $s");
    let gb = guest("wait_state a up 120 || exit 9\nsleep 30");
    let a = format!(
        "{}vmm launch --node a --peers $P --secret /tmp/key -- sh -c {ga}; echo a-status=$?\n",
        prologue(peers)
    );
    let b = format!(
        "{}vmm launch --node b --peers $P --secret /tmp/key -- sh -c {gb}; echo b-status=$?\n",
        prologue(peers)
    );
    let [ra, rb] = h
        .run_pair([&a, &b], &opts("two-hosts"))
        .expect("test host pair");
    println!("host a: {}\n{}\nhost b:\n{}", ra.host, ra.output, rb.output);
    assert!(ra.output.contains("3 sent, 3 received"), "{}", ra.output);
    assert!(ra.output.contains("a-status=0"), "{}", ra.output);
    assert!(rb.output.contains("peer a is up"), "{}", rb.output);
}
