//! Every invocation's id: the client's `X-Request-Id` when it is a sane token, else a new one.
//!
//! New ids are a random 64-bit prefix drawn once per process and a counter, in hex: unique
//! across replicas (by the prefix) and within one (by the counter), and cheap (no syscall
//! per request).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use http::{HeaderMap, HeaderName};

/// The request header (and response header) that carries the id.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest id taken from a client.
const MAX_LEN: usize = 128;

/// Whether a client's id is usable as is: 1 to 128 of `A-Z a-z 0-9 - _ . : /`, so it is
/// safe in a header, a log line, a URL query and a database column.
pub fn is_sane(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'))
}

/// The request's id: its `X-Request-Id` if sane, else a new one.
pub fn from_headers(headers: &HeaderMap) -> Arc<str> {
    match headers.get(&HEADER).and_then(|v| v.to_str().ok()) {
        Some(id) if is_sane(id) => id.into(),
        _ => new(),
    }
}

/// A new id: 24 hex digits.
pub fn new() -> Arc<str> {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        if getrandom::fill(&mut b).is_err() {
            // The process id and the time still tell processes apart.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            return t ^ (u64::from(std::process::id()) << 32);
        }
        u64::from_le_bytes(b)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
    // Hex by hand: `format!` costs more than the rest of the id's work together.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 24];
    for (i, b) in out[..16].iter_mut().enumerate() {
        *b = HEX[((prefix >> (60 - 4 * i)) & 0xf) as usize];
    }
    for (i, b) in out[16..].iter_mut().enumerate() {
        *b = HEX[((n >> (28 - 4 * i)) & 0xf) as usize];
    }
    // Only ASCII hex digits were written.
    std::str::from_utf8(&out).map_or_else(|_| Arc::from("0"), Arc::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_sane_ids_and_replaces_others() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, "abc-123_x.y:z".parse().unwrap());
        assert_eq!(&*from_headers(&h), "abc-123_x.y:z");
        for bad in ["", "has space", "quote\"", &"a".repeat(129), "semi;colon"] {
            assert!(!is_sane(bad), "{bad}");
        }
        h.insert(HEADER, "bad id".parse().unwrap());
        let id = from_headers(&h);
        assert_eq!(id.len(), 24);
        assert!(is_sane(&id));
        assert_ne!(new(), new());
        let (a, b) = (new(), new());
        assert_eq!(a[..16], b[..16], "one prefix per process");
        let (na, nb) = (
            u32::from_str_radix(&a[16..], 16).unwrap(),
            u32::from_str_radix(&b[16..], 16).unwrap(),
        );
        assert_eq!(nb, na + 1, "{a} {b}");
    }
}
