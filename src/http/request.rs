//! The request-head parser: bytes in, a checked `RequestHead` out.
//!
//! The request line is parsed here by hand (httparse accepts only
//! HTTP/1.0 and 1.1, and mpiweb must tell 400 from 505); header lines go
//! through `httparse::parse_headers`; then the rules httparse leaves to
//! its caller: Host, Content-Length, Transfer-Encoding, Connection, Expect.

use super::body::BodyFraming;
use super::dots::Dots;
use super::{field_spans, is_tchar, list_items, persistent, span_in, trim_ows, Method};
use crate::config;
use crate::error::Error;
use std::ops::Range;

/// Caps on a request head (STYLE.md rule 5).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Bytes in the whole head, request line and blank line included.
    pub max_head: usize,
    /// Header lines.
    pub max_headers: usize,
    /// Bytes in the request target.
    pub max_target: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_head: config::MAX_HEAD_BYTES,
            max_headers: config::MAX_HEADERS,
            max_target: config::MAX_TARGET_BYTES,
        }
    }
}

/// The four forms of request-target (RFC 9112 §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/path?query`
    Origin,
    /// `http://authority/path?query`; the authority is lowercased.
    Absolute { authority: String },
    /// `host:port`, CONNECT only.
    Authority,
    /// `*`, OPTIONS only.
    Asterisk,
}

/// A parsed, checked request head. It owns a copy of the head's bytes and
/// keeps ranges into it, so parsing costs two allocations.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub target: Target,
    /// Minor version: 0 or 1 (a higher 1.x is answered as 1.1, RFC 9110 §6.2).
    pub minor: u8,
    pub framing: BodyFraming,
    /// Whether the connection may stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` in an HTTP/1.1 request.
    pub expect_continue: bool,
    raw: Vec<u8>,
    /// The whole request-target as received.
    target_raw: Range<usize>,
    /// The path-and-query part (`/` for authority and asterisk forms).
    path_query: Range<usize>,
    headers: Vec<(Range<usize>, Range<usize>)>,
}

impl RequestHead {
    /// The request-target exactly as received.
    pub fn target_str(&self) -> &str {
        // unwrap-free: target bytes were checked to be visible ASCII.
        std::str::from_utf8(&self.raw[self.target_raw.clone()]).unwrap_or("")
    }

    /// The path and query of the target (`/` when the target has no path).
    pub fn path_query(&self) -> &str {
        match std::str::from_utf8(&self.raw[self.path_query.clone()]) {
            Ok(pq) if !pq.is_empty() => pq,
            _ => "/",
        }
    }

    /// Every header line, in order, as (name, value) byte slices.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.headers
            .iter()
            .map(|(n, v)| (&self.raw[n.clone()], &self.raw[v.clone()]))
    }

    /// The values of every line named `name` (case-insensitive).
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of `name`, as bytes.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of `name`, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The request line for logs: `GET /x HTTP/1.1`.
    pub fn request_line(&self) -> String {
        let target = self.target_str();
        let mut line = String::with_capacity(target.len() + 18);
        line.push_str(self.method.as_str());
        line.push(' ');
        line.push_str(target);
        line.push_str(if self.minor == 0 {
            " HTTP/1.0"
        } else {
            " HTTP/1.1"
        });
        line
    }
}

