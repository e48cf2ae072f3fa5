//! The DSM protocol's messages on the wire: the payload of a transport
//! `Message::App { kind: APP_KIND_DSM, payload }` (docs/dsm.md, "Wire format").
//!
//! A 16-byte header, little endian, then exactly [`PAGE_SIZE`] bytes of page contents for
//! `Data` and nothing for every other message:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version (1) |
//! | 1 | 1 | message type (1 Req, 2 Fetch, 3 Data, 4 Grant, 5 Done, 6 Inval, 7 InvAck, 8 Refuse, 9 Gone) |
//! | 2 | 1 | want (0 read, 1 write; 0 for messages without one) |
//! | 3 | 1 | flags: bit 0 = page data follows (set exactly on Data) |
//! | 4 | 2 | node: the requester of a Fetch, the lost node of a Gone, else 0 |
//! | 6 | 2 | reserved (0) |
//! | 8 | 8 | page number |
//!
//! Decoding is total: any byte string yields a message or a [`WireError`], never a panic.

use thiserror::Error;

use super::protocol::{Msg, PageNo, Want, PAGE_SIZE};

/// The transport `Message::App` kind that carries DSM payloads.
pub const APP_KIND_DSM: u16 = 0x0100;
/// The only version this code speaks.
pub const VERSION: u8 = 1;
/// Length of the header before the page data.
pub const HEADER_LEN: usize = 16;
/// Flag bit: page data follows the header.
pub const FLAG_DATA: u8 = 1;

const T_REQ: u8 = 1;
const T_FETCH: u8 = 2;
const T_DATA: u8 = 3;
const T_GRANT: u8 = 4;
const T_DONE: u8 = 5;
const T_INVAL: u8 = 6;
const T_INV_ACK: u8 = 7;
const T_REFUSE: u8 = 8;
const T_GONE: u8 = 9;

