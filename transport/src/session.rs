//! One connection's protocol, without I/O: Noise handshake, Hello exchange, then sealing and
//! opening of frames.
//!
//! Pattern `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`: both sides prove knowledge of the cluster
//! PSK in the first round trip (a wrong key makes the responder fail to decrypt message 1) and
//! derive fresh session keys from ephemeral X25519 keys (forward secrecy). Only the two
//! 48-byte handshake messages travel unencrypted; they carry ephemeral public keys and no
//! payload. Then the initiator sends its encrypted `Hello`; the responder answers with its own
//! `Hello` ([`Session::accept`]) or an `Error` ([`Session::refuse`]).
//!
//! Feed received bytes with [`Session::receive`], pull [`Inbound`] items with
//! [`Session::next_inbound`], and send what [`Session::take_output`] returns. After any error
//! the session is dead and its connection must be closed.

use thiserror::Error;

use crate::cluster::Secret;
use crate::frame::{wrap, FrameError, WireDecoder, HEADER_LEN, MAX_PAYLOAD, TAG_LEN};
use crate::message::{error_code, Envelope, Hello, Message, MessageError};

/// The Noise protocol name used for every connection.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Bound into the handshake hash, so a different protocol with the same key cannot talk to us.
const PROLOGUE: &[u8] = b"offload-transport/1";
/// Largest handshake frame accepted (the real ones are 48 bytes).
const HANDSHAKE_MAX_FRAME: usize = 256;

