//! The upstream client: plain blocking `TcpStream`s to upstream servers,
//! kept alive and reused through a pool.
//!
//! One exchange: `Pool::get` a connection, `send_head` (and the body, if
//! any, through `writer`), `read_head`, read the body through `body`, then
//! `Pool::put` it back if the response left it reusable. Every read and
//! write carries the upstream timeout, so nothing waits forever.

use crate::error::Error;
use crate::http::body::{BodyFraming, BodyReader};
use crate::http::encode::write_request_head;
use crate::http::response_head::{parse_response_head, ResponseHead};
use crate::http::Method;
use std::collections::HashMap;
use std::io::{self, BufRead, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Idle connections kept per upstream.
const MAX_IDLE_PER_UPSTREAM: usize = 32;
/// How long an idle connection is trusted; upstreams close theirs too
/// (nginx after 75 s), and a stale one costs a failed request.
const IDLE_FOR: Duration = Duration::from_secs(30);
/// First size of a connection's input buffer.
const BUFFER: usize = 16 * 1024;

/// A connection to one upstream.
pub struct Conn {
    authority: String,
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// Taken from the pool rather than new: if it fails before any answer,
    /// the upstream may simply have closed it while idle.
    pub reused: bool,
}

/// Idle connections by upstream `host:port`.
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<(Conn, Instant)>>>,
    timeout: Duration,
}

impl Pool {
    /// A pool whose connections wait at most `timeout` for any one
    /// connect, read or write.
    pub fn new(timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    /// An idle connection to `authority`, or a new one.
    pub fn get(&self, authority: &str) -> Result<Conn, Error> {
        if let Ok(mut idle) = self.idle.lock() {
            if let Some(list) = idle.get_mut(authority) {
                while let Some((conn, since)) = list.pop() {
                    if since.elapsed() < IDLE_FOR {
                        return Ok(conn);
                    }
                }
            }
        }
        let stream = connect(authority, self.timeout)?;
        Ok(Conn {
            authority: authority.to_string(),
            stream,
            buf: vec![0; BUFFER],
            pos: 0,
            len: 0,
            reused: false,
        })
    }

    /// Keep `conn` for the next request to its upstream. Call only after
    /// its response was read to the end and said it may persist.
    pub fn put(&self, mut conn: Conn) {
        if conn.pos != conn.len {
            return; // bytes beyond the response: not a clean connection
        }
        conn.reused = true;
        if let Ok(mut idle) = self.idle.lock() {
            let list = idle.entry(conn.authority.clone()).or_default();
            if list.len() < MAX_IDLE_PER_UPSTREAM {
                list.push((conn, Instant::now()));
            }
        }
    }

    /// Idle connections held for `authority`, for tests and metrics.
    pub fn idle_count(&self, authority: &str) -> usize {
        self.idle
            .lock()
            .map_or(0, |idle| idle.get(authority).map_or(0, Vec::len))
    }
}

/// Resolve `authority` and connect to the first address that answers.
fn connect(authority: &str, timeout: Duration) -> Result<TcpStream, Error> {
    let addrs = authority
        .to_socket_addrs()
        .map_err(|e| Error::UpstreamUnreachable(format!("{authority}: {e}")))?;
    let mut last = Error::UpstreamUnreachable(format!("{authority}: no address"));
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                let setup = stream
                    .set_nodelay(true)
                    .and_then(|_| stream.set_read_timeout(Some(timeout)))
                    .and_then(|_| stream.set_write_timeout(Some(timeout)));
                setup.map_err(Error::from_upstream_io)?;
                return Ok(stream);
            }
            Err(e) => last = Error::from_upstream_io(e),
        }
    }
    Err(last)
}

impl Conn {
    /// Send a request head; `framing` says how the body that follows (if
    /// any) is delimited.
    pub fn send_head(
        &mut self,
        method: Method,
        target: &[u8],
        fields: &[(String, Vec<u8>)],
        framing: BodyFraming,
    ) -> Result<(), Error> {
        let mut w = &self.stream;
        write_request_head(&mut w, method.as_str().as_bytes(), target, fields, framing)
            .map_err(Error::from_upstream_io)
    }

    /// Where request body bytes go (wrap it in a `ChunkedWriter` when the
    /// head announced chunked).
    pub fn writer(&self) -> &TcpStream {
        &self.stream
    }

    /// Read the next response head (1xx included: the caller decides).
    pub fn read_head(&mut self, method: Method) -> Result<ResponseHead, Error> {
        loop {
            if let Some((n, head)) = parse_response_head(&self.buf[self.pos..self.len], method)? {
                self.pos += n;
                return Ok(head);
            }
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.len, 0);
                self.len -= self.pos;
                self.pos = 0;
            }
            if self.len == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match (&self.stream).read(&mut self.buf[self.len..]) {
                Ok(0) => return Err(Error::UpstreamBroken("closed before a response")),
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::from_upstream_io(e)),
            }
        }
    }

    /// The body of the response whose head was just read.
    pub fn body(&mut self, head: &ResponseHead) -> Result<BodyReader<'_, Conn>, Error> {
        BodyReader::new(self, head.framing, u64::MAX)
    }
}

impl Read for Conn {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(out.len());
            out[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Conn {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.len {
            self.pos = 0;
            self.len = (&self.stream).read(&mut self.buf)?;
        }
        Ok(&self.buf[self.pos..self.len])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
