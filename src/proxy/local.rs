//! The in-process transport of a lone mpiweb: the `Worker` that worker
//! ranks run, called directly instead of through MPI.

use super::exchange::Req;
use super::inline::Inline;
use super::worker::{Side, Worker};
use crate::error::Error;
use crate::stream::transport::{ends_stream, is_tunnel, Placed, Pull, Transport};
use crate::stream::wire::{AbortReason, Frame};
use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The in-process transport of a lone mpiweb: the same `Worker` the worker
/// ranks run, called directly instead of through MPI.
pub struct Local {
    worker: Arc<Worker>,
    upstream_timeout: Duration,
    /// Each stream's channel, and whether it is a tunnel.
    routes: Routes,
}

/// Each stream's channel, and whether it is a tunnel.
type Table = HashMap<u64, (Sender<Vec<Frame>>, bool)>;
type Routes = Arc<Mutex<Table>>;

/// The stream table. Poisoned, it is recovered: each change is one insert
/// or remove of a whole entry; skipping one would lose a stream's frames
/// (its client would wait for nothing) or leak its entry.
fn lock_routes(routes: &Routes) -> std::sync::MutexGuard<'_, Table> {
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

impl Local {
    /// `side` runs the streams that are not proxied requests (the store's).
    pub fn new(upstream_timeout: Duration, side: Option<Side>) -> Local {
        let routes: Routes = Arc::default();
        let back = Arc::clone(&routes);
        let out = move |batch: Vec<Frame>| {
            let Some(first) = batch.first() else { return };
            let id = first.id();
            let mut routes = lock_routes(&back);
            let Some((tx, tunnel)) = routes.get(&id) else {
                return;
            };
            let done = batch.iter().any(|f| ends_stream(f, *tunnel));
            let _ = tx.send(batch); // the connection may be gone: fine
            if done {
                routes.remove(&id);
            }
        };
        // In one process nothing needs a stream acknowledged.
        let worker = Worker::new(upstream_timeout, Arc::new(out), false, side);
        Local {
            worker,
            upstream_timeout,
            routes,
        }
    }
}

impl Transport for Local {
    /// A request without a body runs on the connection thread itself.
    fn pull(&self, open: Frame) -> Result<Box<dyn Pull>, Frame> {
        if open.opens_body() {
            return Err(open);
        }
        let req = Req::from_open(open)?;
        let pool = Arc::clone(self.worker.pool());
        Ok(Box::new(Inline::new(pool, req, self.upstream_timeout)))
    }

    fn open(&self, open: Frame, tx: Sender<Vec<Frame>>) -> Result<Placed, Error> {
        let tunnel = is_tunnel(&open);
        lock_routes(&self.routes).insert(open.id(), (tx, tunnel));
        self.worker.deliver(open);
        Ok(Placed::default())
    }

    fn send(&self, frame: Frame) {
        self.worker.deliver(frame);
    }

    fn open_at(&self, _rank: usize, open: Frame, tx: Sender<Vec<Frame>>) -> Result<Placed, Error> {
        self.open(open, tx)
    }

    /// Alone, rank 0 is its own worker.
    fn live_workers(&self) -> Vec<usize> {
        vec![0]
    }

    fn workers(&self) -> Vec<usize> {
        vec![0]
    }

    fn close(&self, id: u64, finished: bool) {
        lock_routes(&self.routes).remove(&id);
        if !finished {
            self.worker.deliver(Frame::Abort {
                id,
                reason: AbortReason::ClientGone,
            });
        }
    }
}
