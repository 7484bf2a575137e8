//! One connection's life: read a head, run the handler, drain the body,
//! write the response, and go round again while keep-alive allows.
//!
//! The loop is generic over `Socket` so that unit tests drive it with byte
//! slices split anywhere; with a `TcpStream`, file bodies still go out by
//! `sendfile`, since `&TcpStream` is what `io::copy` is handed.

use super::log;
use super::request_id;
use crate::config;
use crate::error::Error;
use crate::handler::{Handler, Request};
use crate::http::body::{BodyFraming, BodyReader};
use crate::http::buffer::Buffered;
use crate::http::date::{http_date_bytes, unix_secs};
use crate::http::response::{
    error_page, write_response, Duplex, ResponseBody, SendFile, WriteOpts,
};
use crate::http::{parse_request_head, HeadLimits, Method, RequestHead, Response};
use crate::metrics;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime};

/// First size of a connection's input buffer; it grows only for big heads.
const INITIAL_BUFFER: usize = 4096;
/// An idle keep-alive connection looks whether the server is stopping
/// this often (only connections idle this long wake up for it).
const IDLE_SLICE: Duration = Duration::from_secs(1);
/// How long a closing connection keeps reading what the client still sends,
/// so that its last response is not destroyed by a TCP reset.
const LINGER: Duration = Duration::from_secs(2);

/// What the connection loop needs of a socket besides `&S: Read + Write`.
pub trait Socket {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    fn shutdown_write(&self) -> io::Result<()>;
    /// The socket as a tunnel end (CONNECT), if it can be one.
    fn duplex(&self) -> Option<&dyn Duplex>;
    /// Whether the peer has closed the connection (checked without
    /// waiting or consuming input).
    fn peer_closed(&self) -> bool;
}

impl Socket for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn duplex(&self) -> Option<&dyn Duplex> {
        Some(self)
    }
    fn peer_closed(&self) -> bool {
        if self.set_nonblocking(true).is_err() {
            return false;
        }
        let closed = matches!(self.peek(&mut [0u8; 1]), Ok(0));
        let _ = self.set_nonblocking(false);
        closed
    }
}

/// The settings every connection shares.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_body: u64,
    pub limits: HeadLimits,
    /// The MPI rank, for the access log.
    pub rank: usize,
}

/// Input from the socket: the head parser looks at its buffered bytes,
/// body readers use the buffer as a `BufRead`.
struct Input<'s, S> {
    sock: &'s S,
    buf: Buffered<&'s S>,
    /// The read timeout last set on the socket, to skip a syscall when the
    /// next one is the same (the common case: every idle wait).
    timeout: Option<Duration>,
}

