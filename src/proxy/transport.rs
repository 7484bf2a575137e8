//! The seam between rank 0's connection threads and whoever runs proxied
//! requests: worker ranks over MPI (`cluster::Dispatcher`), or this very
//! process (`Local`). A connection thread opens a `Stream`, sends frames
//! and receives the frames that come back for its stream id.

use super::wire::{AbortReason, Frame};
use super::worker::Worker;
use crate::error::Error;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bytes a receiver lets a sender have in flight on one stream, in each
/// direction. Small enough that a 10 GiB body needs a few MiB on any rank;
/// large enough to keep a loopback transfer busy between two grants.
pub const WINDOW: u32 = 4 << 20;
/// A receiver grants credit again once it has written this much.
pub const GRANT_EVERY: u64 = (WINDOW / 4) as u64;
/// Largest body piece a sender puts in one `Data` frame.
pub const CHUNK: usize = 256 * 1024;

/// Carries frames between connection threads and the request runners.
pub trait Transport: Send + Sync {
    /// Start stream `open.id()`: frames for it are sent on `tx` from now on.
    fn open(&self, open: Frame, tx: Sender<Frame>) -> Result<(), Error>;
    /// Send a frame of an open stream.
    fn send(&self, frame: Frame);
    /// Forget stream `id`; unless it `finished`, its runner is told to stop.
    fn close(&self, id: u64, finished: bool);
}

/// Stream ids are unique within rank 0's life.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One request's frames, seen from rank 0. Dropping it closes the stream.
pub struct Stream {
    pub id: u64,
    rx: Receiver<Frame>,
    transport: Arc<dyn Transport>,
    /// The other side sent `End` (or the stream needs no more frames).
    pub finished: bool,
}

impl Stream {
    /// Open a stream with the `Open` frame `make` builds for a new id.
    pub fn open(
        transport: &Arc<dyn Transport>,
        make: impl FnOnce(u64) -> Frame,
    ) -> Result<Stream, Error> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = channel();
        transport.open(make(id), tx)?;
        Ok(Stream {
            id,
            rx,
            transport: Arc::clone(transport),
            finished: false,
        })
    }

    pub fn send(&self, frame: Frame) {
        self.transport.send(frame);
    }

    /// The next frame, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Frame, Error> {
        match self.rx.recv_timeout(timeout) {
            Ok(frame) => Ok(self.note(frame)),
            Err(RecvTimeoutError::Timeout) => Err(Error::UpstreamTimeout),
            Err(RecvTimeoutError::Disconnected) => Err(Error::UpstreamBroken("worker gone")),
        }
    }

    /// The next frame if one is waiting.
    pub fn try_recv(&mut self) -> Option<Result<Frame, Error>> {
        match self.rx.try_recv() {
            Ok(frame) => Some(Ok(self.note(frame))),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(Error::UpstreamBroken("worker gone"))),
        }
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The frame receiver, for a tunnel's relay.
    pub fn receiver(&self) -> &Receiver<Frame> {
        &self.rx
    }

    fn note(&mut self, frame: Frame) -> Frame {
        if matches!(frame, Frame::End { .. } | Frame::Abort { .. }) {
            self.finished = true;
        }
        frame
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.transport.close(self.id, self.finished);
    }
}

/// The error a client gets for an aborted stream.
pub fn abort_error(reason: AbortReason, upstream: &str) -> Error {
    match reason {
        AbortReason::Unreachable => Error::UpstreamUnreachable(upstream.to_string()),
        AbortReason::Timeout => Error::UpstreamTimeout,
        AbortReason::BadUpstream => Error::UpstreamBroken("broken upstream response"),
        AbortReason::Refused => Error::Overloaded,
        AbortReason::ClientGone => Error::UpstreamBroken("stream aborted"),
    }
}

/// The in-process transport of a lone mpiweb: the same `Worker` the worker
/// ranks run, called directly instead of through MPI.
pub struct Local {
    worker: Arc<Worker>,
    routes: Arc<Mutex<HashMap<u64, Sender<Frame>>>>,
}

impl Local {
    pub fn new(upstream_timeout: Duration) -> Local {
        let routes: Arc<Mutex<HashMap<u64, Sender<Frame>>>> = Arc::default();
        let back = Arc::clone(&routes);
        let worker = Worker::new(
            upstream_timeout,
            Arc::new(move |frame: Frame| {
                let tx = back.lock().ok().and_then(|r| r.get(&frame.id()).cloned());
                if let Some(tx) = tx {
                    let _ = tx.send(frame); // the connection may be gone: fine
                }
            }),
        );
        Local { worker, routes }
    }
}

impl Transport for Local {
    fn open(&self, open: Frame, tx: Sender<Frame>) -> Result<(), Error> {
        self.routes
            .lock()
            .map_err(|_| Error::Internal("stream table poisoned".into()))?
            .insert(open.id(), tx);
        self.worker.deliver(open);
        Ok(())
    }

    fn send(&self, frame: Frame) {
        self.worker.deliver(frame);
    }

    fn close(&self, id: u64, finished: bool) {
        if let Ok(mut routes) = self.routes.lock() {
            routes.remove(&id);
        }
        if !finished {
            self.worker.deliver(Frame::Abort {
                id,
                reason: AbortReason::ClientGone,
            });
        }
    }
}
