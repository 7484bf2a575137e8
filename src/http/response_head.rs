//! The head of an upstream's response: bytes in, status, fields and body
//! framing out (RFC 9112 §4 and §6.3). Pure, like the request parser; a
//! broken answer is the upstream's fault (502), never the client's.

use super::body::BodyFraming;
use super::request::parse_content_length;
use super::{field_spans, list_items, persistent, Method};
use crate::config;
use crate::error::Error;
use std::ops::Range;

/// A parsed response head. Like `RequestHead`, it owns the head's bytes
/// and keeps ranges into them.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    /// Minor version: 0 or 1.
    pub minor: u8,
    /// How the body that follows is delimited.
    pub framing: BodyFraming,
    /// Whether the upstream connection can carry another request after
    /// this body.
    pub keep_alive: bool,
    raw: Vec<u8>,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl ResponseHead {
    /// Every field line, in order.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.fields
            .iter()
            .map(|(n, v)| (&self.raw[n.clone()], &self.raw[v.clone()]))
    }

    /// The values of every line named `name` (case-insensitive).
    pub fn field_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }
}

/// Parse a response head from the front of `buf`, for a request made with
/// `method`. `Ok(None)`: incomplete, read more.
pub fn parse_response_head(
    buf: &[u8],
    method: Method,
) -> Result<Option<(usize, ResponseHead)>, Error> {
    let mut slots = [httparse::EMPTY_HEADER; config::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let used = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > config::MAX_HEAD_BYTES => {
            return Err(Error::UpstreamBroken("response head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::UpstreamBroken("too many response fields"))
        }
        Err(_) => return Err(Error::UpstreamBroken("malformed response head")),
    };
    if used > config::MAX_HEAD_BYTES {
        return Err(Error::UpstreamBroken("response head too large"));
    }
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(Error::UpstreamBroken("malformed status line"));
    };
    let raw = buf[..used].to_vec();
    let fields = field_spans(buf, resp.headers);
    let mut head = ResponseHead {
        status,
        minor,
        framing: BodyFraming::None,
        keep_alive: false,
        raw,
        fields,
    };
    let (framing, reusable) = response_framing(&head, method)?;
    head.framing = framing;
    head.keep_alive = reusable && persistent(head.field_all("connection"), head.minor);
    Ok(Some((used, head)))
}

/// RFC 9112 §6.3, in its order. Also says whether the framing leaves the
/// connection reusable (it does not after a close-delimited body, or when
/// Transfer-Encoding overrode Content-Length).
fn response_framing(head: &ResponseHead, method: Method) -> Result<(BodyFraming, bool), Error> {
    // 1: no body after HEAD, 1xx, 204 and 304.
    if method == Method::Head || head.status < 200 || head.status == 204 || head.status == 304 {
        return Ok((BodyFraming::None, true));
    }
    // 2: a 2xx to CONNECT turns the connection into a tunnel.
    if method == Method::Connect && (200..300).contains(&head.status) {
        return Ok((BodyFraming::None, false));
    }
    let mut lengths = head.field_all("content-length");
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => None,
        (Some(v), None) => Some(v),
        // Repeated: acceptable only as the very same value (§6.3 rule 5).
        (Some(a), Some(b)) if a == b && lengths.all(|c| c == a) => Some(a),
        (Some(_), Some(_)) => return Err(Error::UpstreamBroken("conflicting Content-Length")),
    };
    let codings: Vec<&[u8]> = head
        .field_all("transfer-encoding")
        .flat_map(list_items)
        .collect();
    if let Some(last) = codings.last() {
        // 3: chunked last frames the body; otherwise it runs to the close.
        // Content-Length beside it is ignored, and the connection retired.
        let chunked = last.eq_ignore_ascii_case(b"chunked");
        let framing = match chunked {
            true => BodyFraming::Chunked,
            false => BodyFraming::UntilClose,
        };
        return Ok((framing, chunked && length.is_none()));
    }
    match length {
        // 5 and 6: a valid length frames the body; an invalid one is fatal.
        Some(v) => match parse_content_length(v) {
            Ok(n) => Ok((BodyFraming::Length(n), true)),
            Err(_) => Err(Error::UpstreamBroken("malformed Content-Length")),
        },
        // 8: otherwise the body runs until the upstream closes.
        None => Ok((BodyFraming::UntilClose, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case = (&'static [u8], Method, Result<(u16, BodyFraming, bool), u16>);

    #[test]
    fn framing_table() {
        use BodyFraming::{Chunked, Length, UntilClose};
        let none = BodyFraming::None;
        let cases: &[Case] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Method::Get,
                Ok((200, Length(5), true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Method::Head,
                Ok((200, none, true)),
            ),
            (
                b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                Method::Get,
                Ok((204, none, true)),
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\n\r\n",
                Method::Get,
                Ok((304, none, true)),
            ),
            (
                b"HTTP/1.1 100 Continue\r\n\r\n",
                Method::Post,
                Ok((100, none, true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::Get,
                Ok((200, Chunked, true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Method::Get,
                Ok((200, Chunked, true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
                Method::Get,
                Ok((200, Chunked, false)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Method::Get,
                Ok((200, UntilClose, false)),
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n",
                Method::Get,
                Ok((200, UntilClose, false)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Method::Get,
                Ok((200, Length(5), true)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
                Method::Get,
                Ok((200, Length(5), false)),
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
                Method::Get,
                Ok((200, Length(5), false)),
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
                Method::Get,
                Ok((200, Length(5), true)),
            ),
            (
                b"HTTP/1.1 200 Connection established\r\n\r\n",
                Method::Connect,
                Ok((200, none, false)),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                Method::Get,
                Err(502),
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
                Method::Get,
                Err(502),
            ),
            (b"HTTP/2 200 OK\r\n\r\n", Method::Get, Err(502)),
            (b"SSH-2.0-OpenSSH\r\n\r\n", Method::Get, Err(502)),
            (b"HTTP/1.1 2000 OK\r\n\r\n", Method::Get, Err(502)),
        ];
        for (raw, method, want) in cases {
            let got = match parse_response_head(raw, *method) {
                Ok(Some((n, h))) => {
                    assert_eq!(n, raw.len());
                    Ok((h.status, h.framing, h.keep_alive))
                }
                Ok(None) => panic!("incomplete: {:?}", String::from_utf8_lossy(raw)),
                Err(e) => Err(e.status().unwrap_or(0)),
            };
            assert_eq!(&got, want, "{:?} {method:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn split_at_every_byte() {
        let raw =
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc";
        let (full, _) = parse_response_head(raw, Method::Get).unwrap().unwrap();
        for cut in 0..full {
            assert!(
                parse_response_head(&raw[..cut], Method::Get)
                    .unwrap()
                    .is_none(),
                "cut {cut}"
            );
        }
        let (n, head) = parse_response_head(raw, Method::Get).unwrap().unwrap();
        assert_eq!(&raw[n..], b"abc");
        let names: Vec<&[u8]> = head.fields().map(|(n, _)| n).collect();
        assert_eq!(names, [&b"Content-Type"[..], b"Content-Length"]);
    }

    #[test]
    fn oversized_heads_are_the_upstream_s_fault() {
        let mut raw = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', config::MAX_HEAD_BYTES + 10));
        let err = parse_response_head(&raw, Method::Get).unwrap_err();
        assert_eq!(err.status(), Some(502));
    }
}
