//! Writing messages a proxy sends on: a request head for an upstream, and
//! a body re-framed as chunked when its length is not known (RFC 9112
//! §7.1). Generic over `Write`, so tests write into a `Vec`.

use super::body::BodyFraming;
use super::response::push_u64;
use std::io::{self, Write};

/// Write `METHOD target HTTP/1.1`, the fields, and the framing field for
/// `framing` (the caller has dropped any framing fields of its own).
pub fn write_request_head<W: Write>(
    w: &mut W,
    method: &[u8],
    target: &[u8],
    fields: &[(String, Vec<u8>)],
    framing: BodyFraming,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        BodyFraming::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(&mut out, n);
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked | BodyFraming::UntilClose => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n")
        }
        BodyFraming::None => {}
    }
    out.extend_from_slice(b"\r\n");
    w.write_all(&out)
}

/// Writes everything given to it as chunks; `finish` writes the last
/// chunk. An empty write sends nothing (a zero-size chunk would end the
/// body).
pub struct ChunkedWriter<W: Write> {
    inner: W,
}

impl<W: Write> ChunkedWriter<W> {
    pub fn new(inner: W) -> Self {
        ChunkedWriter { inner }
    }

    /// End the body (no trailers) and give back the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(b"0\r\n\r\n")?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ChunkedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut line = format!("{:x}\r\n", buf.len()).into_bytes();
        line.extend_from_slice(buf);
        line.extend_from_slice(b"\r\n");
        self.inner.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::BodyReader;
    use std::io::Read;

    #[test]
    fn request_heads_table() {
        let fields = vec![("Host".to_string(), b"a.example".to_vec())];
        let cases = [
            (
                BodyFraming::None,
                "GET /x HTTP/1.1\r\nHost: a.example\r\n\r\n",
            ),
            (
                BodyFraming::Length(12),
                "GET /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 12\r\n\r\n",
            ),
            (
                BodyFraming::Chunked,
                "GET /x HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
        ];
        for (framing, want) in cases {
            let mut out = Vec::new();
            write_request_head(&mut out, b"GET", b"/x", &fields, framing).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn chunked_output_decodes_to_the_input() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = ChunkedWriter::new(Vec::new());
        for piece in data.chunks(7_777) {
            w.write_all(piece).unwrap();
        }
        w.write_all(b"").unwrap();
        let encoded = w.finish().unwrap();
        let mut input = &encoded[..];
        let mut body = Vec::new();
        BodyReader::new(&mut input, BodyFraming::Chunked, u64::MAX)
            .unwrap()
            .read_to_end(&mut body)
            .unwrap();
        assert_eq!(body, data);
        assert!(input.is_empty());
    }
}