/// Why a session failed; the connection is then closed.
#[derive(Debug, Error)]
pub enum SessionError {
    #[error("cannot set up Noise state")]
    Setup(#[source] snow::Error),
    #[error("Noise handshake failed (wrong cluster secret?)")]
    Handshake(#[source] snow::Error),
    #[error("frame failed to decrypt")]
    Decrypt(#[source] snow::Error),
    #[error("cannot encrypt frame")]
    Encrypt(#[source] snow::Error),
    #[error("bad frame")]
    Frame(#[from] FrameError),
    #[error("bad message")]
    Message(#[from] MessageError),
    #[error("expected Hello as first message, got {0:?}")]
    ExpectedHello(crate::message::MessageType),
    #[error("second Hello on an open connection")]
    DuplicateHello,
    #[error("peer refused the connection (code {code}): {message}")]
    Refused { code: u32, message: String },
    #[error("session is not ready to send")]
    NotOpen,
    #[error("session already failed")]
    Dead,
}

/// Which side of the handshake this session plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Dialed the connection; writes Noise message 1 and the first Hello.
    Initiator,
    /// Accepted the connection; answers the Hello.
    Responder,
}

/// What a session yields to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// The peer's Hello (exactly once, first). The owner validates it; a responder then calls
    /// [`Session::accept`] or [`Session::refuse`], an initiator [`Session::refuse`] if bad.
    Hello(Hello),
    /// A frame after the Hello.
    Envelope(Envelope),
}

enum Phase {
    Handshake(Box<snow::HandshakeState>),
    AwaitHello(Box<snow::TransportState>),
    Open(Box<snow::TransportState>),
    Dead,
}

/// The per-connection protocol state (see the module docs).
pub struct Session {
    role: Role,
    phase: Phase,
    decoder: WireDecoder,
    out: Vec<u8>,
    local_hello: Hello,
    max_payload: usize,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.phase {
            Phase::Handshake(_) => "handshake",
            Phase::AwaitHello(_) => "await-hello",
            Phase::Open(_) => "open",
            Phase::Dead => "dead",
        };
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("phase", &phase)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts a session. An initiator queues Noise message 1 at once.
    pub fn new(
        role: Role,
        secret: &Secret,
        local_hello: Hello,
        max_payload: usize,
    ) -> Result<Session, SessionError> {
        let params = NOISE_PARAMS.parse().map_err(SessionError::Setup)?;
        let builder = snow::Builder::new(params)
            .prologue(PROLOGUE)
            .and_then(|b| b.psk(0, secret.psk()))
            .map_err(SessionError::Setup)?;
        let hs = match role {
            Role::Initiator => builder.build_initiator(),
            Role::Responder => builder.build_responder(),
        }
        .map_err(SessionError::Setup)?;
        let mut s = Session {
            role,
            phase: Phase::Handshake(Box::new(hs)),
            decoder: WireDecoder::new(HANDSHAKE_MAX_FRAME),
            out: Vec::new(),
            local_hello,
            max_payload: max_payload.min(MAX_PAYLOAD),
        };
        if role == Role::Initiator {
            s.write_handshake()?;
        }
        Ok(s)
    }

    /// True once the peer's Hello was received (frames may be exchanged).
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    /// True while the Noise handshake is still running.
    pub fn in_handshake(&self) -> bool {
        matches!(self.phase, Phase::Handshake(_))
    }

    /// Bytes waiting to be written to the socket (taken: the next call returns only new ones).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Appends bytes read from the socket; call [`next_inbound`](Self::next_inbound) after.
    pub fn receive(&mut self, data: &[u8]) {
        self.decoder.push(data);
    }

    /// Call at end of stream: reports a frame cut in the middle.
    pub fn finish(&self) -> Result<(), FrameError> {
        self.decoder.finish()
    }

    /// The next complete item, `Ok(None)` when more bytes are needed. After an `Err` the
    /// session is dead.
    pub fn next_inbound(&mut self) -> Result<Option<Inbound>, SessionError> {
        let result = self.step();
        if result.is_err() {
            self.phase = Phase::Dead;
        }
        result
    }

    fn step(&mut self) -> Result<Option<Inbound>, SessionError> {
        loop {
            if matches!(self.phase, Phase::Dead) {
                return Err(SessionError::Dead);
            }
            let Some(frame) = self.decoder.next_frame()? else {
                return Ok(None);
            };
            if let Some(item) = self.handle_frame(&frame)? {
                return Ok(Some(item));
            }
        }
    }

    fn handle_frame(&mut self, frame: &[u8]) -> Result<Option<Inbound>, SessionError> {
        match &mut self.phase {
            Phase::Handshake(hs) => {
                let mut scratch = [0u8; HANDSHAKE_MAX_FRAME];
                hs.read_message(frame, &mut scratch)
                    .map_err(SessionError::Handshake)?;
                if self.role == Role::Responder {
                    self.write_handshake()?;
                }
                self.finish_handshake()?;
                Ok(None)
            }
            Phase::AwaitHello(ts) => match open(ts, frame, self.max_payload)?.message {
                Message::Hello(h) => {
                    let Phase::AwaitHello(ts) = std::mem::replace(&mut self.phase, Phase::Dead)
                    else {
                        return Err(SessionError::Dead);
                    };
                    self.phase = Phase::Open(ts);
                    Ok(Some(Inbound::Hello(h)))
                }
                Message::Error { code, message } => Err(SessionError::Refused { code, message }),
                other => Err(SessionError::ExpectedHello(other.msg_type())),
            },
            Phase::Open(ts) => {
                let env = open(ts, frame, self.max_payload)?;
                if matches!(env.message, Message::Hello(_)) {
                    return Err(SessionError::DuplicateHello);
                }
                Ok(Some(Inbound::Envelope(env)))
            }
            Phase::Dead => Err(SessionError::Dead),
        }
    }

    fn write_handshake(&mut self) -> Result<(), SessionError> {
        let Phase::Handshake(hs) = &mut self.phase else {
            return Err(SessionError::NotOpen);
        };
        let mut msg = [0u8; HANDSHAKE_MAX_FRAME];
        let n = hs
            .write_message(&[], &mut msg)
            .map_err(SessionError::Handshake)?;
        self.out
            .extend(wrap(&msg[..n]).ok_or(SessionError::NotOpen)?);
        Ok(())
    }

    fn finish_handshake(&mut self) -> Result<(), SessionError> {
        let Phase::Handshake(hs) = std::mem::replace(&mut self.phase, Phase::Dead) else {
            return Err(SessionError::Dead);
        };
        if !hs.is_handshake_finished() {
            self.phase = Phase::Handshake(hs);
            return Ok(());
        }
        let ts = hs.into_transport_mode().map_err(SessionError::Handshake)?;
        self.phase = Phase::AwaitHello(Box::new(ts));
        self.decoder
            .set_max_frame(HEADER_LEN + self.max_payload + TAG_LEN);
        if self.role == Role::Initiator {
            let hello = Envelope::one_way(Message::Hello(self.local_hello.clone()));
            self.seal(&hello)?;
        }
        Ok(())
    }

    /// Responder: the peer's Hello was accepted; send ours.
    pub fn accept(&mut self) -> Result<(), SessionError> {
        let hello = Envelope::one_way(Message::Hello(self.local_hello.clone()));
        self.seal(&hello)
    }

    /// Sends an `Error { REFUSED, reason }` if keys are established, then kills the session
    /// (the owner closes the connection after writing the output).
    pub fn refuse(&mut self, reason: &str) {
        let mut message = reason.to_owned();
        let limit = self.max_payload.saturating_sub(4);
        while message.len() > limit {
            message.pop();
        }
        let refusal = Envelope::one_way(Message::Error {
            code: error_code::REFUSED,
            message,
        });
        if let Err(e) = self.seal(&refusal) {
            log::debug!("refusal not sent: {e}");
        }
        self.phase = Phase::Dead;
    }

    /// Encrypts one envelope into the output. Allowed once keys exist (after the handshake).
    pub fn send(&mut self, env: &Envelope) -> Result<(), SessionError> {
        if !self.is_open() {
            return Err(SessionError::NotOpen);
        }
        self.seal(env)
    }

    fn seal(&mut self, env: &Envelope) -> Result<(), SessionError> {
        let ts = match &mut self.phase {
            Phase::AwaitHello(ts) | Phase::Open(ts) => ts,
            _ => return Err(SessionError::NotOpen),
        };
        let plaintext = env.encode(self.max_payload)?;
        let mut buf = vec![0u8; plaintext.len() + TAG_LEN];
        let n = ts
            .write_message(&plaintext, &mut buf)
            .map_err(SessionError::Encrypt)?;
        self.out
            .extend(wrap(&buf[..n]).ok_or(SessionError::NotOpen)?);
        Ok(())
    }
}

fn open(
    ts: &mut snow::TransportState,
    frame: &[u8],
    max_payload: usize,
) -> Result<Envelope, SessionError> {
    let mut plaintext = vec![0u8; frame.len()];
    let n = ts
        .read_message(frame, &mut plaintext)
        .map_err(SessionError::Decrypt)?;
    Ok(Envelope::decode(&plaintext[..n], max_payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Kind;
    use crate::PROTOCOL_VERSION;

    fn hello(name: &str) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: None,
            node_name: name.into(),
            node_index: 0,
        }
    }

    fn pair(ka: &[u8], kb: &[u8]) -> (Session, Session) {
        let a = Session::new(
            Role::Initiator,
            &Secret::from_bytes(ka),
            hello("a"),
            MAX_PAYLOAD,
        )
        .unwrap();
        let b = Session::new(
            Role::Responder,
            &Secret::from_bytes(kb),
            hello("b"),
            MAX_PAYLOAD,
        )
        .unwrap();
        (a, b)
    }

    /// Moves bytes from `from` to `to` and returns what `to` yields.
    fn pump(from: &mut Session, to: &mut Session) -> Result<Vec<Inbound>, SessionError> {
        to.receive(&from.take_output());
        let mut items = Vec::new();
        while let Some(i) = to.next_inbound()? {
            items.push(i);
        }
        Ok(items)
    }

    fn open_pair() -> (Session, Session) {
        let (mut a, mut b) = pair(b"k", b"k");
        assert!(pump(&mut a, &mut b).unwrap().is_empty());
        assert!(pump(&mut b, &mut a).unwrap().is_empty());
        assert_eq!(
            pump(&mut a, &mut b).unwrap(),
            vec![Inbound::Hello(hello("a"))]
        );
        b.accept().unwrap();
        assert_eq!(
            pump(&mut b, &mut a).unwrap(),
            vec![Inbound::Hello(hello("b"))]
        );
        (a, b)
    }

    #[test]
    fn handshake_hello_and_frames() {
        let (mut a, mut b) = open_pair();
        assert!(a.is_open() && b.is_open());
        let env = Envelope {
            kind: Kind::Request(5),
            message: Message::Ping {
                payload: b"x".to_vec(),
            },
        };
        a.send(&env).unwrap();
        a.send(&Envelope::one_way(Message::Heartbeat)).unwrap();
        let got = pump(&mut a, &mut b).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Inbound::Envelope(env));
    }

    #[test]
    fn handshake_messages_carry_no_plaintext() {
        let (mut a, mut b) = pair(b"k", b"k");
        let m1 = a.take_output();
        assert_eq!(m1.len(), 2 + 48);
        b.receive(&m1);
        assert!(b.next_inbound().unwrap().is_none());
        let m2 = b.take_output();
        assert_eq!(m2.len(), 2 + 48, "responder sends only message 2");
        a.receive(&m2);
        assert!(a.next_inbound().unwrap().is_none());
        let hello_frame = a.take_output();
        let plain = Envelope::one_way(Message::Hello(hello("a")))
            .encode(MAX_PAYLOAD)
            .unwrap();
        assert_eq!(hello_frame.len(), 2 + plain.len() + TAG_LEN);
        assert!(!hello_frame.windows(plain.len()).any(|w| w == plain));
    }

    #[test]
    fn wrong_key_fails_at_responder_without_reply() {
        let (mut a, mut b) = pair(b"key-one", b"key-two");
        assert!(matches!(
            pump(&mut a, &mut b),
            Err(SessionError::Handshake(_))
        ));
        assert!(
            b.take_output().is_empty(),
            "nothing sent to a wrong-key peer"
        );
        assert!(matches!(b.next_inbound(), Err(SessionError::Dead)));
    }

    #[test]
    fn refusal_reaches_initiator() {
        let (mut a, mut b) = pair(b"k", b"k");
        pump(&mut a, &mut b).unwrap();
        pump(&mut b, &mut a).unwrap();
        pump(&mut a, &mut b).unwrap();
        b.refuse("go away");
        match pump(&mut b, &mut a) {
            Err(SessionError::Refused { code, message }) => {
                assert_eq!(code, error_code::REFUSED);
                assert_eq!(message, "go away");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn protocol_violations_kill_the_session() {
        // Non-Hello first message.
        let (mut a, mut b) = pair(b"k", b"k");
        pump(&mut a, &mut b).unwrap();
        pump(&mut b, &mut a).unwrap();
        a.take_output();
        assert!(a.send(&Envelope::one_way(Message::Heartbeat)).is_err());
        // Duplicate Hello.
        let (mut a, mut b) = open_pair();
        a.seal(&Envelope::one_way(Message::Hello(hello("a"))))
            .unwrap();
        assert!(matches!(
            pump(&mut a, &mut b),
            Err(SessionError::DuplicateHello)
        ));
        // Tampered ciphertext.
        let (mut a, mut b) = open_pair();
        a.send(&Envelope::one_way(Message::Heartbeat)).unwrap();
        let mut bytes = a.take_output();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        b.receive(&bytes);
        assert!(matches!(b.next_inbound(), Err(SessionError::Decrypt(_))));
        // Replayed frame (nonce mismatch).
        let (mut a, mut b) = open_pair();
        a.send(&Envelope::one_way(Message::Heartbeat)).unwrap();
        let bytes = a.take_output();
        b.receive(&bytes);
        b.receive(&bytes);
        assert!(b.next_inbound().unwrap().is_some());
        assert!(b.next_inbound().is_err());
    }

    #[test]
    fn garbage_and_oversize_during_handshake() {
        let (_, mut b) = pair(b"k", b"k");
        b.receive(&[0x01, 0x01]);
        assert!(matches!(
            b.next_inbound(),
            Err(SessionError::Frame(FrameError::TooLarge { .. }))
        ));
        let (_, mut b) = pair(b"k", b"k");
        b.receive(&wrap(&[0x55; 48]).unwrap());
        assert!(matches!(b.next_inbound(), Err(SessionError::Handshake(_))));
    }

    #[test]
    fn max_payload_is_enforced_both_ways() {
        let (mut a, _) = open_pair();
        let big = Envelope::one_way(Message::Ping {
            payload: vec![0; MAX_PAYLOAD + 1],
        });
        assert!(matches!(a.send(&big), Err(SessionError::Message(_))));
        let max = Envelope::one_way(Message::Ping {
            payload: vec![0; MAX_PAYLOAD],
        });
        a.send(&max).unwrap();
        assert_eq!(a.take_output().len(), 2 + 65535);
    }
}