/// Parse a request head from the front of `buf`.
///
/// `Ok(None)`: the head is incomplete and within limits; read more.
/// `Ok(Some((n, head)))`: `n` bytes (leading blank lines included) make the head.
pub fn parse_request_head(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(usize, RequestHead)>, Error> {
    // RFC 9112 §2.2: ignore empty lines before the request line.
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") || buf[start..].starts_with(b"\n") {
        start += if buf[start] == b'\r' { 2 } else { 1 };
        if start > limits.max_head {
            return Err(Error::HeadTooLarge);
        }
    }
    let buf_rest = &buf[start..];
    let Some(lf) = buf_rest.iter().position(|&b| b == b'\n') else {
        check_partial_line(buf_rest, limits)?;
        return Ok(None);
    };
    let line_end = lf + 1;
    let line = match buf_rest[..lf].strip_suffix(b"\r") {
        Some(l) => l,
        None => &buf_rest[..lf],
    };
    let line = parse_request_line(line, limits)?;

    let mut slots = [httparse::EMPTY_HEADER; config::MAX_HEADERS];
    let slots = &mut slots[..limits.max_headers.min(config::MAX_HEADERS)];
    let (head_len, parsed) = match httparse::parse_headers(&buf_rest[line_end..], slots) {
        Ok(httparse::Status::Complete((n, parsed))) => (line_end + n, parsed),
        Ok(httparse::Status::Partial) => {
            if buf_rest.len() > limits.max_head {
                return Err(Error::HeadTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
        Err(_) => return Err(Error::BadRequest("malformed header line")),
    };
    if head_len > limits.max_head {
        return Err(Error::HeadTooLarge);
    }

    let raw = buf_rest[..head_len].to_vec();
    let headers = field_spans(buf_rest, parsed);
    for (_, v) in &headers {
        // httparse admits obs-text; refuse NUL and other controls (RFC 9110 §5.5).
        if raw[v.clone()]
            .iter()
            .any(|&b| b < 0x20 && b != b'\t' || b == 0x7f)
        {
            return Err(Error::BadRequest("control character in a header value"));
        }
    }

    let method = Method::from_token(line.method).ok_or(Error::UnknownMethod)?;
    let target_raw = span_in(buf_rest, line.target);
    let mut head = RequestHead {
        method,
        target: Target::Origin,
        minor: line.minor,
        framing: BodyFraming::None,
        keep_alive: false,
        expect_continue: false,
        path_query: target_raw.clone(),
        target_raw,
        raw,
        headers,
    };
    check_target(&mut head)?;
    remove_dot_segments(&mut head);
    check_host(&head)?;
    head.framing = parse_framing(&head)?;
    head.keep_alive = persistent(head.header_all("connection"), head.minor);
    head.expect_continue = parse_expect(&head)?;
    Ok(Some((start + head_len, head)))
}

struct RequestLine<'a> {
    method: &'a [u8],
    target: &'a [u8],
    minor: u8,
}

/// Before the line is complete: refuse a target already over its limit
/// (414) or a line over the head limit (431) instead of waiting for more.
fn check_partial_line(line: &[u8], limits: &HeadLimits) -> Result<(), Error> {
    if let Some(sp) = line.iter().position(|&b| b == b' ') {
        let target_len = line[sp + 1..]
            .iter()
            .position(|&b| b == b' ')
            .unwrap_or(line.len() - sp - 1);
        if target_len > limits.max_target {
            return Err(Error::UriTooLong);
        }
    }
    if line.len() > limits.max_head {
        return Err(Error::HeadTooLarge);
    }
    Ok(())
}

/// `method SP request-target SP HTTP-version` (RFC 9112 §3), single spaces.
fn parse_request_line<'a>(line: &'a [u8], limits: &HeadLimits) -> Result<RequestLine<'a>, Error> {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().ok_or(Error::BadRequest("no request target"))?;
    // No version at all is an HTTP/0.9 simple request: refused.
    let version = parts.next().ok_or(Error::BadRequest("no HTTP version"))?;
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Error::BadRequest("malformed method"));
    }
    if target.len() > limits.max_target {
        return Err(Error::UriTooLong);
    }
    if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(Error::BadRequest("malformed request target"));
    }
    // HTTP-version = "HTTP/" DIGIT "." DIGIT (RFC 9112 §2.3), case-sensitive.
    let minor = match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            match major {
                b'1' => (minor - b'0').min(1),
                b'0' => return Err(Error::BadRequest("HTTP/0.x")),
                _ => return Err(Error::VersionNotSupported),
            }
        }
        _ => return Err(Error::BadRequest("malformed HTTP version")),
    };
    Ok(RequestLine {
        method,
        target,
        minor,
    })
}

/// Work out which form the target takes and which part is the path.
fn check_target(head: &mut RequestHead) -> Result<(), Error> {
    let t = &head.raw[head.target_raw.clone()];
    let start = head.target_raw.start;
    if head.method == Method::Connect {
        // authority-form (RFC 9112 §3.2.3): host ":" port, nothing else.
        let ok = !t.contains(&b'/') && !t.contains(&b'@') && port_of(t).is_some();
        if !ok {
            return Err(Error::BadRequest("CONNECT needs host:port"));
        }
        head.target = Target::Authority;
        head.path_query = 0..0;
        return Ok(());
    }
    if t == b"*" {
        if head.method != Method::Options {
            return Err(Error::BadRequest("* is only for OPTIONS"));
        }
        head.target = Target::Asterisk;
        head.path_query = 0..0;
        return Ok(());
    }
    if t.starts_with(b"/") {
        if t.contains(&b'#') {
            return Err(Error::BadRequest("fragment in request target"));
        }
        return Ok(());
    }
    // absolute-form (RFC 9112 §3.2.2).
    let scheme_len = t.iter().position(|&b| b == b':').unwrap_or(0);
    let scheme = &t[..scheme_len];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https"))
        || !t[scheme_len..].starts_with(b"://")
    {
        return Err(Error::BadRequest("malformed request target"));
    }
    let rest = scheme_len + 3;
    let auth_end = t[rest..]
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .map_or(t.len(), |p| rest + p);
    let authority = &t[rest..auth_end];
    if authority.is_empty() || !valid_authority(authority) || t.contains(&b'#') {
        return Err(Error::BadRequest("malformed absolute target"));
    }
    head.target = Target::Absolute {
        authority: String::from_utf8_lossy(authority).to_ascii_lowercase(),
    };
    head.path_query = if auth_end == t.len() {
        0..0 // path is empty: means "/"
    } else {
        start + auth_end..head.target_raw.end
    };
    if head.path_query.is_empty() || head.raw[head.path_query.start] == b'?' {
        head.path_query = 0..0;
    }
    Ok(())
}

