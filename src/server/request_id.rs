//! `X-Request-Id`: the client's, when it is a sensible token, or a new
//! one; sent upstream, logged and returned on the response.

use crate::hash::hash64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest request id taken from a client.
pub const MAX_LEN: usize = 128;

/// The id a request goes by: the client's `X-Request-Id` if it is 1 to
/// `MAX_LEN` visible ASCII characters without quotes or backslashes (it
/// goes into logs and headers as it is), else a new one.
pub fn for_request(given: Option<&[u8]>) -> String {
    match given {
        Some(v) if acceptable(v) => String::from_utf8_lossy(v).into_owned(),
        _ => fresh(),
    }
}

fn acceptable(v: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&v.len())
        && v.iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// 16 hex digits, different for every request of this process and,
/// through the process id and start time, of other processes too.
pub fn fresh() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        hash64(&[&std::process::id().to_le_bytes(), &nanos.to_le_bytes()])
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", hash64(&[&seed.to_le_bytes(), &n.to_le_bytes()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensible_ids_pass_through_and_others_are_replaced() {
        assert_eq!(for_request(Some(b"abc-123")), "abc-123");
        let long = vec![b'a'; MAX_LEN];
        assert_eq!(for_request(Some(&long)).len(), MAX_LEN);
        for bad in [
            &b""[..],
            b"a b",
            b"a\"b",
            b"a\\b",
            b"caf\xc3\xa9",
            &[b'a'; MAX_LEN + 1],
        ] {
            let id = for_request(Some(bad));
            assert_eq!(id.len(), 16, "{bad:?}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        let (a, b) = (fresh(), fresh());
        assert_ne!(a, b);
    }
}
