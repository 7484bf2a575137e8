//! CONNECT tunnels (RFC 9110 §9.3.6): raw bytes both ways between a socket
//! and a frame stream, under the same credit window as bodies. The same
//! relay runs on rank 0 (the client's socket) and on the worker (the
//! upstream's socket).

use super::worker::Ctx;
use crate::error::Error;
use crate::http::response::Duplex;
use crate::stream::credit::Grants;
use crate::stream::credit::CHUNK;
use crate::stream::transport::Frames;
use crate::stream::wire::{AbortReason, Frame};
use std::io;
use std::net::Shutdown;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A tunnel with no byte either way for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often each side of a relay looks at the other's state.
const TICK: Duration = Duration::from_millis(200);

/// Worker side: connect to `authority`, say so with a 200 head, relay.
pub fn open_upstream(
    id: u64,
    authority: &str,
    rx: &Receiver<Frame>,
    ctx: &Ctx,
) -> Result<(), Error> {
    let conn = ctx.pool.connect(authority)?;
    ctx.watch(id, conn.stream());
    ctx.send(Frame::Head {
        id,
        status: 200,
        fields: Vec::new(),
        length: None,
    });
    let mut rx = rx;
    let mut ends = Ends {
        id,
        rx: &mut rx,
        send: &|f| ctx.send(f),
    };
    // The first credit for the upstream's bytes comes from rank 0.
    relay(&mut ends, &[], conn.stream(), 0, IDLE_TIMEOUT);
    Ok(())
}

/// The frame side of a relay.
pub struct Ends<'a> {
    pub id: u64,
    pub rx: &'a mut dyn Frames,
    pub send: &'a (dyn Fn(Frame) + Sync),
}

/// The sending half of `Ends`, which both directions use.
#[derive(Clone, Copy)]
struct Out<'a> {
    id: u64,
    send: &'a (dyn Fn(Frame) + Sync),
}

/// What both directions share.
struct State {
    /// Bytes the other side still takes from us.
    credit: u64,
    /// Our socket said end of input and `End` went out.
    local_done: bool,
    /// Stop both directions now.
    stop: bool,
    last: Instant,
}

/// Relay until both directions have ended, or either side aborts, or
/// nothing moves for `idle`. `pending` goes out first; `credit` is what the
/// other side granted already. Returns the bytes written to `sock`.
pub fn relay(
    ends: &mut Ends<'_>,
    pending: &[u8],
    sock: &dyn Duplex,
    credit: u64,
    idle: Duration,
) -> u64 {
    let shared = (
        Mutex::new(State {
            credit,
            local_done: false,
            stop: false,
            last: Instant::now(),
        }),
        Condvar::new(),
    );
    // Our window for the other side's bytes.
    (ends.send)(Grants::first(ends.id));
    let out = Out {
        id: ends.id,
        send: ends.send,
    };
    let shared = &shared;
    thread::scope(|s| {
        s.spawn(move || sock_to_frames(out, pending, sock, shared, idle));
        frames_to_sock(out, &mut *ends.rx, sock, shared, idle)
    })
}

fn lock(shared: &(Mutex<State>, Condvar)) -> std::sync::MutexGuard<'_, State> {
    // A poisoned lock means the other direction panicked: carry on with
    // its last state, the relay ends soon anyway.
    shared.0.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read our socket, send its bytes as `Data` within the credit.
fn sock_to_frames(
    ends: Out<'_>,
    pending: &[u8],
    sock: &dyn Duplex,
    shared: &(Mutex<State>, Condvar),
    idle: Duration,
) {
    let id = ends.id;
    // Bytes the client sent behind its CONNECT head: fewer than a head's
    // limit, so they go out whole (credit may dip below zero once).
    let mut first = Some(pending.to_vec()).filter(|p| !p.is_empty());
    let mut buf = vec![0u8; CHUNK];
    loop {
        let want = {
            let mut st = lock(shared);
            while st.credit == 0 && !st.stop {
                st = shared
                    .1
                    .wait_timeout(st, TICK)
                    .map_or_else(|p| p.into_inner().0, |r| r.0);
            }
            if st.stop {
                return;
            }
            st.credit.min(CHUNK as u64) as usize
        };
        let piece = match first.take() {
            Some(p) => p,
            None => match sock.read(&mut buf[..want]) {
                Ok(n) => buf[..n].to_vec(),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let st = lock(shared);
                    if st.stop || st.last.elapsed() < idle {
                        continue;
                    }
                    drop(st);
                    stop(ends, sock, shared, Some(AbortReason::Timeout));
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    stop(ends, sock, shared, Some(AbortReason::ClientGone));
                    return;
                }
            },
        };
        let mut st = lock(shared);
        if st.stop {
            return;
        }
        if piece.is_empty() {
            st.local_done = true;
            drop(st);
            (ends.send)(Frame::End { id });
            return;
        }
        st.credit = st.credit.saturating_sub(piece.len() as u64);
        st.last = Instant::now();
        drop(st);
        (ends.send)(Frame::Data { id, bytes: piece });
    }
}

/// Stop both directions; with a `reason`, tell the other side why (without
/// one, the other side stopped first).
fn stop(
    ends: Out<'_>,
    sock: &dyn Duplex,
    shared: &(Mutex<State>, Condvar),
    reason: Option<AbortReason>,
) {
    let mut st = lock(shared);
    if !st.stop {
        st.stop = true;
        drop(st);
        shared.1.notify_all();
        if let Some(reason) = reason {
            (ends.send)(Frame::Abort {
                id: ends.id,
                reason,
            });
        }
        sock.shutdown(Shutdown::Both);
    }
}

/// Write the other side's `Data` to our socket, take its credit grants.
fn frames_to_sock(
    ends: Out<'_>,
    rx: &mut dyn Frames,
    sock: &dyn Duplex,
    shared: &(Mutex<State>, Condvar),
    idle: Duration,
) -> u64 {
    let id = ends.id;
    let mut written = 0u64;
    let mut grants = Grants::default();
    let mut peer_done = false;
    loop {
        match rx.next_frame(TICK) {
            Ok(Frame::Data { bytes, .. }) => {
                if sock.write_all(&bytes).is_err() {
                    stop(ends, sock, shared, Some(AbortReason::ClientGone));
                    break;
                }
                written += bytes.len() as u64;
                lock(shared).last = Instant::now();
                if let Some(credit) = grants.consumed(id, bytes.len()) {
                    (ends.send)(credit);
                }
            }
            Ok(Frame::End { .. }) => {
                // Half-close: the other side sends nothing more.
                sock.shutdown(Shutdown::Write);
                peer_done = true;
            }
            Ok(Frame::Credit { bytes, .. }) => {
                lock(shared).credit += u64::from(bytes);
                shared.1.notify_all();
            }
            Ok(Frame::Abort { .. }) | Err(RecvTimeoutError::Disconnected) => {
                stop(ends, sock, shared, None);
                break;
            }
            // Nothing else travels in a tunnel.
            Ok(
                Frame::Open { .. }
                | Frame::Head { .. }
                | Frame::Ping { .. }
                | Frame::Pong { .. }
                | Frame::Stats { .. },
            )
            | Err(RecvTimeoutError::Timeout) => {}
        }
        let st = lock(shared);
        if st.stop || (peer_done && st.local_done) {
            break;
        }
        if st.last.elapsed() >= idle {
            drop(st);
            stop(ends, sock, shared, Some(AbortReason::Timeout));
            break;
        }
    }
    written
}
