//! Wire formats of the offload device's queues (docs/offload-device.md): request and response
//! headers, events, and the payloads of each request type. Pure functions over byte slices.

use crate::offload::wire::{self as sys_wire, CallRecord};

/// Device id (private range, above every id the virtio specification assigns).
pub const DEVICE_ID: u32 = 0xff0f;
/// Vendor id: "OFLD" as little-endian bytes.
pub const VENDOR_ID: u32 = 0x444c_464f;
/// Request header length.
pub const REQ_HEADER_LEN: usize = 24;
/// Response header length.
pub const RESP_HEADER_LEN: usize = 16;
/// Event header length.
pub const EVENT_HEADER_LEN: usize = 24;
/// Largest request or event payload.
pub const MAX_PAYLOAD: usize = 4096;
/// Length of a node name field.
pub const NAME_LEN: usize = 16;

pub const REQ_NODE_INFO: u32 = 1;
pub const REQ_PEERS: u32 = 2;
pub const REQ_PING: u32 = 3;
pub const REQ_PONG: u32 = 4;
pub const REQ_WINDOW_INFO: u32 = 5;
pub const REQ_ALLOC: u32 = 6;
pub const REQ_FREE: u32 = 7;
pub const REQ_SYSCALL: u32 = 8;
pub const REQ_SYSCALL_RET: u32 = 9;
pub const REQ_GUEST_MSG: u32 = 10;
pub const REQ_GUEST_MSG_RET: u32 = 11;

pub const EVENT_PING_IN: u32 = 1;
pub const EVENT_PEER_STATE: u32 = 2;
pub const EVENT_PAGES_LOST: u32 = 3;
pub const EVENT_SYSCALL_IN: u32 = 4;
pub const EVENT_GUEST_MSG_IN: u32 = 5;
/// Largest body of a `GUEST_MSG` (after u32 node, u32 kind).
pub const MAX_GUEST_MSG: usize = MAX_PAYLOAD - 8;
/// Largest reply body of a `GUEST_MSG_RET` (after u64 token, i32 status, u32 reserved).
pub const MAX_GUEST_REPLY: usize = MAX_PAYLOAD - 16;
/// Length of a `SYSCALL_RET` payload.
pub const SYSCALL_RET_LEN: usize = 24;
/// Most page offsets in one `PAGES_LOST` event.
pub const MAX_LOST_PER_EVENT: usize = MAX_PAYLOAD / 8;

/// Linux errno values returned to the guest (negated in the status field).
pub mod errno {
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const ENOMEM: i32 = 12;
    pub const ENODEV: i32 = 19;
    pub const EBUSY: i32 = 16;
    pub const EINVAL: i32 = 22;
    pub const EMSGSIZE: i32 = 90;
    pub const ECONNRESET: i32 = 104;
    pub const ENOTCONN: i32 = 107;
    pub const ETIMEDOUT: i32 = 110;
    pub const EHOSTUNREACH: i32 = 113;
}

/// Peer states as reported to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Down = 0,
    Up = 1,
    Lost = 2,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    NodeInfo,
    Peers,
    Ping {
        node: u32,
        payload: Vec<u8>,
    },
    Pong {
        token: u64,
        payload: Vec<u8>,
    },
    WindowInfo,
    Alloc {
        pages: u64,
    },
    Free {
        offset: u64,
        pages: u64,
    },
    Syscall {
        record: CallRecord,
    },
    SyscallRet {
        token: u64,
        status: i32,
        ret: i64,
    },
    GuestMsg {
        node: u32,
        kind: u32,
        body: Vec<u8>,
    },
    GuestMsgRet {
        token: u64,
        status: i32,
        body: Vec<u8>,
    },
}

