//! The access log: one Combined Log Format line per request, plus the
//! request's duration in seconds and the rank that served it.

use crate::http::date::fmt_clf_date;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// The log target of access lines, so the logger can print them bare.
pub const TARGET: &str = "mpiweb::access";

/// What one access line records.
pub struct Entry<'a> {
    pub peer: SocketAddr,
    /// The request line, or `None` when the head never parsed.
    pub request_line: Option<&'a str>,
    pub status: u16,
    pub bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub duration: Duration,
    pub rank: usize,
}

/// Write `entry` at `info` on the access target.
pub fn access(entry: &Entry<'_>) {
    if log::log_enabled!(target: TARGET, log::Level::Info) {
        log::info!(target: TARGET, "{}", format_entry(entry, SystemTime::now()));
    }
}

/// The line itself (pure, for tests).
pub fn format_entry(e: &Entry<'_>, now: SystemTime) -> String {
    let field = |v: Option<&[u8]>| v.map_or_else(|| "-".to_string(), escape);
    format!(
        "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\" {:.6} rank={}",
        e.peer.ip(),
        fmt_clf_date(now),
        e.request_line
            .map_or_else(|| "-".to_string(), |l| escape(l.as_bytes())),
        e.status,
        e.bytes,
        field(e.referer),
        field(e.user_agent),
        e.duration.as_secs_f64(),
        e.rank
    )
}

/// Quote-safe, control-free text: `"`, `\` and non-printable bytes as `\xHH`.
fn escape(v: &[u8]) -> String {
    let mut out = String::with_capacity(v.len());
    for &b in v {
        match b {
            b'"' | b'\\' | ..=0x1f | 0x7f.. => out.push_str(&format!("\\x{b:02x}")),
            _ => out.push(b as char),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn combined_format_with_rank() {
        let e = Entry {
            peer: "127.0.0.1:5000".parse().unwrap(),
            request_line: Some("GET /a\"b HTTP/1.1"),
            status: 200,
            bytes: 12,
            referer: None,
            user_agent: Some(b"curl/8\x01"),
            duration: Duration::from_micros(1500),
            rank: 0,
        };
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            format_entry(&e, now),
            "127.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"GET /a\\x22b HTTP/1.1\" 200 12 \"-\" \"curl/8\\x01\" 0.001500 rank=0"
        );
    }
}
