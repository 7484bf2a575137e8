//! Responses and how they are written: status line, headers, framing, body.
//!
//! Every response carries `Date`, `Server` and exact framing (RFC 9110
//! §6.6.1, §8.6); a HEAD answer has the GET headers and no body (§9.3.2).
//! Large file bodies go through `SendFile`, which a socket implements with
//! `sendfile(2)`; any other writer copies through a buffer.

use super::reason;
use crate::error::Error;
use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The server name sent in every response.
pub const SERVER: &str = concat!("mpiweb/", env!("CARGO_PKG_VERSION"));

/// File bodies up to this size are read and sent with the head in one write.
const INLINE_FILE_BYTES: u64 = 32 * 1024;

/// What follows the head.
#[derive(Debug)]
pub enum ResponseBody {
    /// No content and no `Content-Length`: 1xx, 204 and 304 (RFC 9110 §8.6).
    None,
    Bytes(Vec<u8>),
    /// `len` bytes of `file` from `offset`.
    File {
        file: File,
        offset: u64,
        len: u64,
    },
    /// `len` bytes of shared, cached data from `offset`.
    Shared {
        data: Arc<[u8]>,
        offset: u64,
        len: u64,
    },
    /// A body made piece by piece (a proxied response): sent with
    /// `Content-Length` when `length` is known, else chunked to HTTP/1.1
    /// clients and delimited by closing to HTTP/1.0 ones (RFC 9112 §6.3).
    Stream {
        source: Box<dyn BodySource>,
        length: Option<u64>,
    },
    /// After the head, the connection carries raw bytes both ways: a 2xx
    /// answer to CONNECT (RFC 9110 §9.3.6).
    Tunnel(Box<dyn Tunnel>),
}

/// Where a streamed body comes from.
pub trait BodySource: Send {
    /// The next piece, waiting for it; `Ok(None)` at the end. Asking for a
    /// piece says the ones before it were written.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error>;
    /// The next piece if one is ready now, without waiting.
    fn try_next_chunk(&mut self) -> Option<Result<Option<Vec<u8>>, Error>> {
        None
    }
}

/// A socket both ends of a tunnel can use at once through `&self`.
pub trait Duplex: Sync {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write_all(&self, buf: &[u8]) -> io::Result<()>;
    fn shutdown(&self, how: Shutdown);
}

impl Duplex for TcpStream {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        io::Read::read(&mut &*self, buf)
    }
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(&mut &*self, buf)
    }
    fn shutdown(&self, how: Shutdown) {
        // Already closed is as good as closed.
        let _ = TcpStream::shutdown(self, how);
    }
}

/// What relays a tunnel once its head is written.
pub trait Tunnel: Send {
    /// Relay until both directions end; `pending` are bytes the client
    /// sent after its request head. Returns the bytes sent to the client.
    fn run(self: Box<Self>, pending: &[u8], client: &dyn Duplex) -> u64;
}

impl fmt::Debug for dyn BodySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BodySource")
    }
}

impl fmt::Debug for dyn Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tunnel")
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(Cow<'static, str>, String)>,
    pub body: ResponseBody,
    /// The rank that served it, when not the one writing it (a proxied
    /// answer, a document read from a replica): the access log names it.
    pub served_by: Option<usize>,
}

impl Response {
    pub fn new(status: u16, body: ResponseBody) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
            served_by: None,
        }
    }

    /// Add a header line.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((Cow::Borrowed(name), value.into()));
        self
    }

    /// An HTML page.
    pub fn html(status: u16, page: String) -> Response {
        Response::new(status, ResponseBody::Bytes(page.into_bytes()))
            .with("Content-Type", "text/html; charset=utf-8")
    }

    /// The value of a header this response carries.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The length of the body as `Content-Length` states it.
    pub fn content_length(&self) -> Option<u64> {
        match &self.body {
            ResponseBody::None | ResponseBody::Tunnel(_) => None,
            ResponseBody::Bytes(b) => Some(b.len() as u64),
            ResponseBody::File { len, .. } | ResponseBody::Shared { len, .. } => Some(*len),
            ResponseBody::Stream { length, .. } => *length,
        }
    }

    /// Whether the connection cannot carry another request after this
    /// response: a body of unknown length to an HTTP/1.0 client ends with
    /// the connection, and a tunnel owns it.
    pub fn ends_connection(&self, http10: bool) -> bool {
        match &self.body {
            ResponseBody::Stream { length: None, .. } => http10,
            ResponseBody::Tunnel(_) => true,
            _ => false,
        }
    }
}

