//! Framing: the length-prefixed wire frames and the fixed plaintext header inside them.
//!
//! On the wire every frame is `u16` big-endian length + that many bytes of Noise message
//! (a handshake message, or a ciphertext with its 16-byte tag). [`WireDecoder`] splits a TCP
//! byte stream into those messages incrementally (partial frames across reads are kept).
//! Inside a decrypted transport message sits the plaintext [`Header`] (16 bytes,
//! little-endian) followed by the payload. Everything here is pure: bytes in, values or a
//! [`FrameError`] out, never a panic.

use thiserror::Error;

/// Bytes of the big-endian length prefix in front of every wire frame.
pub const LEN_PREFIX: usize = 2;
/// Largest Noise message (and so largest wire frame body), fixed by the Noise spec.
pub const MAX_NOISE_MESSAGE: usize = 65535;
/// Authentication tag ChaChaPoly appends to every transport message.
pub const TAG_LEN: usize = 16;
/// Bytes of the plaintext header: version u8, type u8, flags u16, request id u64, length u32.
pub const HEADER_LEN: usize = 16;
/// Largest payload a frame can carry: 65535 − 16 (header) − 16 (tag) = 65503.
pub const MAX_PAYLOAD: usize = MAX_NOISE_MESSAGE - HEADER_LEN - TAG_LEN;

/// Header flag: the sender expects a response carrying the same request id.
pub const FLAG_REQUEST: u16 = 0x0001;
/// Header flag: this frame answers the request with the same request id.
pub const FLAG_RESPONSE: u16 = 0x0002;
const KNOWN_FLAGS: u16 = FLAG_REQUEST | FLAG_RESPONSE;

/// Why a frame was refused; any of these closes the connection it arrived on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The length prefix announced a frame longer than this connection accepts.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// The length prefix announced an empty frame.
    #[error("empty frame")]
    Empty,
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    /// A decrypted message is shorter than the plaintext header.
    #[error("plaintext of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    ShortHeader { len: usize },
    /// The header names a protocol version this build does not speak.
    #[error("protocol version {got} not supported (this build speaks {want})")]
    Version { got: u8, want: u8 },
    /// The header sets flag bits this version does not define, or both request and response.
    #[error("invalid header flags {0:#06x}")]
    Flags(u16),
    /// The header's payload length disagrees with the bytes that follow it.
    #[error("header announces {announced} payload bytes, frame holds {actual}")]
    LengthMismatch { announced: u32, actual: usize },
    /// The payload exceeds the configured maximum payload.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge { len: usize, max: usize },
}

/// The fixed plaintext header in front of every payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version of the sender (must equal [`crate::PROTOCOL_VERSION`]).
    pub version: u8,
    /// Message type number (see [`crate::message::MessageType`]).
    pub msg_type: u8,
    /// [`FLAG_REQUEST`], [`FLAG_RESPONSE`] or neither.
    pub flags: u16,
    /// Request id for requests and responses, 0 otherwise.
    pub request_id: u64,
    /// Bytes of payload after the header.
    pub payload_len: u32,
}

impl Header {
    /// Serializes the header (little-endian) into its 16 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.version;
        b[1] = self.msg_type;
        b[2..4].copy_from_slice(&self.flags.to_le_bytes());
        b[4..12].copy_from_slice(&self.request_id.to_le_bytes());
        b[12..16].copy_from_slice(&self.payload_len.to_le_bytes());
        b
    }

    /// Reads the 16 header bytes at the start of `b` without validating them.
    fn from_prefix(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            version: b[0],
            msg_type: b[1],
            flags: u16::from_le_bytes([b[2], b[3]]),
            request_id: u64::from_le_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]),
            payload_len: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }
}

/// Builds a plaintext (header + payload). The caller keeps `payload` within the limit.
pub fn encode_plaintext(header: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a decrypted plaintext into its validated header and payload.
///
/// Checks the version, the flags, that the announced length matches exactly and that the
/// payload is within `max_payload`. The message type is checked by the message parser.
pub fn decode_plaintext(buf: &[u8], max_payload: usize) -> Result<(Header, &[u8]), FrameError> {
    let Some((head, payload)) = buf.split_first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::ShortHeader { len: buf.len() });
    };
    let header = Header::from_prefix(head);
    if header.version != crate::PROTOCOL_VERSION {
        return Err(FrameError::Version {
            got: header.version,
            want: crate::PROTOCOL_VERSION,
        });
    }
    if header.flags & !KNOWN_FLAGS != 0 || header.flags == KNOWN_FLAGS {
        return Err(FrameError::Flags(header.flags));
    }
    if header.payload_len as usize != payload.len() {
        return Err(FrameError::LengthMismatch {
            announced: header.payload_len,
            actual: payload.len(),
        });
    }
    if payload.len() > max_payload {
        return Err(FrameError::PayloadTooLarge {
            len: payload.len(),
            max: max_payload,
        });
    }
    Ok((header, payload))
}