/// Why a request was refused (mapped to an errno for the guest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request shorter than its header ({0} bytes)")]
    Short(usize),
    #[error("payload length {declared} disagrees with the {actual} bytes supplied")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("payload of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("unknown request type {0}")]
    UnknownType(u32),
    #[error("malformed payload for request type {0}")]
    BadPayload(u32),
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Parses a request from the device-readable bytes of a chain; returns the guest's tag too (0
/// if even the header is missing).
pub fn parse_request(bytes: &[u8]) -> (u64, Result<Request, RequestError>) {
    if bytes.len() < REQ_HEADER_LEN {
        return (0, Err(RequestError::Short(bytes.len())));
    }
    let kind = u32_at(bytes, 0);
    let tag = u64_at(bytes, 8);
    let declared = u32_at(bytes, 16) as usize;
    let payload = &bytes[REQ_HEADER_LEN..];
    if declared > MAX_PAYLOAD {
        return (tag, Err(RequestError::TooLarge(declared)));
    }
    if declared != payload.len() {
        let actual = payload.len();
        return (tag, Err(RequestError::LengthMismatch { declared, actual }));
    }
    let req = match kind {
        REQ_NODE_INFO if payload.is_empty() => Ok(Request::NodeInfo),
        REQ_PEERS if payload.is_empty() => Ok(Request::Peers),
        REQ_PING if payload.len() >= 4 => Ok(Request::Ping {
            node: u32_at(payload, 0),
            payload: payload[4..].to_vec(),
        }),
        REQ_PONG if payload.len() >= 8 => Ok(Request::Pong {
            token: u64_at(payload, 0),
            payload: payload[8..].to_vec(),
        }),
        REQ_WINDOW_INFO if payload.is_empty() => Ok(Request::WindowInfo),
        REQ_ALLOC if payload.len() == 8 => Ok(Request::Alloc {
            pages: u64_at(payload, 0),
        }),
        REQ_FREE if payload.len() == 16 => Ok(Request::Free {
            offset: u64_at(payload, 0),
            pages: u64_at(payload, 8),
        }),
        REQ_SYSCALL => CallRecord::decode(payload)
            .map(|record| Request::Syscall { record })
            .map_err(|_| RequestError::BadPayload(kind)),
        REQ_SYSCALL_RET => parse_syscall_ret(payload).ok_or(RequestError::BadPayload(kind)),
        REQ_GUEST_MSG if payload.len() >= 8 => Ok(Request::GuestMsg {
            node: u32_at(payload, 0),
            kind: u32_at(payload, 4),
            body: payload[8..].to_vec(),
        }),
        REQ_GUEST_MSG_RET => parse_guest_msg_ret(payload).ok_or(RequestError::BadPayload(kind)),
        REQ_NODE_INFO | REQ_PEERS | REQ_PING | REQ_PONG | REQ_WINDOW_INFO | REQ_ALLOC
        | REQ_FREE | REQ_GUEST_MSG => Err(RequestError::BadPayload(kind)),
        other => Err(RequestError::UnknownType(other)),
    };
    (tag, req)
}

/// `SYSCALL_RET`: u64 token, i32 status (0 or a negative errno), u32 reserved (0), i64 ret.
fn parse_syscall_ret(payload: &[u8]) -> Option<Request> {
    if payload.len() != SYSCALL_RET_LEN || u32_at(payload, 12) != 0 {
        return None;
    }
    let status = u32_at(payload, 8) as i32;
    sys_wire::valid_status(status).then(|| Request::SyscallRet {
        token: u64_at(payload, 0),
        status,
        ret: u64_at(payload, 16) as i64,
    })
}

/// `GUEST_MSG_RET`: u64 token, i32 status (0 or a negative errno), u32 reserved (0), body.
fn parse_guest_msg_ret(payload: &[u8]) -> Option<Request> {
    if payload.len() < 16 || u32_at(payload, 12) != 0 {
        return None;
    }
    let status = u32_at(payload, 8) as i32;
    sys_wire::valid_status(status).then(|| Request::GuestMsgRet {
        token: u64_at(payload, 0),
        status,
        body: payload[16..].to_vec(),
    })
}

/// A response: header (status, payload length, tag) followed by the payload.
pub fn encode_response(status: i32, tag: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RESP_HEADER_LEN + payload.len());
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// An event: header (type, source node, token, payload length) followed by the payload.
pub fn encode_event(kind: u32, src_node: u32, token: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(EVENT_HEADER_LEN + payload.len());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&src_node.to_le_bytes());
    out.extend_from_slice(&token.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A node name as a NUL-padded fixed field (longer names are cut).
pub fn name_field(name: &str) -> [u8; NAME_LEN] {
    let mut f = [0u8; NAME_LEN];
    let n = name.len().min(NAME_LEN);
    f[..n].copy_from_slice(&name.as_bytes()[..n]);
    f
}

/// `NODE_INFO` response payload.
pub fn encode_node_info(index: u32, num_nodes: u32, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + NAME_LEN);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&num_nodes.to_le_bytes());
    out.extend_from_slice(&name_field(name));
    out
}

