//! Conditional requests (RFC 9110 §13) and byte ranges (§14): pure
//! decisions on a file's validators and the request's headers.

use crate::http::date::parse_http_date;
use crate::http::list_items;
use std::time::SystemTime;

/// A file's validators. `modified` is truncated to whole seconds, the
/// precision of HTTP dates.
#[derive(Debug, Clone)]
pub struct Validators {
    pub etag: String,
    pub modified: SystemTime,
}

/// The conditional headers of a request, as sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Conditions<'a> {
    pub if_match: Option<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a str>,
    pub if_unmodified_since: Option<&'a str>,
}

/// What the preconditions decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Proceed,
    NotModified,
    PreconditionFailed,
}

/// Evaluate the preconditions in the order of RFC 9110 §13.2.2 for a GET
/// or HEAD (`safe`) or another method.
pub fn evaluate(c: &Conditions<'_>, v: &Validators, safe: bool) -> Outcome {
    if let Some(im) = c.if_match {
        if !etag_list_matches(im, &v.etag, true) {
            return Outcome::PreconditionFailed;
        }
    } else if let Some(since) = c.if_unmodified_since.and_then(parse_http_date) {
        if v.modified > since {
            return Outcome::PreconditionFailed;
        }
    }
    if let Some(inm) = c.if_none_match {
        if etag_list_matches(inm, &v.etag, false) {
            return if safe {
                Outcome::NotModified
            } else {
                Outcome::PreconditionFailed
            };
        }
    } else if let Some(since) = c
        .if_modified_since
        .filter(|_| safe)
        .and_then(parse_http_date)
    {
        if v.modified <= since {
            return Outcome::NotModified;
        }
    }
    Outcome::Proceed
}

/// Whether a list of entity-tags (or `*`) matches `etag`, comparing
/// strongly (If-Match, If-Range) or weakly (If-None-Match), §8.8.3.2.
pub fn etag_list_matches(list: &[u8], etag: &str, strong: bool) -> bool {
    if crate::http::trim_ows(list) == b"*" {
        return true;
    }
    list_items(list).any(|tag| {
        let (weak, opaque) = match tag.strip_prefix(b"W/") {
            Some(rest) => (true, rest),
            None => (false, tag),
        };
        let ours = etag.trim_start_matches("W/").as_bytes();
        opaque == ours && !(strong && (weak || etag.starts_with("W/")))
    })
}

/// Whether an `If-Range` value lets a range request proceed (§13.1.5): a
/// strong match of the entity-tag, or a date equal to Last-Modified.
pub fn if_range_holds(value: &str, v: &Validators) -> bool {
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return etag_list_matches(value.as_bytes(), &v.etag, true) && !value.contains(',');
    }
    parse_http_date(value) == Some(v.modified)
}

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAsk {
    /// No usable range: send the whole representation (200).
    Whole,
    /// Bytes `start..=end` (206).
    Part { start: u64, end: u64 },
    /// Nothing of it lies within the representation (416).
    Unsatisfiable,
}

/// Parse `Range: bytes=...` (§14.2). One range or a suffix is honoured;
/// several ranges, another unit or bad syntax are ignored (200), which a
/// server may do.
pub fn parse_range(value: &str, len: u64) -> RangeAsk {
    let Some((unit, set)) = value.trim().split_once('=') else {
        return RangeAsk::Whole;
    };
    if !unit.eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Past u64 is past any file: saturate rather than reject.
        Some(s.parse().unwrap_or(u64::MAX))
    };
    match (first.is_empty(), num(first), num(last)) {
        // suffix-range: the last N bytes
        (true, _, Some(n)) if n == 0 || len == 0 => RangeAsk::Unsatisfiable,
        (true, _, Some(n)) => RangeAsk::Part {
            start: len - n.min(len),
            end: len - 1,
        },
        (false, Some(start), None) if last.is_empty() => open_range(start, u64::MAX, len),
        (false, Some(start), Some(end)) if start <= end => open_range(start, end, len),
        _ => RangeAsk::Whole,
    }
}