/// Resolve `.` and `..` segments that stay inside the root (RFC 3986
/// §5.2.4): routing, files, the store and upstreams all see the result.
/// One that would climb above the root stays, to be refused.
fn remove_dot_segments(head: &mut RequestHead) {
    if head.path_query.is_empty() {
        return;
    }
    if let Dots::Removed(clean) = super::dots::remove_dot_segments(head.path_query()) {
        let start = head.raw.len();
        head.raw.extend_from_slice(clean.as_bytes());
        head.path_query = start..head.raw.len();
    }
}

/// RFC 9112 §3.2: exactly one Host in HTTP/1.1, and it must be a valid authority.
fn check_host(head: &RequestHead) -> Result<(), Error> {
    let mut hosts = head.header_all("host");
    match (hosts.next(), hosts.next()) {
        (None, _) if head.minor >= 1 => Err(Error::BadRequest("missing Host")),
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(Error::BadRequest("several Host lines")),
        (Some(h), None) if h.is_empty() || valid_authority(h) => Ok(()),
        (Some(_), None) => Err(Error::BadRequest("malformed Host")),
    }
}

/// uri-host [":" port] (RFC 3986 §3.2), without userinfo.
fn valid_authority(a: &[u8]) -> bool {
    let host_ok = |b: u8| {
        matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9'
            | b'-' | b'.' | b'_' | b'~' | b'%' | b'!' | b'$' | b'&' | b'\''
            | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'[' | b']')
    };
    // port = *DIGIT (RFC 3986 §3.2.3): it may be empty.
    let port_ok = |a: &[u8]| match a.iter().rposition(|&b| b == b':') {
        Some(c) => c > 0 && a[c + 1..].iter().all(u8::is_ascii_digit) && a.len() - c <= 6,
        None => true,
    };
    !a.is_empty() && a.iter().all(|&b| host_ok(b)) && port_ok(a)
        || a.starts_with(b"[") && a.iter().all(|&b| host_ok(b))
}

/// The port of `host:port`, if present and numeric.
fn port_of(a: &[u8]) -> Option<u16> {
    let colon = a.iter().rposition(|&b| b == b':')?;
    let port = &a[colon + 1..];
    if colon == 0 || port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(port).ok()?.parse().ok()
}

/// Message body framing, RFC 9112 §6.1-6.3.
fn parse_framing(head: &RequestHead) -> Result<BodyFraming, Error> {
    let mut lengths = head.header_all("content-length");
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => return Err(Error::BadRequest("repeated Content-Length")),
        (Some(v), None) => Some(parse_content_length(v)?),
    };
    let mut codings = head.header_all("transfer-encoding").peekable();
    if codings.peek().is_none() {
        return Ok(length.map_or(BodyFraming::None, BodyFraming::Length));
    }
    // §6.1: TE with CL is a smuggling attempt; TE in 1.0 is faulty framing.
    if length.is_some() {
        return Err(Error::BadRequest("Content-Length with Transfer-Encoding"));
    }
    if head.minor == 0 {
        return Err(Error::BadRequest("Transfer-Encoding in HTTP/1.0"));
    }
    let items: Vec<&[u8]> = codings.flat_map(list_items).collect();
    if items.iter().any(|c| !c.eq_ignore_ascii_case(b"chunked")) {
        return Err(Error::UnknownTransferCoding);
    }
    // Only chunked is left; it must appear once, as the final coding.
    if items.len() != 1 {
        return Err(Error::BadRequest("chunked applied more than once"));
    }
    Ok(BodyFraming::Chunked)
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6); `u64::from_str` would take `+5`.
pub fn parse_content_length(v: &[u8]) -> Result<u64, Error> {
    let v = trim_ows(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(Error::BadRequest("malformed Content-Length"));
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// RFC 9110 §10.1.1: `100-continue` is the only expectation; 1.0 ignores it.
fn parse_expect(head: &RequestHead) -> Result<bool, Error> {
    // An HTTP/1.0 server ignores Expect (RFC 9110 §10.1.1).
    let Some(v) = head.header("expect").filter(|_| head.minor >= 1) else {
        return Ok(false);
    };
    if !trim_ows(v).eq_ignore_ascii_case(b"100-continue") {
        return Err(Error::ExpectationFailed);
    }
    Ok(head.minor >= 1)
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
