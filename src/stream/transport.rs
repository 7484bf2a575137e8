//! The seam between rank 0's connection threads and whoever runs streams:
//! worker ranks over MPI (`cluster`), or this very process
//! (`proxy::Local`). A connection thread opens a `Stream`, sends frames
//! and receives the frames that come back for its stream id.

use super::wire::{Frame, Service};
use crate::error::Error;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

/// Where a relay's frames come from: a stream's channel on either side.
pub trait Frames {
    fn next_frame(&mut self, timeout: Duration) -> Result<Frame, RecvTimeoutError>;
}

impl Frames for &Receiver<Frame> {
    fn next_frame(&mut self, timeout: Duration) -> Result<Frame, RecvTimeoutError> {
        self.recv_timeout(timeout)
    }
}

/// Where a runner's frames go, a batch at a time: frames of one stream
/// that are ready together travel together (a small answer's head, body
/// and end wake its connection thread once).
pub type Out = Arc<dyn Fn(Vec<Frame>) + Send + Sync>;

/// What a worker rank runs: every frame from rank 0 goes in through
/// `deliver`; answers go out through the `Out` it was made with. Cluster
/// drives one without knowing what it serves (proxied requests, store
/// operations, statistics).
pub trait Runner: Send + Sync {
    /// Take one frame from rank 0 (never blocks on upstream work).
    fn deliver(&self, frame: Frame);
    /// Streams running now.
    fn in_flight(&self) -> usize;
}

/// A stream run on the thread that receives it: each `pull` does the next
/// step of the work and gives the frames it made, or waits at most
/// `timeout` (`Timeout`: nothing yet, ask again). Nothing is sent to it:
/// it reads its source only when asked, so it needs no credit, and
/// dropping it before its end stops the work.
pub trait Pull: Send {
    fn pull(&mut self, timeout: Duration) -> Result<Vec<Frame>, RecvTimeoutError>;
}

/// Carries frames between connection threads and the request runners.
pub trait Transport: Send + Sync {
    /// Run stream `open` on the calling thread as a `Pull`, when this
    /// transport can (a lone process's request without a body: no hand-off
    /// to any other thread); `open` comes back when it cannot.
    fn pull(&self, open: Frame) -> Result<Box<dyn Pull>, Frame> {
        Err(open)
    }
    /// Start stream `open.id()`: its frames come on `tx` from now on, in
    /// batches. The transport forgets a stream by itself after its `End`
    /// or `Abort`, except a tunnel's (its `End` is a half-close). Returns
    /// the rank that runs it (this one, 0, in a lone process), which the
    /// transport changes if it moves the stream to another rank.
    fn open(&self, open: Frame, tx: Sender<Vec<Frame>>) -> Result<Placed, Error>;
    /// Send a frame of an open stream.
    fn send(&self, frame: Frame);
    /// Forget stream `id`; unless it `finished`, its runner is told to stop.
    fn close(&self, id: u64, finished: bool);
    /// Start a stream on worker `rank` itself (a store replica). If that
    /// rank stalls or leaves the rotation, the stream ends with an `Abort`
    /// (`Refused`) instead of moving to another rank.
    fn open_at(&self, rank: usize, open: Frame, tx: Sender<Vec<Frame>>) -> Result<Placed, Error>;
    /// The ranks that run streams and answer heartbeats now, in order.
    fn live_workers(&self) -> Vec<usize>;
    /// Every rank that runs streams, live or not.
    fn workers(&self) -> Vec<usize>;
    /// The workers taken for dead (silent for long): never back unless
    /// they answer again.
    fn dead_workers(&self) -> Vec<usize> {
        Vec::new()
    }
    /// Spare ranks not called in yet (`--spares`): idle, in no rotation.
    fn spare_workers(&self) -> Vec<usize> {
        Vec::new()
    }
    /// How many times a new process was spawned in dead `rank`'s place.
    fn replaced(&self, _rank: usize) -> u32 {
        0
    }
}

/// The rank a stream runs on, as its transport placed it (and moved it).
pub type Placed = Arc<AtomicUsize>;

/// Stream ids are unique within rank 0's life.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Where a stream's frames come from.
enum Source {
    /// Another thread sends them.
    Channel(Receiver<Vec<Frame>>),
    /// This thread makes them, when it asks.
    Pull(Box<dyn Pull>),
}

/// One request's frames, seen from rank 0. Dropping it closes the stream.
pub struct Stream {
    pub id: u64,
    /// The rank that runs it (`None`: this one, pulled here).
    placed: Option<Placed>,
    source: Source,
    /// Frames of the last batch not taken yet.
    queue: VecDeque<Frame>,
    transport: Arc<dyn Transport>,
    /// The other side sent `End` (or the stream needs no more frames).
    pub finished: bool,
    tunnel: bool,
}