/// Prepends the big-endian length prefix to one Noise message.
///
/// Returns `None` if the message cannot be framed (empty or over 65535 bytes).
pub fn wrap(message: &[u8]) -> Option<Vec<u8>> {
    if message.is_empty() {
        return None;
    }
    let len = u16::try_from(message.len()).ok()?;
    let mut out = Vec::with_capacity(LEN_PREFIX + message.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Some(out)
}

/// Incremental splitter of a byte stream into length-prefixed frames.
///
/// Feed it whatever a read returned with [`push`](Self::push), then take complete frame
/// bodies with [`next_frame`](Self::next_frame) until it returns `Ok(None)`. An oversized
/// length is refused as soon as its prefix arrives, before any body is buffered.
#[derive(Debug)]
pub struct WireDecoder {
    buf: Vec<u8>,
    start: usize,
    max_frame: usize,
}

impl WireDecoder {
    /// A decoder accepting frame bodies of 1 to `max_frame` bytes (capped at 65535).
    pub fn new(max_frame: usize) -> WireDecoder {
        WireDecoder {
            buf: Vec::new(),
            start: 0,
            max_frame: max_frame.min(MAX_NOISE_MESSAGE),
        }
    }

    /// Changes the largest accepted frame body (e.g. once a handshake is over).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame.min(MAX_NOISE_MESSAGE);
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame body, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let pending = &self.buf[self.start..];
        let Some((prefix, rest)) = pending.split_first_chunk::<LEN_PREFIX>() else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes(*prefix));
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        let Some(body) = rest.get(..len) else {
            return Ok(None);
        };
        let body = body.to_vec();
        self.start += LEN_PREFIX + len;
        Ok(Some(body))
    }

    /// Call at end of stream: an error if a partial frame is left over.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTOCOL_VERSION;

    fn header(flags: u16, len: u32) -> Header {
        Header {
            version: PROTOCOL_VERSION,
            msg_type: 3,
            flags,
            request_id: 0x0102_0304_0506_0708,
            payload_len: len,
        }
    }

    #[test]
    fn header_round_trip_and_layout() {
        let h = header(FLAG_REQUEST, 3);
        let b = h.to_bytes();
        assert_eq!(b[0], PROTOCOL_VERSION);
        assert_eq!(b[1], 3);
        assert_eq!(&b[2..4], &[1, 0]);
        assert_eq!(&b[4..12], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[12..16], &[3, 0, 0, 0]);
        let pt = encode_plaintext(&h, b"abc");
        let (h2, payload) = decode_plaintext(&pt, MAX_PAYLOAD).unwrap();
        assert_eq!(h2, h);
        assert_eq!(payload, b"abc");
    }

    #[test]
    fn plaintext_errors() {
        assert_eq!(
            decode_plaintext(&[1; 15], MAX_PAYLOAD),
            Err(FrameError::ShortHeader { len: 15 })
        );
        let mut h = header(0, 0);
        h.version = PROTOCOL_VERSION + 1;
        assert!(matches!(
            decode_plaintext(&encode_plaintext(&h, &[]), MAX_PAYLOAD),
            Err(FrameError::Version { .. })
        ));
        for flags in [4, 0x8000, FLAG_REQUEST | FLAG_RESPONSE] {
            let pt = encode_plaintext(&header(flags, 0), &[]);
            assert_eq!(
                decode_plaintext(&pt, MAX_PAYLOAD),
                Err(FrameError::Flags(flags))
            );
        }
        let pt = encode_plaintext(&header(0, 5), b"abc");
        assert!(matches!(
            decode_plaintext(&pt, MAX_PAYLOAD),
            Err(FrameError::LengthMismatch { .. })
        ));
        let pt = encode_plaintext(&header(0, 2), b"abc");
        assert!(matches!(
            decode_plaintext(&pt, MAX_PAYLOAD),
            Err(FrameError::LengthMismatch { .. })
        ));
        let pt = encode_plaintext(&header(0, 3), b"abc");
        assert_eq!(
            decode_plaintext(&pt, 2),
            Err(FrameError::PayloadTooLarge { len: 3, max: 2 })
        );
    }

    #[test]
    fn wrap_limits() {
        assert_eq!(wrap(b""), None);
        assert_eq!(wrap(&vec![0; MAX_NOISE_MESSAGE + 1]), None);
        let w = wrap(&vec![7; MAX_NOISE_MESSAGE]).unwrap();
        assert_eq!(&w[..2], &[0xff, 0xff]);
        assert_eq!(wrap(b"hi").unwrap(), vec![0, 2, b'h', b'i']);
    }

    #[test]
    fn decoder_reassembles_byte_by_byte() {
        let mut stream = wrap(b"hello").unwrap();
        stream.extend(wrap(&[9; 300]).unwrap());
        let mut d = WireDecoder::new(1000);
        let mut got = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b));
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec![b"hello".to_vec(), vec![9; 300]]);
        assert_eq!(d.buffered(), 0);
        d.finish().unwrap();
    }

    #[test]
    fn decoder_handles_many_frames_in_one_read() {
        let mut stream = Vec::new();
        for i in 0..100u8 {
            stream.extend(wrap(&[i; 10]).unwrap());
        }
        let mut d = WireDecoder::new(100);
        d.push(&stream);
        for i in 0..100u8 {
            assert_eq!(d.next_frame().unwrap(), Some(vec![i; 10]));
        }
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn decoder_rejects_oversized_before_body() {
        let mut d = WireDecoder::new(100);
        d.push(&[0, 101]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
        let mut d = WireDecoder::new(1_000_000);
        d.push(&[0xff, 0xff]);
        assert_eq!(d.next_frame(), Ok(None), "cap is 65535, this is allowed");
    }

    #[test]
    fn decoder_rejects_empty_and_reports_truncation() {
        let mut d = WireDecoder::new(100);
        d.push(&[0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
        let mut d = WireDecoder::new(100);
        d.push(&[0, 5, 1, 2]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated { buffered: 4 }));
        let mut d = WireDecoder::new(100);
        d.push(&[0]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated { buffered: 1 }));
    }

    #[test]
    fn decoder_compacts_its_buffer() {
        let mut d = WireDecoder::new(MAX_NOISE_MESSAGE);
        let frame = wrap(&[1; 40_000]).unwrap();
        for _ in 0..10 {
            d.push(&frame[..100]);
            d.push(&frame[100..]);
            assert_eq!(d.next_frame().unwrap().map(|f| f.len()), Some(40_000));
        }
        assert!(d.buf.capacity() < 200_000);
    }
}