fn open_range(start: u64, end: u64, len: u64) -> RangeAsk {
    if start >= len {
        return RangeAsk::Unsatisfiable;
    }
    RangeAsk::Part {
        start,
        end: end.min(len - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn range_table() {
        use RangeAsk::*;
        let cases: &[(&str, u64, RangeAsk)] = &[
            ("bytes=0-9", 100, Part { start: 0, end: 9 }),
            ("bytes=90-", 100, Part { start: 90, end: 99 }),
            ("bytes=90-200", 100, Part { start: 90, end: 99 }),
            ("bytes=-10", 100, Part { start: 90, end: 99 }),
            ("bytes=-1000", 100, Part { start: 0, end: 99 }),
            ("Bytes = 5-5 ", 100, Whole),
            ("BYTES=5-5", 100, Part { start: 5, end: 5 }),
            ("bytes=100-", 100, Unsatisfiable),
            ("bytes=100-200", 100, Unsatisfiable),
            ("bytes=-0", 100, Unsatisfiable),
            ("bytes=-5", 0, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=5-1", 100, Whole),
            ("bytes=0-1,5-6", 100, Whole),
            ("bytes=a-b", 100, Whole),
            ("bytes=-", 100, Whole),
            ("bytes=+1-2", 100, Whole),
            ("items=0-1", 100, Whole),
            ("bytes 0-1", 100, Whole),
            (
                "bytes=4294967296-",
                5_000_000_000,
                Part {
                    start: 4_294_967_296,
                    end: 4_999_999_999,
                },
            ),
            ("bytes=99999999999999999999999-", 100, Unsatisfiable),
        ];
        for (value, len, want) in cases {
            assert_eq!(parse_range(value, *len), *want, "{value} of {len}");
        }
    }

    fn validators() -> Validators {
        Validators {
            etag: "\"abc\"".into(),
            modified: UNIX_EPOCH + Duration::from_secs(784_111_777),
        }
    }

    #[test]
    fn conditions_table() {
        use Outcome::*;
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let earlier = "Sun, 06 Nov 1994 08:49:36 GMT";
        let none = Conditions::default();
        let cases: Vec<(Conditions, bool, Outcome)> = vec![
            (none, true, Proceed),
            (
                Conditions {
                    if_none_match: Some(b"\"abc\""),
                    ..none
                },
                true,
                NotModified,
            ),
            (
                Conditions {
                    if_none_match: Some(b"W/\"abc\""),
                    ..none
                },
                true,
                NotModified,
            ),
            (
                Conditions {
                    if_none_match: Some(b"\"x\", \"abc\""),
                    ..none
                },
                true,
                NotModified,
            ),
            (
                Conditions {
                    if_none_match: Some(b"*"),
                    ..none
                },
                true,
                NotModified,
            ),
            (
                Conditions {
                    if_none_match: Some(b"\"x\""),
                    ..none
                },
                true,
                Proceed,
            ),
            (
                Conditions {
                    if_none_match: Some(b"\"abc\""),
                    ..none
                },
                false,
                PreconditionFailed,
            ),
            (
                Conditions {
                    if_modified_since: Some(date),
                    ..none
                },
                true,
                NotModified,
            ),
            (
                Conditions {
                    if_modified_since: Some(earlier),
                    ..none
                },
                true,
                Proceed,
            ),
            (
                Conditions {
                    if_modified_since: Some("garbage"),
                    ..none
                },
                true,
                Proceed,
            ),
            // If-None-Match wins over If-Modified-Since
            (
                Conditions {
                    if_none_match: Some(b"\"x\""),
                    if_modified_since: Some(date),
                    ..none
                },
                true,
                Proceed,
            ),
            (
                Conditions {
                    if_match: Some(b"\"abc\""),
                    ..none
                },
                true,
                Proceed,
            ),
            (
                Conditions {
                    if_match: Some(b"W/\"abc\""),
                    ..none
                },
                true,
                PreconditionFailed,
            ),
            (
                Conditions {
                    if_match: Some(b"\"x\""),
                    ..none
                },
                true,
                PreconditionFailed,
            ),
            (
                Conditions {
                    if_unmodified_since: Some(earlier),
                    ..none
                },
                true,
                PreconditionFailed,
            ),
            (
                Conditions {
                    if_unmodified_since: Some(date),
                    ..none
                },
                true,
                Proceed,
            ),
        ];
        for (i, (c, safe, want)) in cases.iter().enumerate() {
            assert_eq!(evaluate(c, &validators(), *safe), *want, "case {i}: {c:?}");
        }
    }

    #[test]
    fn if_range_table() {
        let v = validators();
        assert!(if_range_holds("\"abc\"", &v));
        assert!(!if_range_holds("W/\"abc\"", &v));
        assert!(!if_range_holds("\"x\"", &v));
        assert!(if_range_holds("Sun, 06 Nov 1994 08:49:37 GMT", &v));
        assert!(!if_range_holds("Sun, 06 Nov 1994 08:49:38 GMT", &v));
    }
}
