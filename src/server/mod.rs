//! The listener: accept, cap the number of connections, give each one a
//! thread running the keep-alive loop. The only place where an error
//! becomes a response is the loop in `conn`.

pub mod conn;
pub mod log;
pub mod request_id;
pub mod signals;
pub mod sys;

use crate::config;
use crate::error::Error;
use crate::handler::Handler;
use crate::http::date::fmt_http_date;
use crate::http::response::{error_page, write_response, WriteOpts};
pub use conn::ConnConfig;
use std::io::{self, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Set once a graceful stop began: no new connections, no keep-alive.
static DRAINING: AtomicBool = AtomicBool::new(false);

/// Whether the server is stopping: connections close after their
/// current request, and idle ones at once.
pub fn draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// How often the acceptor's watcher looks for a stop signal.
const STOP_POLL: Duration = Duration::from_millis(50);

/// A listening server.
pub struct Server {
    listener: TcpListener,
    conn: Arc<ConnConfig>,
    handler: Arc<dyn Handler>,
    max_connections: usize,
    active: Arc<AtomicUsize>,
    /// How long connections may finish their requests after a stop signal.
    grace: Duration,
}

/// Holds one place under the connection cap; frees it when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Server {
    pub fn new(
        listener: TcpListener,
        conn: ConnConfig,
        handler: Arc<dyn Handler>,
        max_connections: usize,
        grace: Duration,
    ) -> Server {
        Server {
            listener,
            conn: Arc::new(conn),
            handler,
            max_connections,
            active: Arc::new(AtomicUsize::new(0)),
            grace,
        }
    }

    /// Accept connections forever. The acceptor only accepts, counts and
    /// spawns: everything else happens on the connection's own thread, so a
    /// burst of connections is taken off the backlog quickly.
    pub fn run(self) -> io::Result<()> {
        if let Err(e) = sys::set_backlog(&self.listener, config::LISTEN_BACKLOG) {
            ::log::warn!("keeping the default listen backlog: {e}");
        }
        let refused = spawn_closer()?;
        spawn_stop_watcher(&self.listener)?;
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(pair) => pair,
                Err(e) => {
                    accept_failed(&e);
                    continue;
                }
            };
            if draining() {
                break;
            }
            let accepted = Instant::now();
            if self.active.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
                self.active.fetch_sub(1, Ordering::AcqRel);
                refuse(stream, &refused);
                continue;
            }
            let slot = Slot(Arc::clone(&self.active));
            let (conn, handler) = (Arc::clone(&self.conn), Arc::clone(&self.handler));
            // Shared so that a failed spawn still leaves us the socket to refuse.
            let stream = Arc::new(stream);
            let theirs = Arc::clone(&stream);
            let spawned = thread::Builder::new()
                .name("conn".into())
                .stack_size(config::CONNECTION_STACK_BYTES)
                .spawn(move || {
                    let _slot = slot;
                    // Best effort: a socket that refuses options still gets served.
                    let _ = theirs.set_nodelay(true);
                    let _ = theirs.set_write_timeout(Some(config::SEND_TIMEOUT));
                    conn::serve(&*theirs, peer, accepted, &conn, handler.as_ref());
                });
            match (spawned, Arc::try_unwrap(stream)) {
                (Ok(_), _) => {}
                (Err(e), Ok(stream)) => {
                    ::log::warn!("cannot start a connection thread: {e}");
                    refuse(stream, &refused);
                }
                (Err(e), Err(_)) => ::log::warn!("cannot start a connection thread: {e}"),
            }
        }
        // Stopping: new connections are refused from now on, and the open
        // ones finish their request (idle ones close at once).
        drop(self.listener);
        let until = Instant::now() + self.grace;
        let open = || self.active.load(Ordering::Acquire);
        ::log::warn!(
            "stopping: {} connection(s) open, waiting up to {} s",
            open(),
            self.grace.as_secs_f64()
        );
        while open() > 0 && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
        match open() {
            0 => ::log::warn!("stopped: every connection finished"),
            n => ::log::warn!("stopped: {n} connection(s) cut after the grace period"),
        }
        Ok(())
    }
}

/// A thread that turns a stop signal into a drain: it marks the server
/// draining and wakes the acceptor with a connection of its own.
fn spawn_stop_watcher(listener: &TcpListener) -> io::Result<()> {
    let mut wake = listener.local_addr()?;
    if wake.ip().is_unspecified() {
        wake.set_ip(match wake {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    thread::Builder::new()
        .name("stop-watcher".into())
        .spawn(move || {
            while !signals::stop_requested() {
                thread::sleep(STOP_POLL);
            }
            ::log::warn!("stop signal: no new connections");
            DRAINING.store(true, Ordering::Relaxed);
            let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        })?;
    Ok(())
}

/// An accept error that persists (no file descriptors left) must not spin
/// the acceptor: report it and pause briefly.
fn accept_failed(e: &io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted => {}
        _ => {
            ::log::warn!("accept failed: {e}");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Answer 503 and close, without giving the connection a thread.
fn refuse(stream: TcpStream, closer: &SyncSender<TcpStream>) {
    let mut resp = error_page(&Error::Overloaded).with("Retry-After", "1");
    let opts = WriteOpts {
        head_only: false,
        keep_alive: false,
        http10: false,
        date: &fmt_http_date(SystemTime::now()),
    };
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut w = &stream;
    if write_response(&mut w, &mut resp, opts, &mut Vec::new()).is_ok() {
        let _ = stream.shutdown(Shutdown::Write);
        // If the closer is busy, drop now: a reset beats a stalled acceptor.
        let _ = closer.try_send(stream);
    }
}

/// One thread that drains refused connections briefly before closing them,
/// so their 503 is read rather than lost to a reset.
fn spawn_closer() -> io::Result<SyncSender<TcpStream>> {
    // Queued sockets hold descriptors outside the cap: keep them well
    // below the reserve.
    let (tx, rx) = sync_channel::<TcpStream>(config::RESERVED_FDS / 2);
    thread::Builder::new()
        .name("closer".into())
        .spawn(move || {
            let mut scratch = [0u8; 4096];
            for stream in rx {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
                let _ = (&stream).read(&mut scratch);
            }
        })?;
    Ok(tx)
}
