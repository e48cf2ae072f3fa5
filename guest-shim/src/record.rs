//! The spawn record (docs/offload-threads.md, "The spawn record"): what a home writes into
//! the window for `OFFLOAD_IOC_SPAWN` and `offload shadow` reads on the target node. Little
//! endian, a 64-byte header, then the program's path and the environment as NUL-terminated
//! strings; the layout list (`maps`) and the thread context (`ctx`) are the shim's business
//! and are only bounds-checked here. Encoding and decoding are pure functions over bytes.

/// `"OFSP"` read as a little-endian u32.
pub const MAGIC: u32 = 0x5053_464f;
/// The record version this command writes and reads.
pub const VERSION: u32 = 1;
/// Bytes of the header (the smallest `hdr_len`).
pub const HEADER_LEN: usize = 64;
/// Largest record `offload shadow` accepts (the environment of a program fits easily).
pub const MAX_RECORD: u64 = 16 << 20;
/// Most environment strings a record may carry.
pub const MAX_ENV: u32 = 1 << 16;

/// What `offload shadow` needs of a record: the program and its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The program's path (absolute, without the NUL).
    pub exe: Vec<u8>,
    /// `NAME=value` strings, in record order, without their NULs.
    pub env: Vec<Vec<u8>>,
}

/// Why a record was refused (the message names the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spawn record: {0}")]
pub struct RecordError(pub String);

fn bad(msg: impl Into<String>) -> RecordError {
    RecordError(msg.into())
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Encodes a record with no maps and no context (what `offload spawn` writes).
pub fn encode(exe: &[u8], env: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    let exe_off = HEADER_LEN as u64;
    body.extend_from_slice(exe);
    body.push(0);
    let env_off = HEADER_LEN as u64 + body.len() as u64;
    for e in env {
        body.extend_from_slice(e);
        body.push(0);
    }
    let total = (HEADER_LEN + body.len()) as u64;
    let mut rec = Vec::with_capacity(total as usize);
    for w in [MAGIC, VERSION, HEADER_LEN as u32, env.len() as u32] {
        rec.extend_from_slice(&w.to_le_bytes());
    }
    for w in [total, exe_off, env_off, 0] {
        rec.extend_from_slice(&w.to_le_bytes());
    }
    rec.extend_from_slice(&0u32.to_le_bytes()); // n_maps
    rec.extend_from_slice(&0u32.to_le_bytes()); // reserved
    rec.extend_from_slice(&0u64.to_le_bytes()); // ctx_off
    rec.extend_from_slice(&body);
    rec
}

/// The NUL-terminated string at `off` of `rec` (without its NUL), if it ends inside `rec`.
fn cstr_at(rec: &[u8], off: usize, what: &str) -> Result<(Vec<u8>, usize), RecordError> {
    let tail = rec
        .get(off..)
        .ok_or_else(|| bad(format!("{what} at {off} is outside the record")))?;
    let n = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| bad(format!("{what} at {off} is not NUL-terminated")))?;
    Ok((tail[..n].to_vec(), off + n + 1))
}

/// Checks the fixed header against `len`, the bytes mapped; returns (hdr_len, total_len).
fn check_header(b: &[u8]) -> Result<(usize, usize), RecordError> {
    if b.len() < HEADER_LEN {
        return Err(bad(format!("{} bytes: shorter than the header", b.len())));
    }
    let magic = u32_at(b, 0);
    if magic != MAGIC {
        return Err(bad(format!("bad magic {magic:#x}")));
    }
    let version = u32_at(b, 4);
    if version != VERSION {
        return Err(bad(format!("version {version}, expected {VERSION}")));
    }
    let (hdr, total) = (u32_at(b, 8) as u64, u64_at(b, 16));
    if hdr < HEADER_LEN as u64 || hdr > total {
        return Err(bad(format!("hdr_len {hdr} with total_len {total}")));
    }
    if total > b.len() as u64 {
        return Err(bad(format!("total_len {total} beyond rec_len {}", b.len())));
    }
    Ok((hdr as usize, total as usize))
}

/// Checks that an offset field lies in `[hdr, total]`.
fn check_off(name: &str, off: u64, hdr: usize, total: usize) -> Result<usize, RecordError> {
    if off < hdr as u64 || off > total as u64 {
        return Err(bad(format!("{name} {off} outside [{hdr}, {total}]")));
    }
    Ok(off as usize)
}

