//! The upstream client: plain blocking `TcpStream`s to upstream servers,
//! kept alive and reused through a pool.
//!
//! One exchange: `Pool::get` a connection, `send_head` (and the body, if
//! any, through `writer`), `read_head`, read the body through `body`, then
//! `Pool::put` it back if the response left it reusable. Every read and
//! write carries the upstream timeout, so nothing waits forever.

use crate::config;
use crate::error::Error;
use crate::http::body::{BodyFraming, BodyReader, Paused};
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
    /// Some byte of an answer came back since the connection was taken:
    /// from then on a failure is the upstream's, never a stale connection.
    heard: bool,
}

/// Bytes that come within this time of an answer, unasked, mark their
/// upstream as one that writes after its answers (a duplicated response):
/// unlike an idle timeout's late 408, they may come after the next request
/// went out on the connection, where nothing can tell them from its answer.
const CHATTY_WITHIN: Duration = Duration::from_secs(1);
/// How long such an upstream gets a new connection for every request.
const CHATTY_FOR: Duration = Duration::from_secs(60);
/// Until an upstream is proven, a connection is reused only once it sat
/// idle this long and stayed quiet (a request that takes a younger one
/// waits out the rest, watching it): bytes an upstream writes after an
/// answer (a second write of a busy thread) come within a few
/// milliseconds, and seen there, they mark the upstream before any request
/// could meet them. The first connection found quiet after that long
/// proves the upstream: from then on its connections are reused at once.
const SETTLE: Duration = Duration::from_millis(5);

/// Idle connections and what is known of each upstream, by `host:port`.
pub struct Pool {
    upstreams: Mutex<HashMap<String, Upstream>>,
    timeout: Duration,
}

/// One upstream as the pool knows it.
#[derive(Default)]
struct Upstream {
    /// Idle connections, the one kept last at the end.
    idle: Vec<(Conn, Instant)>,
    /// One of its connections was found quiet after an answer and
    /// `SETTLE`: its connections are reused at once.
    proven: bool,
    /// It was seen writing after its answers: until then its connections
    /// are not reused.
    chatty_until: Option<Instant>,
}

impl Upstream {
    /// Whether it was seen writing after its answers lately; a past
    /// deadline is forgotten here.
    fn is_chatty(&mut self) -> bool {
        match self.chatty_until {
            Some(until) if until > Instant::now() => true,
            Some(_) => {
                self.chatty_until = None;
                false
            }
            None => false,
        }
    }
}

/// What an idle connection has waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    /// Nothing: it may carry the next request.
    Quiet,
    /// End of file or an error: the upstream closed it.
    Closed,
    /// Bytes nobody asked for.
    Bytes,
}

