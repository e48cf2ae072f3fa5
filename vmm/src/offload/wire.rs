//! The syscall router's messages on the wire: the payload of a transport
//! `Message::App { kind: APP_KIND_SYSCALL, payload }` (docs/offload-device.md, section 4 of
//! docs/offload-threads.md), and the 64-byte call record the guest hands its monitor.
//!
//! A 16-byte header, little endian, then the body of the operation:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version (1) |
//! | 1 | 1 | op (1 `CALL`, 2 `RET`) |
//! | 2 | 2 | reserved (0) |
//! | 4 | 4 | reserved (0) |
//! | 8 | 8 | seq: the caller monitor's sequence number of the call |
//! | 16 | 64 | `CALL`: the call record (u32 home node, u32 home tid, u64 nr, u64 args[6]) |
//! | 16 | 16 | `RET`: i32 status (0 or a negative errno ≥ -4095), u32 reserved (0), i64 ret |
//!
//! A `CALL` is 80 bytes, a `RET` 32. Decoding is total: any byte string yields a message or a
//! [`WireError`], never a panic.

use thiserror::Error;

/// The transport `Message::App` kind that carries the syscall router's messages.
pub const APP_KIND_SYSCALL: u16 = 0x0200;
/// The only version this code speaks.
pub const VERSION: u8 = 1;
/// Length of the header before the body.
pub const HEADER_LEN: usize = 16;
/// Length of a call record.
pub const RECORD_LEN: usize = 64;
/// Length of a `CALL` message.
pub const CALL_LEN: usize = HEADER_LEN + RECORD_LEN;
/// Length of a `RET` message.
pub const RET_LEN: usize = HEADER_LEN + 16;
/// The most negative status a `RET` may carry (Linux errnos stop at 4095).
pub const MIN_STATUS: i32 = -4095;

const OP_CALL: u8 = 1;
const OP_RET: u8 = 2;

/// Why a payload is not a valid router message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("payload of {0} bytes is shorter than the header")]
    Short(usize),
    #[error("unknown version {0}")]
    Version(u8),
    #[error("unknown op {0}")]
    Op(u8),
    #[error("reserved header bytes are not 0")]
    Reserved,
    #[error("{op} of {len} bytes, not {want}")]
    Length {
        op: &'static str,
        len: usize,
        want: usize,
    },
    #[error("status {0} is neither 0 nor a negative errno")]
    Status(i32),
    #[error("call record of {0} bytes, not 64")]
    RecordLen(usize),
}

/// One system call as the guest describes it: whose it is and what to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallRecord {
    /// The home node of the calling thread (where the call runs).
    pub home: u32,
    /// The thread's home tid (its executor at home).
    pub tid: u32,
    /// The system call number.
    pub nr: u64,
    /// The six arguments.
    pub args: [u64; 6],
}

impl CallRecord {
    /// The record's 64 bytes.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0..4].copy_from_slice(&self.home.to_le_bytes());
        out[4..8].copy_from_slice(&self.tid.to_le_bytes());
        out[8..16].copy_from_slice(&self.nr.to_le_bytes());
        for (i, a) in self.args.iter().enumerate() {
            out[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        out
    }

    /// A record from exactly 64 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let b: &[u8; RECORD_LEN] = bytes
            .try_into()
            .map_err(|_| WireError::RecordLen(bytes.len()))?;
        let mut args = [0u64; 6];
        for (i, a) in args.iter_mut().enumerate() {
            *a = u64_at(b, 16 + 8 * i);
        }
        Ok(Self {
            home: u32_at(b, 0),
            tid: u32_at(b, 4),
            nr: u64_at(b, 8),
            args,
        })
    }
}

/// A message between two monitors' routers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysMsg {
    /// Run `record` at its home; answer with a `Ret` of the same `seq`.
    Call { seq: u64, record: CallRecord },
    /// The outcome of the call `seq`: `status` 0 and the call's `ret`, or a negative errno
    /// (`-ESRCH` no executor, `-EBUSY` the home's guest is not taking events).
    Ret { seq: u64, status: i32, ret: i64 },
}

impl SysMsg {
    /// The message's sequence number.
    pub fn seq(&self) -> u64 {
        match *self {
            SysMsg::Call { seq, .. } | SysMsg::Ret { seq, .. } => seq,
        }
    }

    /// Its name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            SysMsg::Call { .. } => "CALL",
            SysMsg::Ret { .. } => "RET",
        }
    }

    /// The length of its encoding.
    pub fn encoded_len(&self) -> usize {
        match self {
            SysMsg::Call { .. } => CALL_LEN,
            SysMsg::Ret { .. } => RET_LEN,
        }
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Whether `status` may travel in a `RET`.
pub fn valid_status(status: i32) -> bool {
    (MIN_STATUS..=0).contains(&status)
}

/// Encodes `msg` (a `RET` with an invalid status is the caller's bug; it is sent as is and
/// the peer refuses it).
pub fn encode(msg: &SysMsg) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.encoded_len());
    let op = match msg {
        SysMsg::Call { .. } => OP_CALL,
        SysMsg::Ret { .. } => OP_RET,
    };
    out.extend_from_slice(&[VERSION, op, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&msg.seq().to_le_bytes());
    match *msg {
        SysMsg::Call { record, .. } => out.extend_from_slice(&record.encode()),
        SysMsg::Ret { status, ret, .. } => {
            out.extend_from_slice(&status.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&ret.to_le_bytes());
        }
    }
    out
}

