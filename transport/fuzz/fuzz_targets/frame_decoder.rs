//! Fuzz target: arbitrary bytes through the wire-frame decoder (split into reads of
//! input-chosen sizes), every frame through the plaintext header and message parser, and
//! the raw input through the payload parser. Checks: no panic, and every accepted plaintext
//! re-encodes to exactly the same bytes (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use transport::frame::{WireDecoder, MAX_NOISE_MESSAGE, MAX_PAYLOAD};
use transport::message::{Envelope, Message};

fn check_plaintext(plaintext: &[u8], max_payload: usize) {
    if let Ok(env) = Envelope::decode(plaintext, max_payload) {
        let again = env
            .encode(max_payload)
            .expect("decoded envelope re-encodes");
        assert_eq!(again, plaintext, "encoding is canonical");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    // The plaintext side: the whole input as one decrypted frame, at two payload limits.
    check_plaintext(rest, MAX_PAYLOAD);
    check_plaintext(rest, usize::from(split) * 4);
    if let Some((&t, payload)) = rest.split_first() {
        let _ = Message::decode_payload(t, payload);
    }
    // The wire side: the input as a TCP stream arriving in chunks of `split + 1` bytes.
    let mut decoder = WireDecoder::new(MAX_NOISE_MESSAGE);
    for chunk in rest.chunks(usize::from(split) + 1) {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => check_plaintext(&frame, MAX_PAYLOAD),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
});
