//! The upstream client: plain blocking `TcpStream`s to upstream servers,
//! kept alive and reused through a pool.
//!
//! One exchange: `Pool::get` a connection, `send_head` (and the body, if
//! any, through `writer`), `read_head`, read the body through `body`, then
//! `Pool::put` it back if the response left it reusable. Every read and
//! write carries the upstream timeout, so nothing waits forever.

use crate::config;
use crate::error::Error;
use crate::http::body::{BodyFraming, BodyReader};
use crate::http::buffer::Buffered;
use crate::http::encode::write_request_head;
use crate::http::response_head::{parse_response_head, ResponseHead};
use crate::http::Method;
use std::collections::HashMap;
use std::io::{self, BufRead};
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
/// Its size while a long body is read: fewer, larger reads and pieces.
const BODY_BUFFER: usize = 256 * 1024;

/// A connection to one upstream.
pub struct Conn {
    authority: String,
    input: Buffered<TcpStream>,
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
        self.connect(authority)
    }

    /// A new connection to `authority`, never an idle one.
    pub fn connect(&self, authority: &str) -> Result<Conn, Error> {
        let stream = connect(authority, self.timeout)?;
        Ok(Conn {
            authority: authority.to_string(),
            input: Buffered::new(stream, BUFFER),
            reused: false,
        })
    }

    /// Keep `conn` for the next request to its upstream. Call only after
    /// its response was read to the end and said it may persist.
    pub fn put(&self, mut conn: Conn) {
        if !conn.input.pending().is_empty() {
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
        let mut w = self.input.get_ref();
        write_request_head(&mut w, method.as_str().as_bytes(), target, fields, framing)
            .map_err(Error::from_upstream_io)
    }

    /// The socket: where request body bytes go (wrapped in a
    /// `ChunkedWriter` when the head announced chunked), and a tunnel's end.
    pub fn stream(&self) -> &TcpStream {
        self.input.get_ref()
    }

    /// Read the next response head (1xx included: the caller decides).
    pub fn read_head(&mut self, method: Method) -> Result<ResponseHead, Error> {
        loop {
            if let Some((n, head)) = parse_response_head(self.input.pending(), method)? {
                self.input.consume(n);
                return Ok(head);
            }
            // parse_response_head refuses heads over the limit before this
            // buffer could grow past twice it.
            match self.input.read_more(2 * config::MAX_HEAD_BYTES) {
                Ok(0) => return Err(Error::UpstreamBroken("closed before a response")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::from_upstream_io(e)),
            }
        }
    }

    /// The body of the response whose head was just read.
    pub fn body(
        &mut self,
        head: &ResponseHead,
    ) -> Result<BodyReader<'_, Buffered<TcpStream>>, Error> {
        if !matches!(head.framing, BodyFraming::Length(n) if n <= BUFFER as u64) {
            self.input.reserve(BODY_BUFFER);
        }
        BodyReader::new(&mut self.input, head.framing, u64::MAX)
    }
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
