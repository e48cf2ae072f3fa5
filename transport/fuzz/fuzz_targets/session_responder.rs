//! Fuzz target: arbitrary bytes from an unauthenticated client into a responder session
//! (the accepting side of the Noise handshake). Checks: no panic, never an accepted Hello,
//! and nothing is sent back unless a valid handshake message 1 arrived (which random input
//! cannot forge without the key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use transport::message::Hello;
use transport::session::{Inbound, Role, Session};
use transport::Secret;

fuzz_target!(|data: &[u8]| {
    let hello = Hello {
        protocol_version: transport::PROTOCOL_VERSION,
        cluster_id: None,
        node_name: "b".into(),
        node_index: 1,
    };
    let secret = Secret::from_bytes(b"fuzzing secret, at least 32 bytes long");
    let mut s = Session::new(Role::Responder, &secret, hello, 65503).expect("session");
    for chunk in data.chunks(97) {
        s.receive(chunk);
        loop {
            match s.next_inbound() {
                Ok(Some(Inbound::Hello(_))) => panic!("forged Hello accepted"),
                Ok(Some(_)) => panic!("frame before Hello accepted"),
                Ok(None) => break,
                Err(_) => {
                    assert!(s.take_output().is_empty(), "reply to a failed handshake");
                    return;
                }
            }
        }
    }
    let _ = s.finish();
});
