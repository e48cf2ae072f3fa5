//! Typed messages: [`Message`], the request/response role of a frame ([`Kind`]) and their
//! hand-written little-endian encoding into a plaintext (header + payload).
//!
//! Payload layouts (all integers little-endian; "rest" = up to the end of the payload):
//!
//! | type | number | payload |
//! |---|---|---|
//! | Hello | 1 | version u8, node index u16, cluster-id flag u8 (0/1) [+ 8 bytes], name length u8, name |
//! | Heartbeat | 2 | empty |
//! | Ping | 3 | rest: opaque bytes |
//! | Pong | 4 | rest: opaque bytes |
//! | Error | 5 | code u32, rest: UTF-8 message |
//! | App | 6 | kind u16, rest: opaque bytes |
//!
//! Decoding is total: any byte string yields a message or a [`MessageError`].

use thiserror::Error;

use crate::cluster::{is_valid_node_name, MAX_NAME_LEN};
use crate::frame::{
    decode_plaintext, encode_plaintext, FrameError, Header, FLAG_REQUEST, FLAG_RESPONSE,
    MAX_PAYLOAD,
};

/// Well-known [`Message::Error`] codes. Codes from [`error_code::APP_BASE`] up are the
/// application's.
pub mod error_code {
    /// The peer refused the connection after the handshake (the message says why).
    pub const REFUSED: u32 = 1;
    /// The application had no handler for a request.
    pub const UNHANDLED: u32 = 2;
    /// First code free for the application's own errors.
    pub const APP_BASE: u32 = 0x1000;
}

/// Why a plaintext could not be turned into a message (or a message into a plaintext).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MessageError {
    /// The header itself is invalid.
    #[error("bad frame header")]
    Frame(#[from] FrameError),
    /// The header's message type number is not defined.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// The payload ended before a field of the message.
    #[error("{msg_type:?} payload truncated")]
    Truncated { msg_type: MessageType },
    /// Bytes are left after the last field of a fixed-layout message.
    #[error("{msg_type:?} payload has {extra} trailing bytes")]
    Trailing { msg_type: MessageType, extra: usize },
    /// A field holds a value the protocol does not allow.
    #[error("{msg_type:?} payload invalid: {what}")]
    Invalid {
        msg_type: MessageType,
        what: &'static str,
    },
    /// Hello and Heartbeat must be one-way; requests and responses need a non-zero id.
    #[error("{msg_type:?} with flags {flags:#06x} and request id {request_id} is not allowed")]
    BadKind {
        msg_type: MessageType,
        flags: u16,
        request_id: u64,
    },
    /// The encoded payload would exceed the maximum payload.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
}

/// Message type numbers as they appear in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    Hello = 1,
    Heartbeat = 2,
    Ping = 3,
    Pong = 4,
    Error = 5,
    App = 6,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<MessageType> {
        Some(match v {
            1 => MessageType::Hello,
            2 => MessageType::Heartbeat,
            3 => MessageType::Ping,
            4 => MessageType::Pong,
            5 => MessageType::Error,
            6 => MessageType::App,
            _ => return None,
        })
    }
}

/// First message each side sends after the Noise handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's [`crate::PROTOCOL_VERSION`].
    pub protocol_version: u8,
    /// Short hash of the cluster secret, for diagnostics (the handshake already proved it).
    pub cluster_id: Option<[u8; 8]>,
    /// The sender's node name (1 to 32 of `A-Za-z0-9_-`).
    pub node_name: String,
    /// The sender's index in the cluster file.
    pub node_index: u16,
}

/// A typed protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    Heartbeat,
    /// Echo request; the *application* answers it with a [`Message::Pong`].
    Ping {
        payload: Vec<u8>,
    },
    Pong {
        payload: Vec<u8>,
    },
    Error {
        code: u32,
        message: String,
    },
    /// Generic message for later protocols (DSM, syscall forwarding).
    App {
        kind: u16,
        payload: Vec<u8>,
    },
}

/// The request/response role of a frame, carried by the header's flags and request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No answer expected (request id 0).
    OneWay,
    /// The sender waits for a response with this id.
    Request(u64),
    /// Answers the request with this id.
    Response(u64),
}

/// A message with its role: what one frame carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub kind: Kind,
    pub message: Message,
}