impl Pool {
    /// A pool whose connections wait at most `timeout` for any one
    /// connect, read or write.
    pub fn new(timeout: Duration) -> Pool {
        Pool {
            upstreams: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    /// The table. A poisoned lock is recovered: it is held only for a
    /// push, a pop or a flag of one upstream, never across I/O, so the
    /// table stays consistent.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upstream>> {
        self.upstreams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to `authority` that is still quiet, or a new
    /// one. An idle connection that became readable (the upstream closed
    /// it, or wrote bytes nobody asked for) is closed, never used: those
    /// bytes would be taken as the next request's answer.
    pub fn get(&self, authority: &str) -> Result<Conn, Error> {
        while let Some((conn, since)) = self.pop(authority) {
            // Not proven yet: give the upstream the rest of SETTLE to show
            // what it writes after an answer (once per upstream).
            let young = SETTLE.saturating_sub(since.elapsed());
            if !young.is_zero() && conn.input.pending().is_empty() {
                wait_readable(conn.input.get_ref(), young);
            }
            let idle = since.elapsed();
            match conn.idle_state() {
                Idle::Quiet if idle < IDLE_FOR => {
                    if idle >= SETTLE {
                        if let Some(up) = self.lock().get_mut(authority) {
                            up.proven = true;
                        }
                    }
                    return Ok(conn);
                }
                Idle::Bytes if idle < CHATTY_WITHIN => self.mark_chatty(authority),
                state => log::debug!(
                    "upstream {authority}: idle connection {state:?} after {idle:?}, closed"
                ),
            }
        }
        self.connect(authority)
    }

    /// Reuse no connection to `authority` for a while: it writes after its
    /// answers, and the next bytes could land in another request's answer.
    /// Its idle connections go too.
    fn mark_chatty(&self, authority: &str) {
        let mut upstreams = self.lock();
        let up = upstreams.entry(authority.to_string()).or_default();
        if !up.is_chatty() {
            log::warn!(
                "upstream {authority} wrote bytes after its answer: its connections \
                 are not reused for {} s",
                CHATTY_FOR.as_secs()
            );
        }
        up.chatty_until = Some(Instant::now() + CHATTY_FOR);
        up.proven = false;
        up.idle.clear();
    }

    /// The idle connection to `authority` kept last, and when it was kept;
    /// for a proven upstream, as if kept `SETTLE` ago (for a young one of
    /// an upstream not proven yet, the caller waits out the rest). The most
    /// recent is the warmest, and the least likely to have been closed by
    /// the upstream; the ones below it age out. The lock is held only for
    /// the pop, not for the check that follows.
    fn pop(&self, authority: &str) -> Option<(Conn, Instant)> {
        let mut upstreams = self.lock();
        let up = upstreams.get_mut(authority)?;
        let (conn, since) = up.idle.pop()?;
        match up.proven {
            // Proven: used at once, counted as settled.
            true => {
                let settled = Instant::now().checked_sub(SETTLE).unwrap_or(since);
                Some((conn, since.min(settled)))
            }
            false => Some((conn, since)),
        }
    }

    /// A new connection to `authority`, never an idle one.
    pub fn connect(&self, authority: &str) -> Result<Conn, Error> {
        let stream = connect(authority, self.timeout)?;
        Ok(Conn {
            authority: authority.to_string(),
            input: Buffered::new(stream, BUFFER),
            reused: false,
            heard: false,
        })
    }

    /// Keep `conn` for the next request to its upstream. Call only after
    /// its response was read to the end and said it may persist.
    pub fn put(&self, mut conn: Conn) {
        // The answer must end exactly where the bytes read so far end, and
        // nothing more may be waiting on the socket: bytes beyond the
        // response are not a clean connection.
        match conn.idle_state() {
            Idle::Quiet => {}
            Idle::Bytes => return self.mark_chatty(&conn.authority),
            Idle::Closed => return,
        }
        conn.reused = true;
        conn.heard = false;
        let mut upstreams = self.lock();
        let up = upstreams.entry(conn.authority.clone()).or_default();
        if !up.is_chatty() && up.idle.len() < MAX_IDLE_PER_UPSTREAM {
            up.idle.push((conn, Instant::now()));
        }
    }

    /// Idle connections held for `authority`, for tests and metrics.
    pub fn idle_count(&self, authority: &str) -> usize {
        self.lock().get(authority).map_or(0, |up| up.idle.len())
    }

    /// Whether `authority` was seen writing after its answers lately.
    #[cfg(test)]
    fn is_chatty(&self, authority: &str) -> bool {
        self.lock()
            .get_mut(authority)
            .is_some_and(Upstream::is_chatty)
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

/// Wait up to `limit` until `stream` is readable (bytes, an end of file or
/// an error), without reading; whether it is.
fn wait_readable(stream: &TcpStream, limit: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // Whole milliseconds, rounded up: never a busy zero.
    let ms = limit.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd that outlives the call; the descriptor is
    // open (borrowed from `stream`).
    unsafe { libc::poll(&mut fd, 1, ms) > 0 }
}

/// What a reading of `stream` would meet now. One `recv(MSG_PEEK |
/// MSG_DONTWAIT)`, which neither consumes anything nor changes the
/// socket's blocking mode.
fn peek_state(stream: &TcpStream) -> Idle {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: the descriptor is open for the call (borrowed from `stream`),
    // and the kernel writes at most one byte into `byte`, which we own.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        1.. => Idle::Bytes,
        0 => Idle::Closed,
        _ if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock => Idle::Quiet,
        _ => Idle::Closed,
    }
}

impl Conn {
    /// What has arrived that was not asked for: buffered bytes, or data,
    /// an end of file or an error waiting on the socket.
    fn idle_state(&self) -> Idle {
        match self.input.pending().is_empty() {
            true => peek_state(self.input.get_ref()),
            false => Idle::Bytes,
        }
    }

    /// Whether a failure now may be a stale pooled connection rather than
    /// the upstream's answer: the connection was reused and not one byte of
    /// an answer came back on it.
    pub fn may_be_stale(&self) -> bool {
        self.reused && !self.heard
    }

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
                Ok(_) => self.heard = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::from_upstream_io(e)),
            }
        }
    }

    /// Wait up to `limit` for the upstream to say something (bytes, an
    /// end of file or an error); whether it did.
    pub fn wait_answer(&self, limit: Duration) -> bool {
        !self.input.pending().is_empty() || wait_readable(self.input.get_ref(), limit)
    }

    /// Go on reading a body that `body(..).pause()` left off.
    pub fn resume_body(&mut self, paused: Paused) -> BodyReader<'_, Buffered<TcpStream>> {
        BodyReader::resume(&mut self.input, paused)
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