/// Decodes and checks the record in `b` (the `rec_len` bytes mapped from the window).
pub fn decode(b: &[u8]) -> Result<Record, RecordError> {
    let (hdr, total) = check_header(b)?;
    let rec = &b[..total];
    let exe_off = check_off("exe_off", u64_at(b, 24), hdr, total)?;
    let env_off = check_off("env_off", u64_at(b, 32), hdr, total)?;
    let (maps_off, n_maps, ctx_off) = (u64_at(b, 40), u32_at(b, 48), u64_at(b, 56));
    if n_maps > 0 {
        check_off("maps_off", maps_off, hdr, total)?;
    }
    if ctx_off != 0 {
        check_off("ctx_off", ctx_off, hdr, total)?;
    }
    let (exe, _) = cstr_at(rec, exe_off, "exe")?;
    if exe.first() != Some(&b'/') {
        return Err(bad("exe is not an absolute path"));
    }
    let n_env = u32_at(b, 12);
    if n_env > MAX_ENV {
        return Err(bad(format!("n_env {n_env} above {MAX_ENV}")));
    }
    let mut env = Vec::with_capacity(n_env as usize);
    let mut at = env_off;
    for i in 0..n_env {
        let (e, next) = cstr_at(rec, at, &format!("env[{i}]"))?;
        if e.iter().position(|&c| c == b'=').unwrap_or(0) == 0 {
            return Err(bad(format!("env[{i}] is not NAME=value")));
        }
        env.push(e);
        at = next;
    }
    Ok(Record { exe, env })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode(b"/bin/sh", &[b"A=1".to_vec(), b"PATH=/bin".to_vec()])
    }

    #[test]
    fn encode_then_decode_gives_the_same_program_and_environment() {
        let rec = sample();
        assert_eq!(&rec[..4], b"OFSP");
        assert_eq!(u64_at(&rec, 16), rec.len() as u64);
        let r = decode(&rec).unwrap();
        assert_eq!(r.exe, b"/bin/sh");
        assert_eq!(r.env, vec![b"A=1".to_vec(), b"PATH=/bin".to_vec()]);
        // Padding after total_len (the rest of the page) is ignored.
        let mut padded = rec.clone();
        padded.resize(4096, 0xaa);
        assert_eq!(decode(&padded).unwrap(), r);
        assert_eq!(decode(&encode(b"/x", &[])).unwrap().env.len(), 0);
    }

    fn refused(rec: &[u8]) -> String {
        decode(rec).unwrap_err().to_string()
    }

    fn with(mut rec: Vec<u8>, off: usize, bytes: &[u8]) -> Vec<u8> {
        rec[off..off + bytes.len()].copy_from_slice(bytes);
        rec
    }

    #[test]
    fn inconsistent_records_are_refused_with_the_field_named() {
        let rec = sample();
        assert!(refused(&rec[..10]).contains("shorter than the header"));
        assert!(refused(&with(rec.clone(), 0, b"XXXX")).contains("bad magic"));
        assert!(refused(&with(rec.clone(), 4, &2u32.to_le_bytes())).contains("version 2"));
        assert!(refused(&with(rec.clone(), 8, &8u32.to_le_bytes())).contains("hdr_len"));
        assert!(refused(&rec[..rec.len() - 1]).contains("beyond rec_len"));
        assert!(refused(&with(rec.clone(), 24, &9999u64.to_le_bytes())).contains("exe_off"));
        assert!(refused(&with(rec.clone(), 32, &3u64.to_le_bytes())).contains("env_off"));
        assert!(refused(&with(rec.clone(), 12, &3u32.to_le_bytes())).contains("env[2]"));
        assert!(refused(&with(rec.clone(), 12, &u32::MAX.to_le_bytes())).contains("n_env"));
        assert!(refused(&with(rec.clone(), 48, &1u32.to_le_bytes())).contains("maps_off"));
        assert!(refused(&with(rec.clone(), 56, &1u64.to_le_bytes())).contains("ctx_off"));
        assert!(refused(&encode(b"sh", &[])).contains("absolute"));
        assert!(refused(&encode(b"/sh", &[b"=x".to_vec()])).contains("NAME=value"));
        // The last string runs into the end of the record.
        let mut cut = sample();
        let n = cut.len();
        cut[n - 1] = b'x';
        assert!(refused(&cut).contains("not NUL-terminated"));
    }
}
