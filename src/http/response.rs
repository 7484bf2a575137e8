//! Responses and how they are written: status line, headers, framing, body.
//!
//! Every response carries `Date`, `Server` and exact framing (RFC 9110
//! §6.6.1, §8.6); a HEAD answer has the GET headers and no body (§9.3.2).
//! Large file bodies go through `SendFile`, which a socket implements with
//! `sendfile(2)`; any other writer copies through a buffer.

use super::reason;
use crate::error::Error;
use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Write};
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
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(Cow<'static, str>, String)>,
    pub body: ResponseBody,
}

impl Response {
    pub fn new(status: u16, body: ResponseBody) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
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
            ResponseBody::None => None,
            ResponseBody::Bytes(b) => Some(b.len() as u64),
            ResponseBody::File { len, .. } | ResponseBody::Shared { len, .. } => Some(*len),
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
    if !opts.keep_alive {
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
        ResponseBody::None => {
            w.write_all(out)?;
            Ok(0)
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