/// Decodes a payload.
pub fn decode(payload: &[u8]) -> Result<SysMsg, WireError> {
    let Some((head, body)) = payload.split_first_chunk::<HEADER_LEN>() else {
        return Err(WireError::Short(payload.len()));
    };
    if head[0] != VERSION {
        return Err(WireError::Version(head[0]));
    }
    if head[2..8].iter().any(|&b| b != 0) {
        return Err(WireError::Reserved);
    }
    let seq = u64_at(head, 8);
    let (name, want) = match head[1] {
        OP_CALL => ("CALL", CALL_LEN),
        OP_RET => ("RET", RET_LEN),
        op => return Err(WireError::Op(op)),
    };
    if payload.len() != want {
        let len = payload.len();
        return Err(WireError::Length {
            op: name,
            len,
            want,
        });
    }
    if head[1] == OP_CALL {
        let record = CallRecord::decode(body)?;
        return Ok(SysMsg::Call { seq, record });
    }
    let status = u32_at(body, 0) as i32;
    if !valid_status(status) {
        return Err(WireError::Status(status));
    }
    if u32_at(body, 4) != 0 {
        return Err(WireError::Reserved);
    }
    let ret = u64_at(body, 8) as i64;
    Ok(SysMsg::Ret { seq, status, ret })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CallRecord {
        CallRecord {
            home: 1,
            tid: 4242,
            nr: 257,
            args: [u64::MAX, 0, 2, 3, 1 << 40, 5],
        }
    }

    fn samples() -> Vec<SysMsg> {
        vec![
            SysMsg::Call {
                seq: 1,
                record: record(),
            },
            SysMsg::Call {
                seq: u64::MAX,
                record: CallRecord::default(),
            },
            SysMsg::Ret {
                seq: 7,
                status: 0,
                ret: -2,
            },
            SysMsg::Ret {
                seq: 8,
                status: -3,
                ret: 0,
            },
            SysMsg::Ret {
                seq: 9,
                status: 0,
                ret: i64::MAX,
            },
        ]
    }

    #[test]
    fn messages_round_trip() {
        for m in samples() {
            let b = encode(&m);
            assert_eq!(b.len(), m.encoded_len(), "{m:?}");
            assert_eq!(decode(&b), Ok(m));
        }
    }

    #[test]
    fn record_round_trips_and_has_the_documented_layout() {
        let r = record();
        let b = r.encode();
        assert_eq!(&b[0..4], &1u32.to_le_bytes());
        assert_eq!(&b[4..8], &4242u32.to_le_bytes());
        assert_eq!(&b[8..16], &257u64.to_le_bytes());
        assert_eq!(&b[56..64], &5u64.to_le_bytes());
        assert_eq!(CallRecord::decode(&b), Ok(r));
        assert_eq!(CallRecord::decode(&b[..63]), Err(WireError::RecordLen(63)));
    }

    #[test]
    fn header_layout_is_the_documented_one() {
        let b = encode(&SysMsg::Ret {
            seq: 0x0102,
            status: -3,
            ret: 9,
        });
        assert_eq!(&b[..8], &[1, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[8..16], &0x0102u64.to_le_bytes());
        assert_eq!(&b[16..20], &(-3i32).to_le_bytes());
        assert_eq!(&b[24..32], &9i64.to_le_bytes());
        assert_eq!(encode(&samples()[0])[1], 1);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let call = encode(&samples()[0]);
        let ret = encode(&samples()[2]);
        assert_eq!(decode(&[]), Err(WireError::Short(0)));
        assert_eq!(decode(&call[..15]), Err(WireError::Short(15)));
        let mut b = call.clone();
        b[0] = 2;
        assert_eq!(decode(&b), Err(WireError::Version(2)));
        let mut b = call.clone();
        b[1] = 3;
        assert_eq!(decode(&b), Err(WireError::Op(3)));
        for i in 2..8 {
            let mut b = call.clone();
            b[i] = 1;
            assert_eq!(decode(&b), Err(WireError::Reserved), "byte {i}");
        }
        assert!(matches!(
            decode(&call[..79]),
            Err(WireError::Length { want: 80, .. })
        ));
        let mut long = ret.clone();
        long.push(0);
        assert!(matches!(
            decode(&long),
            Err(WireError::Length { want: 32, .. })
        ));
        let mut b = ret.clone();
        b[16..20].copy_from_slice(&1i32.to_le_bytes());
        assert_eq!(decode(&b), Err(WireError::Status(1)));
        b[16..20].copy_from_slice(&(-4096i32).to_le_bytes());
        assert_eq!(decode(&b), Err(WireError::Status(-4096)));
        let mut b = ret;
        b[20] = 1;
        assert_eq!(decode(&b), Err(WireError::Reserved));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        // A cheap deterministic fuzz: every length up to 96 with varied contents.
        let mut x: u32 = 0x1234_5678;
        for len in 0..96 {
            for _ in 0..64 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        (x & 0xff) as u8
                    })
                    .collect();
                let _ = decode(&bytes);
                let mut framed = bytes.clone();
                if framed.len() >= 2 {
                    framed[0] = VERSION;
                    framed[1] = (x % 3) as u8;
                    let _ = decode(&framed);
                }
            }
        }
    }
}
