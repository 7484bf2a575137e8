//! The connection loop driven by byte slices through a mock socket.

use super::*;
use crate::http::ResponseBody;
use std::sync::Mutex;

/// A socket whose input arrives in pieces of `piece` bytes.
struct Mock {
    input: Mutex<(Vec<u8>, usize)>,
    piece: usize,
    output: Mutex<Vec<u8>>,
}

impl Mock {
    fn new(input: &[u8], piece: usize) -> Mock {
        Mock {
            input: Mutex::new((input.to_vec(), 0)),
            piece,
            output: Mutex::new(Vec::new()),
        }
    }
}

impl Read for &Mock {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut g = self.input.lock().unwrap();
        let (data, at) = &mut *g;
        let n = self.piece.min(out.len()).min(data.len() - *at);
        out[..n].copy_from_slice(&data[*at..*at + n]);
        *at += n;
        Ok(n)
    }
}

impl Write for &Mock {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.output.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SendFile for &Mock {}

impl Socket for Mock {
    fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn shutdown_write(&self) -> io::Result<()> {
        Ok(())
    }
    fn duplex(&self) -> Option<&dyn crate::http::response::Duplex> {
        None
    }
    fn peer_closed(&self) -> bool {
        false
    }
}

/// Answers with the path, and for `/echo` with the body it read.
struct Echo;

impl Handler for Echo {
    fn handle(&self, req: &mut Request<'_>) -> Result<Response, Error> {
        let mut text = req.head.path_query().to_string();
        if text == "/echo" {
            let mut body = Vec::new();
            req.body
                .read_to_end(&mut body)
                .map_err(crate::http::body::unwrap_io)?;
            text = String::from_utf8_lossy(&body).into_owned();
        }
        if text == "/missing" {
            return Err(Error::NotFound);
        }
        Ok(Response::new(200, ResponseBody::Bytes(text.into_bytes())))
    }
}

fn cfg() -> ConnConfig {
    ConnConfig {
        header_timeout: Duration::from_secs(5),
        keepalive_timeout: Duration::from_secs(5),
        max_body: 100,
        limits: HeadLimits::default(),
        rank: 0,
    }
}

/// Run the loop on `input` split in pieces; return what it wrote.
fn run(input: &[u8], piece: usize) -> String {
    let sock = Mock::new(input, piece);
    serve(
        &sock,
        "127.0.0.1:1".parse().unwrap(),
        Instant::now(),
        &cfg(),
        &Echo,
    );
    String::from_utf8_lossy(&sock.output.into_inner().unwrap()).into_owned()
}

/// Run the loop on `input` split in pieces; return (status, body) pairs.
fn exchange(input: &[u8], piece: usize) -> Vec<(u16, String)> {
    let out = run(input, piece);
    parse_responses(&out)
}

/// Split a byte stream of responses using their Content-Length.
fn parse_responses(mut s: &str) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    while let Some(end) = s.find("\r\n\r\n") {
        let head = &s[..end];
        let status: u16 = head[9..12].parse().unwrap();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .map_or(0, |v| v.parse().unwrap());
        let body_end = if status == 100 {
            end + 4
        } else {
            end + 4 + len
        };
        out.push((status, s[end + 4..body_end].to_string()));
        s = &s[body_end..];
    }
    out
}

#[test]
fn pipelined_requests_answered_in_order_at_any_split() {
    let input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
        POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nSKIP\
        GET /missing HTTP/1.1\r\nHost: x\r\n\r\n\
        GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n\
        GET /never HTTP/1.1\r\nHost: x\r\n\r\n";
    let want: Vec<(u16, String)> = vec![
        (200, "/a".into()),
        (200, "hello".into()),
        (200, "abc".into()),
        (200, "/b".into()),
        (404, String::new()),
        (200, "/last".into()),
    ];
    for piece in [1, 2, 3, 7, 64, 4096] {
        let got: Vec<(u16, String)> = exchange(input, piece)
            .into_iter()
            .map(|(s, b)| (s, if s == 404 { String::new() } else { b }))
            .collect();
        assert_eq!(got, want, "piece {piece}");
    }
}

#[test]
fn errors_close_the_connection() {
    let cases: &[(&[u8], u16)] = &[
        (
            b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
        ),
        (
            b"BREW / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            501,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            413,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n",
            413,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
            400,
        ),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ];
    for (input, status) in cases {
        let got = exchange(input, 4096);
        assert_eq!(
            got.len(),
            1,
            "{:?}: {got:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(got[0].0, *status, "{:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn http10_closes_unless_asked() {
    let input = b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
    assert_eq!(exchange(input, 4096).len(), 1);
    let input = b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n";
    assert_eq!(exchange(input, 4096).len(), 2);
}

#[test]
fn continue_is_sent_when_the_handler_reads() {
    let input =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi";
    let got = exchange(input, 4096);
    assert_eq!(got, vec![(100, String::new()), (200, "hi".to_string())]);
}

#[test]
fn unread_body_with_expect_closes_without_continue() {
    let input = b"POST /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let out = run(input, 4096);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("Connection: close\r\n"), "{out}");
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
}
