//! What a worker does with the frames it gets: each `Open` becomes one
//! exchange with an upstream, run on a pool thread; later frames of the
//! stream are handed to that thread. Frames back go to `out`, which is
//! the MPI thread's queue on a worker rank and the connection thread's
//! channel in a lone process.

use super::exchange::{
    connect_failure, head_frame, log_abort, may_resend, read_final_head, Failure, Opened, Req,
    READ_BUF,
};
use super::replay::Replay;
use super::tunnel;
use super::upstream::{Conn, Pool};
use crate::config;
use crate::http::body::BodyFraming;
use crate::http::encode::ChunkedWriter;
use crate::http::response_head::ResponseHead;
use crate::stream::credit::{Receiving, Sending, Stopped, WorkerEnds, WINDOW};
use crate::stream::threads::Threads;
use crate::stream::transport::{is_tunnel, Runner};
use crate::stream::wire::{AbortReason, Frame, Service};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::stream::transport::Out;

/// Runs a stream that is not a proxied request (a store operation): its
/// first frame, the later frames of the stream, and where answers go.
pub type Side = Arc<dyn Fn(Frame, &Receiver<Frame>, &Out) + Send + Sync>;

/// How long a runner waits for the rank-0 side (body pieces, credit)
/// before it gives up: past the send timeout, rank 0 has given up too.
const DOWNSTREAM_WAIT: Duration = Duration::from_secs(config::SEND_TIMEOUT.as_secs() + 10);

/// The shared part of every exchange.
pub struct Ctx {
    pub pool: Arc<Pool>,
    pub out: Out,
    /// The upstream socket of each running exchange, so that an abort
    /// from rank 0 can cut a read or write that is blocked on it.
    sockets: Mutex<HashMap<u64, TcpStream>>,
}

impl Ctx {
    /// Send one frame.
    pub fn send(&self, frame: Frame) {
        (self.out)(vec![frame]);
    }

    /// The sockets table. Poisoned, it is recovered: each change is one
    /// insert or remove of a whole entry, so the map stays consistent.
    fn sockets(&self) -> std::sync::MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.sockets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Let an abort of stream `id` cut `conn`.
    pub fn watch(&self, id: u64, conn: &TcpStream) {
        match conn.try_clone() {
            Ok(clone) => {
                self.sockets().insert(id, clone);
            }
            // Without a second handle an abort cannot cut a blocked read;
            // the upstream timeout still ends it.
            Err(e) => log::warn!("stream {id}: cannot watch its upstream socket: {e}"),
        }
    }

    /// Whether stream `id` still has its socket watched: an abort from
    /// rank 0 takes it away when it cuts it.
    fn is_watched(&self, id: u64) -> bool {
        self.sockets().contains_key(&id)
    }

    fn unwatch(&self, id: u64) {
        self.sockets().remove(&id);
    }

