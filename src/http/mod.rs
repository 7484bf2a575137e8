//! Pure HTTP/1.1 (RFC 9110/9112): request heads, body framing, responses.
//!
//! Nothing here owns a socket: parsers take byte slices and readers and
//! writers are generic over `Read`/`BufRead`/`Write` (STYLE.md rules 1, 6).

pub mod body;
pub mod buffer;
pub mod date;
pub mod dots;
pub mod encode;
pub mod request;
pub mod response;
pub mod response_head;

pub use body::{BodyFraming, BodyReader};
pub use request::{parse_request_head, HeadLimits, RequestHead, Target};
pub use response::{Response, ResponseBody};
use std::ops::Range;

/// The methods mpiweb knows (RFC 9110 §9 plus PATCH, RFC 5789). Any other
/// token is answered 501 (RFC 9110 §9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
}

impl Method {
    /// Methods are case-sensitive tokens (RFC 9110 §9.1): `get` is unknown.
    pub fn from_token(token: &[u8]) -> Option<Method> {
        Some(match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"CONNECT" => Method::Connect,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
        }
    }
}

/// `tchar` of RFC 9110 §5.6.2: the bytes a token (method, field name) may hold.
pub fn is_tchar(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
        | b'`' | b'|' | b'~')
}

/// Whether a comma-separated field value (RFC 9110 §5.6.1) holds `token`,
/// compared case-insensitively.
pub fn list_contains(value: &[u8], token: &str) -> bool {
    list_items(value).any(|item| item.eq_ignore_ascii_case(token.as_bytes()))
}

/// The non-empty elements of a comma-separated list, trimmed of OWS.
/// Empty elements are skipped, as RFC 9110 §5.6.1 asks of recipients.
pub fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|item| !item.is_empty())
}

/// Where `part`, a slice of `whole`, lies in it. Heads keep ranges into
/// their own copy of the bytes httparse's slices point into.
pub fn span_in(whole: &[u8], part: &[u8]) -> Range<usize> {
    let at = part.as_ptr() as usize - whole.as_ptr() as usize;
    at..at + part.len()
}

/// The ranges of httparse's parsed field lines within `whole`.
pub fn field_spans(
    whole: &[u8],
    parsed: &[httparse::Header<'_>],
) -> Vec<(Range<usize>, Range<usize>)> {
    parsed
        .iter()
        .map(|h| (span_in(whole, h.name.as_bytes()), span_in(whole, h.value)))
        .collect()
}

/// RFC 9112 §9.3: whether a connection persists after a message of
/// version 1.`minor` with these `Connection` values: in 1.1 unless
/// `close`, in 1.0 only with `keep-alive`.
pub fn persistent<'a>(connection: impl Iterator<Item = &'a [u8]>, minor: u8) -> bool {
    let mut close = false;
    let mut keep = false;
    for v in connection {
        close |= list_contains(v, "close");
        keep |= list_contains(v, "keep-alive");
    }
    !close && (minor >= 1 || keep)
}

/// Trim optional whitespace (SP and HTAB, RFC 9110 §5.6.3) at both ends.
pub fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The reason phrase sent with a status code (RFC 9110 §15).
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// Escape text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as a JSON string, quotes included.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parsing_table() {
        let cases: &[(&[u8], &str, bool)] = &[
            (b"close", "close", true),
            (b"Keep-Alive, Upgrade", "keep-alive", true),
            (b" ,, close ,", "close", true),
            (b"closed", "close", false),
            (b"", "close", false),
        ];
        for (value, token, want) in cases {
            assert_eq!(list_contains(value, token), *want, "{value:?} {token}");
        }
    }

    #[test]
    fn tchar_is_rfc_9110_token() {
        let tchars: Vec<u8> = (0..=255u8).filter(|&b| is_tchar(b)).collect();
        let mut want: Vec<u8> = b"!#$%&'*+-.^_`|~".to_vec();
        want.extend(b'0'..=b'9');
        want.extend(b'A'..=b'Z');
        want.extend(b'a'..=b'z');
        want.sort();
        assert_eq!(tchars, want);
    }

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!(Method::from_token(b"GET"), Some(Method::Get));
        assert_eq!(Method::from_token(b"get"), None);
        assert_eq!(Method::from_token(b"BREW"), None);
    }

    #[test]
    fn escapes_html() {
        assert_eq!(html_escape("a&b <c>\"'"), "a&amp;b &lt;c&gt;&quot;&#39;");
    }

    #[test]
    fn json_strings_escape_what_they_must() {
        assert_eq!(json_string("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