impl Message {
    /// The type number of this message.
    pub fn msg_type(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::Heartbeat => MessageType::Heartbeat,
            Message::Ping { .. } => MessageType::Ping,
            Message::Pong { .. } => MessageType::Pong,
            Message::Error { .. } => MessageType::Error,
            Message::App { .. } => MessageType::App,
        }
    }

    /// Appends this message's payload encoding to `out`.
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Message::Hello(h) => {
                out.push(h.protocol_version);
                out.extend_from_slice(&h.node_index.to_le_bytes());
                match h.cluster_id {
                    Some(id) => {
                        out.push(1);
                        out.extend_from_slice(&id);
                    }
                    None => out.push(0),
                }
                // Names are validated to ≤ 32 bytes on decode; clamp here so encode is total.
                let name = &h.node_name.as_bytes()[..h.node_name.len().min(usize::from(u8::MAX))];
                out.push(name.len() as u8);
                out.extend_from_slice(name);
            }
            Message::Heartbeat => {}
            Message::Ping { payload } | Message::Pong { payload } => out.extend_from_slice(payload),
            Message::Error { code, message } => {
                out.extend_from_slice(&code.to_le_bytes());
                out.extend_from_slice(message.as_bytes());
            }
            Message::App { kind, payload } => {
                out.extend_from_slice(&kind.to_le_bytes());
                out.extend_from_slice(payload);
            }
        }
    }

    /// Parses the payload of a message of type number `msg_type`.
    pub fn decode_payload(msg_type: u8, payload: &[u8]) -> Result<Message, MessageError> {
        let t = MessageType::from_u8(msg_type).ok_or(MessageError::UnknownType(msg_type))?;
        let mut r = Reader { buf: payload, t };
        let msg = match t {
            MessageType::Hello => Message::Hello(decode_hello(&mut r)?),
            MessageType::Heartbeat => Message::Heartbeat,
            MessageType::Ping => Message::Ping {
                payload: r.rest().to_vec(),
            },
            MessageType::Pong => Message::Pong {
                payload: r.rest().to_vec(),
            },
            MessageType::Error => {
                let code = r.u32()?;
                let message = std::str::from_utf8(r.rest())
                    .map_err(|_| r.invalid("message is not UTF-8"))?
                    .to_owned();
                Message::Error { code, message }
            }
            MessageType::App => Message::App {
                kind: r.u16()?,
                payload: r.rest().to_vec(),
            },
        };
        r.end()?;
        Ok(msg)
    }
}

fn decode_hello(r: &mut Reader<'_>) -> Result<Hello, MessageError> {
    let protocol_version = r.u8()?;
    let node_index = r.u16()?;
    let cluster_id = match r.u8()? {
        0 => None,
        1 => Some(r.array::<8>()?),
        _ => return Err(r.invalid("cluster-id flag is not 0 or 1")),
    };
    let name_len = usize::from(r.u8()?);
    let name = r.take(name_len)?;
    let node_name = std::str::from_utf8(name)
        .ok()
        .filter(|n| is_valid_node_name(n))
        .ok_or_else(|| r.invalid("node name is not 1 to 32 of A-Za-z0-9_-"))?
        .to_owned();
    debug_assert!(node_name.len() <= MAX_NAME_LEN);
    Ok(Hello {
        protocol_version,
        cluster_id,
        node_name,
        node_index,
    })
}

/// Bounds-checked little-endian reader over one payload.
struct Reader<'a> {
    buf: &'a [u8],
    t: MessageType,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        if self.buf.len() < n {
            return Err(MessageError::Truncated { msg_type: self.t });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], MessageError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, MessageError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, MessageError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, MessageError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    fn invalid(&self, what: &'static str) -> MessageError {
        MessageError::Invalid {
            msg_type: self.t,
            what,
        }
    }
    fn end(&self) -> Result<(), MessageError> {
        match self.buf.len() {
            0 => Ok(()),
            extra => Err(MessageError::Trailing {
                msg_type: self.t,
                extra,
            }),
        }
    }
}

impl Envelope {
    /// A one-way envelope.
    pub fn one_way(message: Message) -> Envelope {
        Envelope {
            kind: Kind::OneWay,
            message,
        }
    }