impl Stream {
    /// Open a stream with the `Open` frame `make` builds for a new id.
    pub fn open(
        transport: &Arc<dyn Transport>,
        make: impl FnOnce(u64) -> Frame,
    ) -> Result<Stream, Error> {
        Stream::start(transport, None, make)
    }

    /// Open a stream on worker `rank` (see `Transport::open_at`).
    pub fn open_at(
        transport: &Arc<dyn Transport>,
        rank: usize,
        make: impl FnOnce(u64) -> Frame,
    ) -> Result<Stream, Error> {
        Stream::start(transport, Some(rank), make)
    }

    fn start(
        transport: &Arc<dyn Transport>,
        rank: Option<usize>,
        make: impl FnOnce(u64) -> Frame,
    ) -> Result<Stream, Error> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let open = make(id);
        let tunnel = is_tunnel(&open);
        let open = match rank {
            Some(_) => Err(open),
            None => transport.pull(open),
        };
        let (source, placed) = match open {
            // Pulled on this very thread, of rank 0.
            Ok(pull) => (Source::Pull(pull), None),
            Err(open) => {
                let (tx, rx) = channel();
                let placed = match rank {
                    Some(rank) => transport.open_at(rank, open, tx)?,
                    None => transport.open(open, tx)?,
                };
                (Source::Channel(rx), Some(placed))
            }
        };
        Ok(Stream {
            id,
            placed,
            source,
            queue: VecDeque::new(),
            transport: Arc::clone(transport),
            finished: false,
            tunnel,
        })
    }

    /// Send `frame` to whoever runs the stream. A pulled stream takes
    /// nothing: it reads its source only when asked, so credit is moot.
    /// The rank that runs it now.
    pub fn rank(&self) -> usize {
        self.placed
            .as_ref()
            .map_or(0, |p| p.load(Ordering::Relaxed))
    }

    pub fn send(&self, frame: Frame) {
        match &self.source {
            Source::Channel(_) => self.transport.send(frame),
            Source::Pull(_) => {}
        }
    }

    /// The next frame, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Frame, Error> {
        self.next_frame(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => Error::UpstreamTimeout,
            RecvTimeoutError::Disconnected => Error::UpstreamBroken("worker gone"),
        })
    }

    /// The next frame if one is waiting.
    pub fn try_recv(&mut self) -> Option<Result<Frame, Error>> {
        if self.queue.is_empty() {
            // A pulled stream has only what its last pull made.
            let Source::Channel(rx) = &self.source else {
                return None;
            };
            match rx.try_recv() {
                Ok(batch) => self.queue.extend(batch),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => {
                    return Some(Err(Error::UpstreamBroken("worker gone")))
                }
            }
        }
        let frame = self.queue.pop_front()?;
        Some(Ok(self.note(frame)))
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    fn note(&mut self, frame: Frame) -> Frame {
        // Any frame that ends a stream for the transport (a tunnel's
        // half-close `End` included: its `Drop` closes it anyway).
        if ends_stream(&frame, false) {
            self.finished = true;
        }
        frame
    }
}

impl Frames for Stream {
    fn next_frame(&mut self, timeout: Duration) -> Result<Frame, RecvTimeoutError> {
        if self.queue.is_empty() {
            let batch = match &mut self.source {
                Source::Channel(rx) => rx.recv_timeout(timeout)?,
                Source::Pull(pull) => pull.pull(timeout)?,
            };
            self.queue.extend(batch);
        }
        let frame = self.queue.pop_front().ok_or(RecvTimeoutError::Timeout)?;
        Ok(self.note(frame))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // A finished stream was forgotten by the transport already; a
        // pulled one stops as it is dropped.
        if matches!(self.source, Source::Channel(_)) && (!self.finished || self.tunnel) {
            self.transport.close(self.id, self.finished);
        }
    }
}

/// Whether `open` starts a CONNECT tunnel.
pub fn is_tunnel(open: &Frame) -> bool {
    matches!(open, Frame::Open { service: Service::Proxy(req), .. } if req.method == b"CONNECT")
}

/// Whether `frame` ends a stream for the transport: `End` for anything but
/// a tunnel, and `Abort`.
pub fn ends_stream(frame: &Frame, tunnel: bool) -> bool {
    match frame {
        Frame::End { .. } => !tunnel,
        Frame::Abort { .. } | Frame::Stats { .. } => true,
        Frame::Open { .. }
        | Frame::Head { .. }
        | Frame::Data { .. }
        | Frame::Credit { .. }
        | Frame::Ping { .. }
        | Frame::Pong { .. } => false,
    }
}