impl<'s, S: Socket> Input<'s, S>
where
    for<'a> &'a S: Read,
{
    fn new(sock: &'s S) -> Self {
        Input {
            sock,
            buf: Buffered::new(sock, INITIAL_BUFFER),
            timeout: None,
        }
    }

    fn set_timeout(&mut self, timeout: Duration) -> Result<(), Error> {
        if self.timeout != Some(timeout) {
            self.sock
                .set_read_timeout(Some(timeout))
                .map_err(Error::from_downstream_io)?;
            self.timeout = Some(timeout);
        }
        Ok(())
    }

    /// Read the next request head. `Ok(None)`: the client closed, or an
    /// idle keep-alive connection timed out; both end quietly.
    fn read_head(
        &mut self,
        since: Option<Instant>,
        cfg: &ConnConfig,
    ) -> Result<Option<RequestHead>, Error> {
        self.skip_blank_lines();
        let mut started = since.or_else(|| (!self.buf.pending().is_empty()).then(Instant::now));
        let idle_since = Instant::now();
        loop {
            if !self.buf.pending().is_empty() {
                if let Some((n, head)) = parse_request_head(self.buf.pending(), &cfg.limits)? {
                    self.buf.consume(n);
                    if head.framing != BodyFraming::None {
                        // Body bytes may pause as long as an idle connection.
                        self.set_timeout(cfg.keepalive_timeout)?;
                    }
                    return Ok(Some(head));
                }
            }
            let timeout = match started {
                // Idle: wait in slices, to notice a graceful stop.
                None => match cfg.keepalive_timeout.checked_sub(idle_since.elapsed()) {
                    Some(left) if !left.is_zero() && !super::draining() => left.min(IDLE_SLICE),
                    _ => return Ok(None),
                },
                Some(t) => match cfg.header_timeout.checked_sub(t.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Err(Error::HeadTimeout),
                },
            };
            self.set_timeout(timeout)?;
            // Grow only while a head could still be within its limit.
            match self.buf.read_more(cfg.limits.max_head + INITIAL_BUFFER) {
                Ok(0) => return Ok(None),
                Ok(_) => {
                    if started.is_none() {
                        self.skip_blank_lines();
                        if !self.buf.pending().is_empty() {
                            started = Some(Instant::now());
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    match started {
                        None => continue, // the next slice, or the end
                        Some(_) => return Err(Error::HeadTimeout),
                    }
                }
                Err(e) => return Err(Error::from_downstream_io(e)),
            }
        }
    }

    /// Drop CR and LF bytes waiting before a request (RFC 9112 §2.2: a
    /// client may send an extra CRLF after a body). Only a few are dropped
    /// per request, so a stream of them still starts the header timer.
    fn skip_blank_lines(&mut self) {
        let blank = self
            .buf
            .pending()
            .iter()
            .take(4)
            .take_while(|&&b| matches!(b, b'\r' | b'\n'))
            .count();
        self.buf.consume(blank);
    }
}

/// Serve one connection until it closes. `accepted` starts the header
/// timeout of the first request.
pub fn serve<S>(
    sock: &S,
    peer: SocketAddr,
    accepted: Instant,
    cfg: &ConnConfig,
    handler: &dyn Handler,
) where
    S: Socket,
    for<'a> &'a S: Read + SendFile,
{
    let mut input = Input::new(sock);
    let mut scratch = Vec::with_capacity(1024);
    let mut since = Some(accepted);
    loop {
        let head = match input.read_head(since.take(), cfg) {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => {
                let out = Out {
                    peer,
                    cfg,
                    scratch: &mut scratch,
                    id: None,
                };
                respond(sock, None, Err(e), false, accepted, out, &[]);
                return linger(sock, &mut input);
            }
        };
        let t0 = Instant::now();
        let _counted = metrics::global().begin();
        let id = request_id::for_request(head.header("x-request-id"));
        let (result, body_close) = run_handler(sock, &mut input, &head, peer, cfg, handler, &id);
        let keep = head.keep_alive && !body_close;
        let out = Out {
            peer,
            cfg,
            scratch: &mut scratch,
            id: Some(&id),
        };
        let pending = input.buf.pending();
        match respond(sock, Some(&head), result, keep, t0, out, pending) {
            Some(true) => {}
            Some(false) => return linger(sock, &mut input),
            None => return,
        }
    }
}

/// Run the handler, then make sure the request body is consumed. Returns
/// the handler's result and whether the connection must close because the
/// body could not be read to its end.
fn run_handler<S: Socket>(
    sock: &S,
    input: &mut Input<'_, S>,
    head: &RequestHead,
    peer: SocketAddr,
    cfg: &ConnConfig,
    handler: &dyn Handler,
    id: &str,
) -> (Result<Response, Error>, bool)
where
    for<'a> &'a S: Read + Write,
{
    let mut writer = sock;
    // The body may be refused before any of it is read (413 on its length).
    let body = match BodyReader::new(&mut input.buf, head.framing, cfg.max_body) {
        Ok(body) => body,
        Err(e) => return (Err(e), true),
    };
    let mut body = match head.expect_continue {
        true => body.with_continue(&mut writer),
        false => body,
    };
    let client_gone = || sock.peer_closed();
    let result = handler.handle(&mut Request {
        head,
        body: &mut body,
        peer,
        client_gone: &client_gone,
        id,
    });
    if body.is_done() {
        return (result, false);
    }
    if body.continue_pending() {
        // RFC 9110 §10.1.1: we answer without the body, so we close
        // rather than wait for content the client may never send.
        return (result, true);
    }
    // An unread body is drained only if it is small and arrives promptly:
    // a client dribbling a large body must not hold the thread (then the
    // answer goes out with Connection: close instead).
    // Recorded in the input's cache, so the next idle wait sets its own.
    input.timeout = sock
        .set_read_timeout(Some(cfg.header_timeout))
        .ok()
        .map(|_| cfg.header_timeout);
    let deadline = Instant::now() + cfg.header_timeout;
    match body.drain_within(config::MAX_DRAIN_BYTES, deadline) {
        Ok(drained) => (result, !drained),
        Err(e) => (Err(e), true),
    }
}

/// Where a response goes besides the socket: the log's peer and rank, and
/// a buffer to build it in; the request's id, for the log and the answer.
struct Out<'a> {
    peer: SocketAddr,
    cfg: &'a ConnConfig,
    scratch: &'a mut Vec<u8>,
    id: Option<&'a str>,
}

/// Write the response for `result` and log it. Returns whether the
/// connection stays open, or `None` when the peer is gone. A tunnel runs
/// here, starting with the client's `pending` bytes, and ends the
/// connection.
fn respond<S>(
    sock: &S,
    head: Option<&RequestHead>,
    result: Result<Response, Error>,
    keep: bool,
    t0: Instant,
    out: Out<'_>,
    pending: &[u8],
) -> Option<bool>
where
    S: Socket,
    for<'a> &'a S: SendFile,
{
    let Out {
        peer,
        cfg,
        scratch,
        id,
    } = out;
    let (mut resp, keep) = match result {
        Ok(resp) => (resp, keep),
        Err(Error::PeerGone) => return None,
        Err(e) => {
            ::log::debug!("{peer}: {e}");
            (error_page(&e), keep && !e.closes_connection())
        }
    };
    if let Some(id) = id {
        // Ours, whatever an upstream said.
        resp.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("x-request-id"));
        resp = resp.with("X-Request-Id", id.to_string());
    }
    let http10 = head.is_some_and(|h| h.minor == 0);
    let keep = keep && !resp.ends_connection(http10) && !super::draining();
    let date = http_date_bytes(unix_secs(SystemTime::now()));
    let opts = WriteOpts {
        head_only: head.is_some_and(|h| h.method == Method::Head),
        keep_alive: keep,
        http10,
        date: std::str::from_utf8(&date).unwrap_or(""),
    };
    let mut w = sock;
    let mut sent = write_response(&mut w, &mut resp, opts, scratch);
    let tunneled = matches!(resp.body, ResponseBody::Tunnel(_));
    if tunneled {
        let ResponseBody::Tunnel(tunnel) = std::mem::replace(&mut resp.body, ResponseBody::None)
        else {
            unreachable!("matched just above")
        };
        // Without a socket that can be shared (unit tests), it just closes.
        if let (Ok(_), Some(client)) = (&sent, sock.duplex()) {
            sent = Ok(tunnel.run(pending, client));
        }
    }
    metrics::global().record(resp.status, *sent.as_ref().unwrap_or(&0), t0.elapsed());
    let line = head.map(RequestHead::request_line);
    log::access(&log::Entry {
        peer,
        request_line: line.as_deref(),
        status: resp.status,
        bytes: *sent.as_ref().unwrap_or(&0),
        referer: head.and_then(|h| h.header("referer")),
        user_agent: head.and_then(|h| h.header("user-agent")),
        duration: t0.elapsed(),
        id,
        rank: resp.served_by.unwrap_or(cfg.rank),
    });
    match sent {
        Ok(_) if !tunneled => Some(keep),
        _ => None,
    }
}

/// Close gracefully: stop sending, then read and drop what the client still
/// sends for a short while, so our last response reaches it intact.
fn linger<S: Socket>(sock: &S, input: &mut Input<'_, S>)
where
    for<'a> &'a S: Read,
{
    if sock.shutdown_write().is_err() {
        return;
    }
    let until = Instant::now() + LINGER;
    let mut scratch = [0u8; 4096];
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            return;
        }
        let mut r = input.sock;
        match r.read(&mut scratch) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