/// The short HTML page, and the headers its status needs, for an error.
pub fn error_page(err: &Error) -> Response {
    let status = err.status().unwrap_or(500);
    let title = format!("{status} {}", reason(status));
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><hr><p>{SERVER}</p></body></html>\n"
    );
    let resp = Response::html(status, page);
    match err {
        Error::MethodNotAllowed(allow) => resp.with("Allow", *allow),
        Error::RangeNotSatisfiable(len) => resp.with("Content-Range", format!("bytes */{len}")),
        Error::NoHealthyUpstream(secs) => resp.with("Retry-After", secs.to_string()),
        Error::Unauthorized => resp.with("WWW-Authenticate", "Bearer realm=\"mpiweb-store\""),
        _ => resp,
    }
}

/// A writer that can take a file region. The default copies through a
/// buffer; `&TcpStream` overrides it with `sendfile(2)` (std's `io::copy`
/// does not use sendfile from a file to a socket).
pub trait SendFile: Write {
    fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<u64> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0;
        while sent < len {
            let want = (len - sent).min(buf.len() as u64) as usize;
            let n = file.read_at(&mut buf[..want], offset + sent)?;
            if n == 0 {
                break;
            }
            self.write_all(&buf[..n])?;
            sent += n as u64;
        }
        Ok(sent)
    }
}

impl SendFile for Vec<u8> {}

/// How to frame one response on its connection.
#[derive(Debug, Clone, Copy)]
pub struct WriteOpts<'a> {
    /// Send the head only (HEAD request).
    pub head_only: bool,
    /// Whether the connection stays open afterwards.
    pub keep_alive: bool,
    /// The request was HTTP/1.0: persistence must be announced.
    pub http10: bool,
    /// The `Date` value.
    pub date: &'a str,
}

/// Write `resp` and return the number of body bytes sent.
pub fn write_response<W: SendFile>(
    w: &mut W,
    resp: &mut Response,
    opts: WriteOpts<'_>,
    scratch: &mut Vec<u8>,
) -> io::Result<u64> {
    scratch.clear();
    let out = scratch;
    // Plain appends rather than `write!`: this runs for every response.
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(resp.status));
    out.push(b' ');
    out.extend_from_slice(reason(resp.status).as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(opts.date.as_bytes());
    out.extend_from_slice(b"\r\nServer: ");
    out.extend_from_slice(SERVER.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &resp.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(len) = resp.content_length() {
        out.extend_from_slice(b"Content-Length: ");
        push_u64(out, len);
        out.extend_from_slice(b"\r\n");
    }
    let chunked = matches!(resp.body, ResponseBody::Stream { length: None, .. }) && !opts.http10;
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if matches!(resp.body, ResponseBody::Tunnel(_)) {
        // The connection becomes the tunnel: no framing, no persistence.
    } else if !opts.keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if opts.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if opts.head_only {
        w.write_all(out)?;
        return Ok(0);
    }
    match &mut resp.body {
        ResponseBody::None | ResponseBody::Tunnel(_) => {
            w.write_all(out)?;
            Ok(0)
        }
        ResponseBody::Stream { source, length } => {
            write_stream(w, source.as_mut(), *length, chunked, out)
        }
        ResponseBody::Bytes(b) => {
            out.extend_from_slice(b);
            w.write_all(out)?;
            Ok(b.len() as u64)
        }
        ResponseBody::Shared { data, offset, len } => {
            let part = data
                .get(*offset as usize..(*offset + *len) as usize)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range past data"))?;
            out.extend_from_slice(part);
            w.write_all(out)?;
            Ok(*len)
        }
        ResponseBody::File { file, offset, len } if *len <= INLINE_FILE_BYTES => {
            let head = out.len();
            out.resize(head + *len as usize, 0);
            file.read_exact_at(&mut out[head..], *offset)?;
            w.write_all(out)?;
            Ok(*len)
        }
        ResponseBody::File { file, offset, len } => {
            w.write_all(out)?;
            let sent = w.send_file(file, *offset, *len)?;
            if sent != *len {
                // The file shrank under us: the framing is now a lie.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than announced",
                ));
            }
            Ok(sent)
        }
    }
}