    fn interrupt(&self, id: u64) {
        let sock = self.sockets().remove(&id);
        if let Some(sock) = sock {
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The streams one worker runs.
pub struct Worker {
    streams: Mutex<HashMap<u64, Sender<Frame>>>,
    ctx: Arc<Ctx>,
    threads: Threads,
    /// Acknowledge every stream with a first credit (rank 0's dispatcher
    /// needs it to know which streams a stalled worker had taken), not only
    /// those that carry a body.
    ack_all: bool,
    side: Option<Side>,
}

impl Worker {
    pub fn new(
        upstream_timeout: Duration,
        out: Out,
        ack_all: bool,
        side: Option<Side>,
    ) -> Arc<Worker> {
        Arc::new(Worker {
            streams: Mutex::new(HashMap::new()),
            ctx: Arc::new(Ctx {
                pool: Arc::new(Pool::new(upstream_timeout)),
                out,
                sockets: Mutex::new(HashMap::new()),
            }),
            threads: Threads::new(),
            ack_all,
            side,
        })
    }

    /// Run `first` on a pool thread with its stream's later frames.
    fn spawn(
        self: &Arc<Self>,
        first: Frame,
        run: impl FnOnce(Frame, &Receiver<Frame>, &Ctx) + Send + 'static,
    ) {
        let id = first.id();
        let (tx, rx) = channel();
        self.streams().insert(id, tx);
        let me = Arc::clone(self);
        self.threads.run(move || {
            run(first, &rx, &me.ctx);
            me.ctx.unwatch(id);
            me.streams().remove(&id);
        });
    }

    /// Take one frame from rank 0.
    pub fn deliver(self: &Arc<Self>, frame: Frame) {
        match frame {
            Frame::Open {
                id,
                service: Service::Proxy(_),
            } => {
                // The first credit says the request was taken; it also
                // opens the window for the request body (or a tunnel).
                if self.ack_all || frame.opens_body() || is_tunnel(&frame) {
                    self.ctx.send(Frame::Credit { id, bytes: WINDOW });
                }
                self.spawn(frame, run);
            }
            Frame::Open {
                id,
                service: Service::Store { .. },
            } => match self.side.clone() {
                Some(side) => self.spawn(frame, move |f, rx, ctx| side(f, rx, &ctx.out)),
                None => self.ctx.send(Frame::Abort {
                    id,
                    reason: AbortReason::Refused,
                }),
            },
            Frame::Open {
                id,
                service: Service::Stats,
            } => self.ctx.send(Frame::Stats {
                id,
                body: crate::metrics::global().snapshot(0).encode(),
            }),
            Frame::Ping { id } => self.ctx.send(Frame::Pong { id }),
            // Answers travel the other way: nothing here waits for them.
            Frame::Pong { .. } | Frame::Stats { .. } => {}
            other @ (Frame::Head { .. }
            | Frame::Data { .. }
            | Frame::End { .. }
            | Frame::Abort { .. }
            | Frame::Credit { .. }) => {
                let id = other.id();
                let abort = matches!(other, Frame::Abort { .. });
                let tx = self.streams().get(&id).cloned();
                if let Some(tx) = tx {
                    let _ = tx.send(other); // the runner may just have ended
                }
                if abort {
                    // The runner may be blocked on its upstream: cut it.
                    // (The abort is queued first, so the runner knows why.)
                    self.ctx.interrupt(id);
                }
            }
        }
    }

    /// The upstream connections this worker keeps.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.ctx.pool
    }

    /// Streams running now.
    pub fn in_flight(&self) -> usize {
        self.streams().len()
    }

    /// This worker as what a worker rank's loop drives.
    pub fn runner(self: Arc<Self>) -> Box<dyn Runner> {
        Box::new(Running(self))
    }

    /// The table of running streams. Poisoned, it is recovered: each
    /// change is one insert or remove of a whole entry, so the map stays
    /// consistent, and skipping one would lose a stream's frames.
    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Sender<Frame>>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A worker behind the `Runner` seam.
struct Running(Arc<Worker>);

impl Runner for Running {
    fn deliver(&self, frame: Frame) {
        self.0.deliver(frame);
    }

    fn in_flight(&self) -> usize {
        self.0.in_flight()
    }
}

/// Run the stream that `open` starts, to its end.
fn run(open: Frame, rx: &Receiver<Frame>, ctx: &Ctx) {
    let Some(opened) = Opened::from_frame(open) else {
        return;
    };
    let t0 = std::time::Instant::now();
    let metrics = crate::metrics::streams();
    let _counted = metrics.map(|m| m.begin());
    let (id, authority, result) = match opened {
        Opened::Tunnel { id, authority } => {
            let done = tunnel::open_upstream(id, &authority, rx, ctx).map(|()| (200, 0));
            (id, authority, done.map_err(Failure::from))
        }
        Opened::Request(req) => {
            let done = exchange(&req, rx, ctx);
            (req.id, req.authority, done)
        }
        Opened::Refused { id } => (id, String::new(), Err(Failure::Abort(AbortReason::Refused))),
    };
    // A failure caused by rank 0's own abort (it cut the upstream socket)
    // is no upstream's fault: say nothing.
    let result = match result {
        Err(Failure::Abort(_)) if rx.try_iter().any(|f| matches!(f, Frame::Abort { .. })) => {
            Err(Failure::Quiet)
        }
        other => other,
    };
    // What this rank did: the upstream's status, or the one the client
    // will get for the failure.
    let (status, bytes) = match &result {
        Ok(done) => *done,
        Err(Failure::Abort(reason)) => (reason.gateway_error("").status().unwrap_or(502), 0),
        Err(Failure::Quiet) => (502, 0),
    };
    if let Some(m) = metrics {
        m.record(status, bytes, t0.elapsed());
    }
    match result {
        Ok(_) => {}
        Err(Failure::Abort(reason)) => {
            log_abort(&authority, reason);
            ctx.send(Frame::Abort { id, reason });
        }
        Err(Failure::Quiet) => {}
    }
}

/// One request and its answer: the answer's status and body bytes.
fn exchange(req: &Req, rx: &Receiver<Frame>, ctx: &Ctx) -> Result<(u16, u64), Failure> {
    let mut conn = ctx.pool.get(&req.authority).map_err(connect_failure)?;
    ctx.watch(req.id, conn.stream());
    // A body sent on a reused connection is kept (within the replay
    // budget), to be sent again if that connection proves stale.
    let keep = match conn.reused && req.framing != BodyFraming::None {
        true => config::REPLAY_LIMIT,
        false => 0,
    };
    let ends = WorkerEnds {
        id: req.id,
        rx,
        out: &ctx.out,
    };
    let mut body = Upload {
        body: Receiving::new(ends, DOWNSTREAM_WAIT),
        replay: Replay::new(keep),
        resend: Vec::new(),
        ended: false,
    };
    let (head, clean) = loop {
        match send_and_read_head(&mut conn, req, &mut body) {
            // Rank 0 aborted the stream (its client left) and cut the
            // socket: that failure is ours, and nothing is sent again.
            Err(Failure::Abort(_)) if !ctx.is_watched(req.id) => return Err(Failure::Quiet),
            Err(f) if may_resend(&f, &conn) && body.replay.is_whole() => {
                log::debug!(
                    "upstream {}: reused connection failed before answering; sending again",
                    req.authority
                );
                body.rewind();
                conn = ctx.pool.connect(&req.authority).map_err(connect_failure)?;
                ctx.watch(req.id, conn.stream());
            }
            other => break other?,
        }
    };
    let id = req.id;
    let first = head_frame(id, &head);
    let mut bytes = 0;
    match head.framing {
        BodyFraming::None => (ctx.out)(vec![first, Frame::End { id }]),
        BodyFraming::Length(_) | BodyFraming::Chunked | BodyFraming::UntilClose => {
            let ends = WorkerEnds {
                id,
                rx,
                out: &ctx.out,
            };
            bytes = relay_body(&mut conn, &head, ends, vec![first])?;
        }
    }
    ctx.unwatch(id); // before the connection serves anyone else
    if clean && head.keep_alive {
        ctx.pool.put(conn);
    }
    Ok((head.status, bytes))
}

/// Send the head and body, then read the final response head (interim 1xx
/// answers are skipped: the client's `100-continue` was answered by rank
/// 0). Also says whether the whole request went out.
fn send_and_read_head(
    conn: &mut Conn,
    req: &Req,
    body: &mut Upload<'_>,
) -> Result<(ResponseHead, bool), Failure> {
    conn.send_head(req.method, &req.target, &req.fields, req.framing)?;
    // If the upstream stops reading the body, it may still have answered
    // (a 413, say): the head is read either way.
    let sent = match req.framing {
        BodyFraming::None | BodyFraming::UntilClose => true,
        BodyFraming::Length(_) => body.send(conn.stream())?,
        BodyFraming::Chunked => body.send(ChunkedWriter::new(conn.stream()))?,
    };
    Ok((read_final_head(conn, req.method)?, sent))
}

/// A writer that ends a body when it is done.
trait BodyWriter: Write {
    fn end(self) -> std::io::Result<()>;
}

impl BodyWriter for &TcpStream {
    fn end(self) -> std::io::Result<()> {
        Ok(())
    }
}

impl BodyWriter for ChunkedWriter<&TcpStream> {
    fn end(self) -> std::io::Result<()> {
        self.finish().map(|_| ())
    }
}

/// The request body as it comes from rank 0, with what was read of it kept
/// for a second sending.
struct Upload<'a> {
    body: Receiving<WorkerEnds<'a>>,
    replay: Replay,
    /// Bytes taken from rank 0 already, to be written again first.
    resend: Vec<u8>,
    /// Rank 0 sent the body's end.
    ended: bool,
}

impl Upload<'_> {
    /// Start the body over: what was kept goes out again before the rest.
    fn rewind(&mut self) {
        self.resend = self.replay.take();
    }

    /// Copy the body to the upstream, granting credit as it is written.
    /// `Ok(false)`: the upstream stopped taking it.
    fn send<W: BodyWriter>(&mut self, mut w: W) -> Result<bool, Failure> {
        if w.write_all(&std::mem::take(&mut self.resend)).is_err() {
            return Ok(false);
        }
        while !self.ended {
            match self.body.next_piece() {
                Ok(Some(bytes)) => {
                    self.replay.keep(&bytes);
                    if w.write_all(&bytes).is_err() {
                        return Ok(false);
                    }
                }
                Ok(None) => self.ended = true,
                Err(Stopped::Aborted(_) | Stopped::Gone | Stopped::Answered) => {
                    return Err(Failure::Quiet)
                }
                Err(Stopped::TimedOut) => return Err(Failure::Abort(AbortReason::ClientGone)),
            }
        }
        Ok(w.end().is_ok())
    }
}

/// Send the response body to rank 0 in pieces, never more than the credit
/// it granted, reading the upstream only that far. `first` (the head) goes
/// out with the first piece, and the last piece with the `End`. Returns
/// the bytes sent.
fn relay_body(
    conn: &mut Conn,
    head: &ResponseHead,
    ends: WorkerEnds<'_>,
    first: Vec<Frame>,
) -> Result<u64, Failure> {
    let mut sending = Sending::answer_batched(ends, first, DOWNSTREAM_WAIT);
    let mut sent = 0u64;
    let mut body = conn.body(head)?;
    READ_BUF.with_borrow_mut(|buf| loop {
        let want = sending.room().map_err(|stopped| match stopped {
            Stopped::TimedOut => Failure::Abort(AbortReason::ClientGone),
            Stopped::Aborted(_) | Stopped::Gone | Stopped::Answered => Failure::Quiet,
        })?;
        // Mid-body, a timeout and a cut connection end the same way: the
        // client's message is cut short too.
        let Ok(n) = body.read(&mut buf[..want]) else {
            return Err(Failure::Abort(AbortReason::BadUpstream));
        };
        sent += n as u64;
        let last = n == 0 || body.is_done();
        match (n, last) {
            (0, _) => {}
            (_, true) => sending.send_last_piece(buf[..n].to_vec()),
            (_, false) => sending.send_piece(buf[..n].to_vec()),
        }
        if last {
            sending.finish();
            return Ok(sent);
        }
    })
}