/// Why a payload is not a valid DSM message (or a message cannot be encoded).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("payload of {0} bytes is shorter than the header")]
    Short(usize),
    #[error("unknown version {0}")]
    Version(u8),
    #[error("unknown message type {0}")]
    Type(u8),
    #[error("invalid want {want} for {msg}")]
    Want { msg: &'static str, want: u8 },
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    #[error("node field {node} set on {msg}")]
    Node { msg: &'static str, node: u16 },
    #[error("reserved field is {0:#06x}, not 0")]
    Reserved(u16),
    #[error("{0} without page data")]
    MissingData(&'static str),
    #[error("{0} with page data")]
    UnexpectedData(&'static str),
    #[error("page data of {0} bytes, not 4096")]
    DataLen(usize),
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// A name for a message, for statistics and logs (the same as [`Msg::name`]).
pub fn decode_msg_name(msg: &Msg) -> &'static str {
    msg.name()
}

fn want_byte(want: Want) -> u8 {
    match want {
        Want::Read => 0,
        Want::Write => 1,
    }
}

/// (type, want, node) of a message.
fn fields(msg: &Msg) -> (u8, u8, u16) {
    match *msg {
        Msg::Req { want } => (T_REQ, want_byte(want), 0),
        Msg::Fetch { requester, want } => (T_FETCH, want_byte(want), requester),
        Msg::Data { want } => (T_DATA, want_byte(want), 0),
        Msg::Grant { want } => (T_GRANT, want_byte(want), 0),
        Msg::Done { want } => (T_DONE, want_byte(want), 0),
        Msg::Inval => (T_INVAL, 0, 0),
        Msg::InvAck => (T_INV_ACK, 0, 0),
        Msg::Refuse => (T_REFUSE, 0, 0),
        Msg::Gone { lost } => (T_GONE, 0, lost),
    }
}

/// Encodes `msg` about `page`; `data` must be exactly one page for `Data` and absent otherwise.
pub fn encode(page: PageNo, msg: &Msg, data: Option<&[u8]>) -> Result<Vec<u8>, WireError> {
    let is_data = matches!(msg, Msg::Data { .. });
    match data {
        None if is_data => return Err(WireError::MissingData(msg.name())),
        Some(_) if !is_data => return Err(WireError::UnexpectedData(msg.name())),
        Some(d) if d.len() != PAGE_SIZE => return Err(WireError::DataLen(d.len())),
        _ => {}
    }
    let (ty, want, node) = fields(msg);
    let mut out = Vec::with_capacity(HEADER_LEN + data.map_or(0, <[u8]>::len));
    out.extend_from_slice(&[VERSION, ty, want, if is_data { FLAG_DATA } else { 0 }]);
    out.extend_from_slice(&node.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&page.to_le_bytes());
    if let Some(d) = data {
        out.extend_from_slice(d);
    }
    Ok(out)
}

/// Decodes a payload into (page, message, page data for `Data`).
pub fn decode(payload: &[u8]) -> Result<(PageNo, Msg, Option<&[u8]>), WireError> {
    let Some((head, rest)) = payload.split_first_chunk::<HEADER_LEN>() else {
        return Err(WireError::Short(payload.len()));
    };
    let [version, ty, want, flags, n0, n1, r0, r1, page @ ..] = *head;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    if flags & !FLAG_DATA != 0 {
        return Err(WireError::Flags(flags));
    }
    let reserved = u16::from_le_bytes([r0, r1]);
    if reserved != 0 {
        return Err(WireError::Reserved(reserved));
    }
    let msg = message(ty, want, u16::from_le_bytes([n0, n1]))?;
    let page = PageNo::from_le_bytes(page);
    let is_data = matches!(msg, Msg::Data { .. });
    let flagged = flags & FLAG_DATA != 0;
    if is_data && !flagged {
        return Err(WireError::MissingData(msg.name()));
    }
    if !is_data && flagged {
        return Err(WireError::UnexpectedData(msg.name()));
    }
    if !is_data {
        return match rest.len() {
            0 => Ok((page, msg, None)),
            n => Err(WireError::Trailing(n)),
        };
    }
    match rest.len() {
        n if n < PAGE_SIZE => Err(WireError::DataLen(n)),
        PAGE_SIZE => Ok((page, msg, Some(rest))),
        n => Err(WireError::Trailing(n - PAGE_SIZE)),
    }
}

/// The message for header fields (type, want, node), checking that unused fields are 0.
fn message(ty: u8, want: u8, node: u16) -> Result<Msg, WireError> {
    let msg = match ty {
        T_REQ => Msg::Req { want: Want::Read },
        T_FETCH => Msg::Fetch {
            requester: node,
            want: Want::Read,
        },
        T_DATA => Msg::Data { want: Want::Read },
        T_GRANT => Msg::Grant { want: Want::Read },
        T_DONE => Msg::Done { want: Want::Read },
        T_INVAL => Msg::Inval,
        T_INV_ACK => Msg::InvAck,
        T_REFUSE => Msg::Refuse,
        T_GONE => Msg::Gone { lost: node },
        _ => return Err(WireError::Type(ty)),
    };
    let name = msg.name();
    if node != 0 && !matches!(msg, Msg::Fetch { .. } | Msg::Gone { .. }) {
        return Err(WireError::Node { msg: name, node });
    }
    let w = match want {
        0 => Want::Read,
        1 => Want::Write,
        _ => return Err(WireError::Want { msg: name, want }),
    };
    Ok(match msg {
        Msg::Req { .. } => Msg::Req { want: w },
        Msg::Fetch { requester, .. } => Msg::Fetch { requester, want: w },
        Msg::Data { .. } => Msg::Data { want: w },
        Msg::Grant { .. } => Msg::Grant { want: w },
        Msg::Done { .. } => Msg::Done { want: w },
        other if want == 0 => other,
        _ => return Err(WireError::Want { msg: name, want }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_messages() -> Vec<Msg> {
        let mut v = vec![Msg::Inval, Msg::InvAck, Msg::Refuse, Msg::Gone { lost: 63 }];
        for want in [Want::Read, Want::Write] {
            v.extend([
                Msg::Req { want },
                Msg::Fetch { requester: 7, want },
                Msg::Data { want },
                Msg::Grant { want },
                Msg::Done { want },
            ]);
        }
        v
    }

    fn page_data() -> Vec<u8> {
        (0..PAGE_SIZE).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn encoded(msg: &Msg) -> Vec<u8> {
        let data = page_data();
        let d = matches!(msg, Msg::Data { .. }).then_some(&data[..]);
        encode(0x1234_5678_9abc, msg, d).unwrap()
    }

    #[test]
    fn every_message_round_trips() {
        let data = page_data();
        for msg in all_messages() {
            let bytes = encoded(&msg);
            let (page, back, d) = decode(&bytes).unwrap();
            assert_eq!((page, back), (0x1234_5678_9abc, msg));
            let is_data = matches!(msg, Msg::Data { .. });
            assert_eq!(d, is_data.then_some(&data[..]));
            assert_eq!(
                bytes.len(),
                HEADER_LEN + if is_data { PAGE_SIZE } else { 0 }
            );
            assert_eq!(decode_msg_name(&msg), msg.name());
        }
    }

    #[test]
    fn header_layout_is_little_endian() {
        let msg = Msg::Fetch {
            requester: 0x0102,
            want: Want::Write,
        };
        let bytes = encode(0x0807_0605_0403_0201, &msg, None).unwrap();
        assert_eq!(
            bytes,
            [1, 2, 1, 0, 0x02, 0x01, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        let data = vec![0xaa; PAGE_SIZE];
        let bytes = encode(3, &Msg::Data { want: Want::Read }, Some(&data)).unwrap();
        assert_eq!(bytes[..8], [1, 3, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn encode_checks_the_data() {
        let page = vec![0; PAGE_SIZE];
        let data = Msg::Data { want: Want::Read };
        assert_eq!(encode(0, &data, None), Err(WireError::MissingData("data")));
        assert_eq!(
            encode(0, &data, Some(&page[1..])),
            Err(WireError::DataLen(4095))
        );
        assert_eq!(
            encode(0, &Msg::Inval, Some(&page)),
            Err(WireError::UnexpectedData("inval"))
        );
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        let req = encoded(&Msg::Req { want: Want::Write });
        let data = encoded(&Msg::Data { want: Want::Write });
        let with = |bytes: &[u8], at: usize, v: u8| {
            let mut b = bytes.to_vec();
            b[at] = v;
            b
        };
        assert_eq!(decode(&[]), Err(WireError::Short(0)));
        assert_eq!(decode(&req[..15]), Err(WireError::Short(15)));
        assert_eq!(decode(&with(&req, 0, 2)), Err(WireError::Version(2)));
        assert_eq!(decode(&with(&req, 1, 0)), Err(WireError::Type(0)));
        assert_eq!(decode(&with(&req, 1, 10)), Err(WireError::Type(10)));
        let bad_want = WireError::Want {
            msg: "req",
            want: 2,
        };
        assert_eq!(decode(&with(&req, 2, 2)), Err(bad_want));
        let inval = encoded(&Msg::Inval);
        let bad_want = WireError::Want {
            msg: "inval",
            want: 1,
        };
        assert_eq!(decode(&with(&inval, 2, 1)), Err(bad_want));
        assert_eq!(decode(&with(&req, 3, 2)), Err(WireError::Flags(2)));
        let node = WireError::Node {
            msg: "req",
            node: 5,
        };
        assert_eq!(decode(&with(&req, 4, 5)), Err(node));
        assert_eq!(decode(&with(&req, 7, 1)), Err(WireError::Reserved(0x100)));
        // Data flag and contents.
        assert_eq!(
            decode(&with(&req, 3, 1)),
            Err(WireError::UnexpectedData("req"))
        );
        assert_eq!(
            decode(&with(&data, 3, 0)),
            Err(WireError::MissingData("data"))
        );
        assert_eq!(decode(&data[..HEADER_LEN]), Err(WireError::DataLen(0)));
        assert_eq!(
            decode(&data[..data.len() - 1]),
            Err(WireError::DataLen(4095))
        );
        let mut long = data.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(WireError::Trailing(1)));
        let mut long = req.clone();
        long.extend_from_slice(&[0; 3]);
        assert_eq!(decode(&long), Err(WireError::Trailing(3)));
    }

    /// Every single-byte change of every message's header decodes to an error or to a message
    /// that encodes back to the same bytes; random garbage never panics.
    #[test]
    fn mutations_and_garbage_never_panic() {
        for msg in all_messages() {
            let bytes = encoded(&msg);
            for at in 0..HEADER_LEN {
                for v in 0..=255u8 {
                    let mut b = bytes.clone();
                    b[at] = v;
                    if let Ok((page, m, d)) = decode(&b) {
                        assert_eq!(encode(page, &m, d).unwrap(), b);
                    }
                }
            }
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let b: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8 % 12).collect();
            let _ = decode(&b);
        }
    }
}