/// Bytes gathered before a write while more pieces are ready at once.
const STREAM_GATHER: usize = 64 * 1024;

/// Send a streamed body after the head already in `out`. Pieces that are
/// ready together go out in one write (a small proxied answer arrives as
/// head, one piece and the end, and leaves in one segment); the buffer is
/// flushed before waiting for more.
fn write_stream<W: Write>(
    w: &mut W,
    source: &mut dyn BodySource,
    length: Option<u64>,
    chunked: bool,
    out: &mut Vec<u8>,
) -> io::Result<u64> {
    let mut sent = 0u64;
    loop {
        let next = match source.try_next_chunk() {
            Some(next) => next,
            None => {
                if !out.is_empty() {
                    w.write_all(out)?;
                    out.clear();
                }
                source.next_chunk()
            }
        };
        let piece = match next {
            Ok(Some(piece)) => piece,
            Ok(None) => break,
            Err(e) => {
                // Too late for an error page: cut the message short, so
                // the client sees it is incomplete (RFC 9112 §8).
                let _ = w.write_all(out);
                return Err(io::Error::other(e.to_string()));
            }
        };
        if piece.is_empty() {
            continue;
        }
        sent += piece.len() as u64;
        if length.is_some_and(|n| sent > n) {
            return Err(io::Error::other("body longer than announced"));
        }
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        }
        if out.len() + piece.len() <= STREAM_GATHER {
            out.extend_from_slice(&piece);
        } else {
            w.write_all(out)?;
            out.clear();
            w.write_all(&piece)?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
    if length.is_some_and(|n| sent != n) {
        let _ = w.write_all(out);
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "body shorter than announced",
        ));
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    w.write_all(out)?;
    out.clear();
    Ok(sent)
}

/// The decimal digits of `n`, in a buffer and from the returned index.
pub fn decimal(mut n: u64) -> ([u8; 20], usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return (digits, at);
        }
    }
}