    /// Encodes header + payload, refusing payloads over `max_payload` (capped at
    /// [`MAX_PAYLOAD`]) and roles the message type does not allow.
    pub fn encode(&self, max_payload: usize) -> Result<Vec<u8>, MessageError> {
        let (flags, request_id) = kind_to_header(self.kind);
        check_kind(self.message.msg_type(), flags, request_id)?;
        let mut payload = Vec::new();
        self.message.encode_payload(&mut payload);
        let max = max_payload.min(MAX_PAYLOAD);
        if payload.len() > max {
            return Err(MessageError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let header = Header {
            version: crate::PROTOCOL_VERSION,
            msg_type: self.message.msg_type() as u8,
            flags,
            request_id,
            payload_len: payload.len() as u32,
        };
        Ok(encode_plaintext(&header, &payload))
    }

    /// Parses one decrypted plaintext: header checks, then the typed payload.
    pub fn decode(plaintext: &[u8], max_payload: usize) -> Result<Envelope, MessageError> {
        let (header, payload) = decode_plaintext(plaintext, max_payload.min(MAX_PAYLOAD))?;
        let message = Message::decode_payload(header.msg_type, payload)?;
        check_kind(message.msg_type(), header.flags, header.request_id)?;
        let kind = match header.flags {
            FLAG_REQUEST => Kind::Request(header.request_id),
            FLAG_RESPONSE => Kind::Response(header.request_id),
            _ => Kind::OneWay,
        };
        Ok(Envelope { kind, message })
    }
}

fn kind_to_header(kind: Kind) -> (u16, u64) {
    match kind {
        Kind::OneWay => (0, 0),
        Kind::Request(id) => (FLAG_REQUEST, id),
        Kind::Response(id) => (FLAG_RESPONSE, id),
    }
}

fn check_kind(msg_type: MessageType, flags: u16, request_id: u64) -> Result<(), MessageError> {
    let control = matches!(msg_type, MessageType::Hello | MessageType::Heartbeat);
    let ok = match flags {
        0 => request_id == 0,
        _ => !control && request_id != 0,
    };
    if ok {
        Ok(())
    } else {
        Err(MessageError::BadKind {
            msg_type,
            flags,
            request_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTOCOL_VERSION;

    fn hello() -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: Some([1, 2, 3, 4, 5, 6, 7, 8]),
            node_name: "node-b_1".into(),
            node_index: 513,
        }
    }

    fn all_messages() -> Vec<Message> {
        vec![
            Message::Hello(hello()),
            Message::Hello(Hello {
                cluster_id: None,
                ..hello()
            }),
            Message::Heartbeat,
            Message::Ping { payload: vec![] },
            Message::Ping {
                payload: vec![0xde, 0xad],
            },
            Message::Pong {
                payload: b"pong".to_vec(),
            },
            Message::Error {
                code: 0xfeed_beef,
                message: "nö".into(),
            },
            Message::App {
                kind: 0x1234,
                payload: vec![5; 1000],
            },
        ]
    }

    fn plaintext(msg_type: u8, flags: u16, id: u64, payload: &[u8]) -> Vec<u8> {
        let h = Header {
            version: PROTOCOL_VERSION,
            msg_type,
            flags,
            request_id: id,
            payload_len: payload.len() as u32,
        };
        encode_plaintext(&h, payload)
    }

    #[test]
    fn round_trip_every_message_and_kind() {
        for message in all_messages() {
            let kinds: &[Kind] = match message.msg_type() {
                MessageType::Hello | MessageType::Heartbeat => &[Kind::OneWay],
                _ => &[Kind::OneWay, Kind::Request(7), Kind::Response(u64::MAX)],
            };
            for &kind in kinds {
                let env = Envelope {
                    kind,
                    message: message.clone(),
                };
                let pt = env.encode(MAX_PAYLOAD).unwrap();
                assert_eq!(Envelope::decode(&pt, MAX_PAYLOAD).unwrap(), env);
            }
        }
    }

    #[test]
    fn exact_layouts() {
        let pt = Envelope::one_way(Message::App {
            kind: 0x0102,
            payload: vec![9],
        })
        .encode(MAX_PAYLOAD)
        .unwrap();
        assert_eq!(&pt[16..], &[2, 1, 9]);
        assert_eq!(pt[1], 6);
        let pt = Envelope::one_way(Message::Hello(hello()))
            .encode(MAX_PAYLOAD)
            .unwrap();
        let mut want = vec![PROTOCOL_VERSION, 1, 2, 1, 1, 2, 3, 4, 5, 6, 7, 8, 8];
        want.extend_from_slice(b"node-b_1");
        assert_eq!(&pt[16..], &want[..]);
        let pt = Envelope::one_way(Message::Error {
            code: 1,
            message: "x".into(),
        })
        .encode(MAX_PAYLOAD)
        .unwrap();
        assert_eq!(&pt[16..], &[1, 0, 0, 0, b'x']);
    }

    #[test]
    fn unknown_type_is_refused() {
        for t in [0u8, 7, 255] {
            assert_eq!(
                Envelope::decode(&plaintext(t, 0, 0, &[]), MAX_PAYLOAD),
                Err(MessageError::UnknownType(t))
            );
        }
    }

    #[test]
    fn truncated_and_trailing_payloads_are_refused() {
        let full = plaintext(1, 0, 0, &[]);
        assert!(matches!(
            Envelope::decode(&full, MAX_PAYLOAD),
            Err(MessageError::Truncated { .. })
        ));
        let mut hello_payload = Vec::new();
        Message::Hello(hello()).encode_payload(&mut hello_payload);
        for cut in 0..hello_payload.len() {
            let pt = plaintext(1, 0, 0, &hello_payload[..cut]);
            assert!(
                Envelope::decode(&pt, MAX_PAYLOAD).is_err(),
                "hello cut at {cut} accepted"
            );
        }
        hello_payload.push(0);
        assert!(matches!(
            Envelope::decode(&plaintext(1, 0, 0, &hello_payload), MAX_PAYLOAD),
            Err(MessageError::Trailing { extra: 1, .. })
        ));
        assert!(matches!(
            Envelope::decode(&plaintext(2, 0, 0, &[0]), MAX_PAYLOAD),
            Err(MessageError::Trailing { .. })
        ));
        for short in [&[][..], &[1, 2, 3][..]] {
            assert!(matches!(
                Envelope::decode(&plaintext(5, 0, 0, short), MAX_PAYLOAD),
                Err(MessageError::Truncated { .. })
            ));
        }
        assert!(matches!(
            Envelope::decode(&plaintext(6, 0, 0, &[1]), MAX_PAYLOAD),
            Err(MessageError::Truncated { .. })
        ));
    }

    #[test]
    fn invalid_fields_are_refused() {
        let bad_flag = [PROTOCOL_VERSION, 0, 0, 2, 1, b'a'];
        let bad_name = [PROTOCOL_VERSION, 0, 0, 0, 2, b'a', b' '];
        let empty_name = [PROTOCOL_VERSION, 0, 0, 0, 0];
        let long = [vec![PROTOCOL_VERSION, 0, 0, 0, 33], vec![b'a'; 33]].concat();
        for p in [&bad_flag[..], &bad_name[..], &empty_name[..], &long[..]] {
            assert!(matches!(
                Envelope::decode(&plaintext(1, 0, 0, p), MAX_PAYLOAD),
                Err(MessageError::Invalid { .. })
            ));
        }
        let not_utf8 = [1, 0, 0, 0, 0xff, 0xfe];
        assert!(matches!(
            Envelope::decode(&plaintext(5, 0, 0, &not_utf8), MAX_PAYLOAD),
            Err(MessageError::Invalid { .. })
        ));
    }

    #[test]
    fn roles_are_checked() {
        let bad = [
            plaintext(2, FLAG_REQUEST, 1, &[]),
            plaintext(2, 0, 5, &[]),
            plaintext(3, FLAG_REQUEST, 0, &[]),
            plaintext(4, FLAG_RESPONSE, 0, &[]),
            plaintext(3, 0, 9, &[]),
        ];
        for pt in bad {
            assert!(matches!(
                Envelope::decode(&pt, MAX_PAYLOAD),
                Err(MessageError::BadKind { .. })
            ));
        }
        let env = Envelope {
            kind: Kind::Request(0),
            message: Message::Heartbeat,
        };
        assert!(matches!(
            env.encode(MAX_PAYLOAD),
            Err(MessageError::BadKind { .. })
        ));
    }

    #[test]
    fn header_errors_pass_through() {
        let mut pt = plaintext(3, 0, 0, &[]);
        pt[0] = 99;
        assert!(matches!(
            Envelope::decode(&pt, MAX_PAYLOAD),
            Err(MessageError::Frame(FrameError::Version { got: 99, .. }))
        ));
        assert!(matches!(
            Envelope::decode(&[], MAX_PAYLOAD),
            Err(MessageError::Frame(FrameError::ShortHeader { .. }))
        ));
    }

    #[test]
    fn size_limits() {
        let max = Envelope::one_way(Message::Ping {
            payload: vec![0; MAX_PAYLOAD],
        });
        let pt = max.encode(usize::MAX).unwrap();
        assert_eq!(pt.len() + crate::frame::TAG_LEN, 65535);
        assert_eq!(Envelope::decode(&pt, usize::MAX).unwrap(), max);
        let over = Envelope::one_way(Message::App {
            kind: 1,
            payload: vec![0; MAX_PAYLOAD - 1],
        });
        assert!(matches!(
            over.encode(MAX_PAYLOAD),
            Err(MessageError::TooLarge { .. })
        ));
        let small = Envelope::one_way(Message::Ping {
            payload: vec![0; 11],
        });
        assert!(small.encode(10).is_err());
        let pt = small.encode(11).unwrap();
        assert!(Envelope::decode(&pt, 10).is_err());
    }
}