/// One 32-byte entry of the `PEERS` response.
pub fn encode_peer(index: u32, state: PeerState, name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&(state as u32).to_le_bytes());
    out.extend_from_slice(&name_field(name));
    out.extend_from_slice(&0u64.to_le_bytes());
    out
}

/// The window as `WINDOW_INFO` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowInfo {
    pub base: u64,
    pub size: u64,
    pub slice_offset: u64,
    pub slice_len: u64,
    pub node_index: u32,
}

/// `WINDOW_INFO` response payload (40 bytes).
pub fn encode_window_info(w: &WindowInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    for v in [w.base, w.size, w.slice_offset, w.slice_len] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&4096u32.to_le_bytes());
    out.extend_from_slice(&w.node_index.to_le_bytes());
    out
}

/// A request as the guest driver builds it (header, then payload); for tests.
#[cfg(test)]
pub(crate) fn encode_request(kind: u32, tag: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(REQ_HEADER_LEN + payload.len());
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&tag.to_le_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(payload);
    b
}

#[cfg(test)]
mod tests {
    use super::encode_request as req;
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(
            parse_request(&req(REQ_NODE_INFO, 7, &[])),
            (7, Ok(Request::NodeInfo))
        );
        let mut p = 1u32.to_le_bytes().to_vec();
        p.extend_from_slice(b"abc");
        assert_eq!(
            parse_request(&req(REQ_PING, 9, &p)),
            (
                9,
                Ok(Request::Ping {
                    node: 1,
                    payload: b"abc".to_vec()
                })
            )
        );
        let mut p = 5u64.to_le_bytes().to_vec();
        p.push(1);
        assert_eq!(
            parse_request(&req(REQ_PONG, 1, &p)),
            (
                1,
                Ok(Request::Pong {
                    token: 5,
                    payload: vec![1]
                })
            )
        );
    }

    #[test]
    fn malformed_requests_are_refused() {
        assert_eq!(parse_request(&[0; 10]).1, Err(RequestError::Short(10)));
        assert_eq!(
            parse_request(&req(99, 1, &[])).1,
            Err(RequestError::UnknownType(99))
        );
        assert_eq!(
            parse_request(&req(REQ_PING, 1, &[1, 2])).1,
            Err(RequestError::BadPayload(REQ_PING))
        );
        assert_eq!(
            parse_request(&req(REQ_PEERS, 1, &[1])).1,
            Err(RequestError::BadPayload(REQ_PEERS))
        );
        let mut r = req(REQ_NODE_INFO, 1, &[]);
        r[16] = 4; // declares 4 payload bytes, supplies none
        assert!(matches!(
            parse_request(&r).1,
            Err(RequestError::LengthMismatch { .. })
        ));
        r[16..20].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert!(matches!(
            parse_request(&r).1,
            Err(RequestError::TooLarge(_))
        ));
    }

    #[test]
    fn encodings_have_documented_sizes() {
        assert_eq!(encode_response(-22, 3, b"xy").len(), RESP_HEADER_LEN + 2);
        assert_eq!(
            encode_event(EVENT_PING_IN, 1, 2, b"z").len(),
            EVENT_HEADER_LEN + 1
        );
        assert_eq!(encode_node_info(0, 2, "a").len(), 24);
        assert_eq!(
            encode_peer(1, PeerState::Up, "a-very-long-node-name").len(),
            32
        );
        assert_eq!(&name_field("abc")[..4], b"abc\0");
        let w = WindowInfo {
            base: 1,
            size: 2,
            slice_offset: 3,
            slice_len: 4,
            node_index: 5,
        };
        assert_eq!(encode_window_info(&w).len(), 40);
    }

    #[test]
    fn syscall_requests_parse() {
        let record = CallRecord {
            home: 1,
            tid: 77,
            nr: 0,
            args: [3, 0x7000, 16, 0, 0, 0],
        };
        assert_eq!(
            parse_request(&req(REQ_SYSCALL, 4, &record.encode())),
            (4, Ok(Request::Syscall { record }))
        );
        let ret_payload = |token: u64, status: i32, reserved: u32, ret: i64| {
            let mut p = token.to_le_bytes().to_vec();
            p.extend_from_slice(&status.to_le_bytes());
            p.extend_from_slice(&reserved.to_le_bytes());
            p.extend_from_slice(&ret.to_le_bytes());
            p
        };
        assert_eq!(
            parse_request(&req(REQ_SYSCALL_RET, 5, &ret_payload(9, 0, 0, -11))).1,
            Ok(Request::SyscallRet {
                token: 9,
                status: 0,
                ret: -11
            })
        );
        assert_eq!(
            parse_request(&req(REQ_SYSCALL_RET, 5, &ret_payload(9, -3, 0, 0))).1,
            Ok(Request::SyscallRet {
                token: 9,
                status: -errno::ESRCH,
                ret: 0
            })
        );
        for bad in [
            ret_payload(9, 1, 0, 0),
            ret_payload(9, -4096, 0, 0),
            ret_payload(9, 0, 1, 0),
            ret_payload(9, 0, 0, 0)[..23].to_vec(),
        ] {
            assert_eq!(
                parse_request(&req(REQ_SYSCALL_RET, 1, &bad)).1,
                Err(RequestError::BadPayload(REQ_SYSCALL_RET))
            );
        }
        assert_eq!(
            parse_request(&req(REQ_SYSCALL, 1, &[0; 65])).1,
            Err(RequestError::BadPayload(REQ_SYSCALL))
        );
        assert_eq!(
            parse_request(&req(REQ_SYSCALL, 1, &[])).1,
            Err(RequestError::BadPayload(REQ_SYSCALL))
        );
    }

    #[test]
    fn guest_message_requests_parse() {
        let mut msg = 1u32.to_le_bytes().to_vec();
        msg.extend_from_slice(&7u32.to_le_bytes());
        msg.extend_from_slice(b"body");
        assert_eq!(
            parse_request(&req(REQ_GUEST_MSG, 3, &msg)).1,
            Ok(Request::GuestMsg {
                node: 1,
                kind: 7,
                body: b"body".to_vec()
            })
        );
        assert_eq!(
            parse_request(&req(REQ_GUEST_MSG, 3, &msg[..7])).1,
            Err(RequestError::BadPayload(REQ_GUEST_MSG))
        );
        let ret = |status: i32, reserved: u32| {
            let mut p = 5u64.to_le_bytes().to_vec();
            p.extend_from_slice(&status.to_le_bytes());
            p.extend_from_slice(&reserved.to_le_bytes());
            p.extend_from_slice(b"re");
            p
        };
        assert_eq!(
            parse_request(&req(REQ_GUEST_MSG_RET, 4, &ret(-3, 0))).1,
            Ok(Request::GuestMsgRet {
                token: 5,
                status: -3,
                body: b"re".to_vec()
            })
        );
        for bad in [ret(1, 0), ret(0, 9), ret(0, 0)[..15].to_vec()] {
            assert_eq!(
                parse_request(&req(REQ_GUEST_MSG_RET, 4, &bad)).1,
                Err(RequestError::BadPayload(REQ_GUEST_MSG_RET))
            );
        }
    }

    #[test]
    fn window_requests_parse() {
        assert_eq!(
            parse_request(&req(REQ_WINDOW_INFO, 1, &[])).1,
            Ok(Request::WindowInfo)
        );
        assert_eq!(
            parse_request(&req(REQ_ALLOC, 1, &3u64.to_le_bytes())).1,
            Ok(Request::Alloc { pages: 3 })
        );
        let mut p = 4096u64.to_le_bytes().to_vec();
        p.extend_from_slice(&2u64.to_le_bytes());
        assert_eq!(
            parse_request(&req(REQ_FREE, 1, &p)).1,
            Ok(Request::Free {
                offset: 4096,
                pages: 2
            })
        );
        assert_eq!(
            parse_request(&req(REQ_ALLOC, 1, &[1, 2])).1,
            Err(RequestError::BadPayload(REQ_ALLOC))
        );
        assert_eq!(
            parse_request(&req(REQ_FREE, 1, &[0; 8])).1,
            Err(RequestError::BadPayload(REQ_FREE))
        );
    }
}