/// Append the decimal digits of `n`.
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    let (digits, at) = decimal(n);
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(resp: &mut Response, head_only: bool, keep_alive: bool, http10: bool) -> String {
        let mut out = Vec::new();
        let opts = WriteOpts {
            head_only,
            keep_alive,
            http10,
            date: "Thu, 01 Jan 1970 00:00:00 GMT",
        };
        write_response(&mut out, resp, opts, &mut Vec::new()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn framing_table() {
        let body = |s: &str| ResponseBody::Bytes(s.as_bytes().to_vec());
        let cases: Vec<(Response, bool, bool, bool, &str)> = vec![
            (
                Response::new(200, body("hi")),
                false,
                true,
                false,
                "HTTP/1.1 200 OK\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nServer: mpiweb/0.1.0\r\nContent-Length: 2\r\n\r\nhi",
            ),
            (
                Response::new(200, body("hi")),
                true,
                false,
                false,
                "HTTP/1.1 200 OK\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nServer: mpiweb/0.1.0\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
            ),
            (
                Response::new(304, ResponseBody::None).with("ETag", "\"x\""),
                false,
                true,
                true,
                "HTTP/1.1 304 Not Modified\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nServer: mpiweb/0.1.0\r\nETag: \"x\"\r\nConnection: keep-alive\r\n\r\n",
            ),
        ];
        for (mut resp, head_only, keep_alive, http10, want) in cases {
            assert_eq!(written(&mut resp, head_only, keep_alive, http10), want);
        }
    }

    /// Pieces handed out one by one; `ready` of them without waiting.
    struct Pieces {
        pieces: Vec<Result<Vec<u8>, Error>>,
        ready: usize,
    }

    impl BodySource for Pieces {
        fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
            if self.pieces.is_empty() {
                return Ok(None);
            }
            self.pieces.remove(0).map(Some)
        }
        fn try_next_chunk(&mut self) -> Option<Result<Option<Vec<u8>>, Error>> {
            if self.ready == 0 {
                return None;
            }
            self.ready -= 1;
            Some(self.next_chunk())
        }
    }

    #[test]
    fn streamed_bodies_table() {
        let ok = |parts: &[&str]| -> Vec<Result<Vec<u8>, Error>> {
            parts.iter().map(|p| Ok(p.as_bytes().to_vec())).collect()
        };
        let head = "HTTP/1.1 200 OK\r\nDate: x\r\nServer: mpiweb/0.1.0\r\n";
        // (pieces, length, http10, ready, wanted output or None for an error)
        type Case = (
            Vec<Result<Vec<u8>, Error>>,
            Option<u64>,
            bool,
            usize,
            Option<String>,
        );
        let cases: Vec<Case> = vec![
            (
                ok(&["ab", "", "cde"]),
                None,
                false,
                0,
                Some(format!(
                    "{head}Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
                )),
            ),
            (
                ok(&["ab", "cde"]),
                None,
                false,
                9,
                Some(format!(
                    "{head}Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
                )),
            ),
            (
                ok(&["ab", "cde"]),
                Some(5),
                false,
                1,
                Some(format!("{head}Content-Length: 5\r\n\r\nabcde")),
            ),
            (
                ok(&["ab", "cde"]),
                None,
                true,
                0,
                Some(format!("{head}Connection: close\r\n\r\nabcde")),
            ),
            (
                ok(&[]),
                None,
                false,
                0,
                Some(format!("{head}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
            ),
            (ok(&["ab"]), Some(5), false, 0, None),
            (ok(&["abcdef"]), Some(5), false, 0, None),
            (
                vec![Ok(b"ab".to_vec()), Err(Error::UpstreamTimeout)],
                None,
                false,
                0,
                None,
            ),
        ];
        for (pieces, length, http10, ready, want) in cases {
            let source = Box::new(Pieces { pieces, ready });
            let mut resp = Response::new(200, ResponseBody::Stream { source, length });
            let opts = WriteOpts {
                head_only: false,
                keep_alive: !http10,
                http10,
                date: "x",
            };
            let keep = !resp.ends_connection(http10);
            let opts = WriteOpts {
                keep_alive: opts.keep_alive && keep,
                ..opts
            };
            let mut out = Vec::new();
            let got = write_response(&mut out, &mut resp, opts, &mut Vec::new());
            match want {
                Some(want) => {
                    assert!(got.is_ok(), "{want:?}: {got:?}");
                    assert_eq!(String::from_utf8_lossy(&out), want);
                }
                None => {
                    assert!(got.is_err(), "{length:?}");
                    assert!(!String::from_utf8_lossy(&out).ends_with("0\r\n\r\n"));
                }
            }
        }
    }

    #[test]
    fn decimal_digits() {
        for n in [0u64, 7, 10, 99, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn error_pages_carry_their_headers() {
        let r = error_page(&Error::MethodNotAllowed("GET, HEAD"));
        assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
        let r = error_page(&Error::RangeNotSatisfiable(10));
        assert_eq!(r.header("Content-Range"), Some("bytes */10"));
        let r = error_page(&Error::NoHealthyUpstream(3));
        assert_eq!((r.status, r.header("Retry-After")), (503, Some("3")));
        let r = error_page(&Error::Unauthorized);
        let want = Some("Bearer realm=\"mpiweb-store\"");
        assert_eq!((r.status, r.header("www-authenticate")), (401, want));
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
    }

    #[test]
    fn file_bodies_small_and_large() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        for (offset, len) in [(0u64, 10u64), (5, 40_000), (99_990, 10), (1, 99_999)] {
            let file = File::open(&path).unwrap();
            let mut resp = Response::new(200, ResponseBody::File { file, offset, len });
            let mut out = Vec::new();
            let opts = WriteOpts {
                head_only: false,
                keep_alive: true,
                http10: false,
                date: "x",
            };
            let sent = write_response(&mut out, &mut resp, opts, &mut Vec::new()).unwrap();
            assert_eq!(sent, len);
            let at = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert_eq!(&out[at..], &data[offset as usize..(offset + len) as usize]);
        }
    }
}
