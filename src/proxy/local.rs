//! The in-process transport of a lone mpiweb: a proxied request without a
//! body runs on its connection thread (`Inline`, no hand-off); every other
//! stream goes through the loopback world (`stream::loopback`) to the same
//! `Worker` that worker ranks run, through the same dispatcher tables and
//! frame codec as in a cluster.

use super::exchange::Req;
use super::inline::Inline;
use super::upstream::Pool;
use super::worker::{Side, Worker};
use crate::error::Error;
use crate::stream::dispatcher::Cmd;
use crate::stream::loopback::Loopback;
use crate::stream::transport::{Placed, Pull, Transport};
use crate::stream::wire::Frame;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

/// The in-process transport of a lone mpiweb.
pub struct Local {
    world: Loopback,
    /// The worker's upstream connections, shared with inline requests.
    pool: Arc<Pool>,
    upstream_timeout: Duration,
}

impl Local {
    /// `side` runs the streams that are not proxied requests (the store's).
    pub fn new(upstream_timeout: Duration, side: Option<Side>) -> Local {
        let mut pool = None;
        let world = Loopback::new(|out| {
            // Every stream is acknowledged, as on a worker rank: the
            // dispatcher takes the first credit for "taken".
            let worker = Worker::new(upstream_timeout, out, true, side);
            pool = Some(Arc::clone(worker.pool()));
            worker.runner()
        });
        let pool = pool.unwrap_or_else(|| Arc::new(Pool::new(upstream_timeout)));
        Local {
            world,
            pool,
            upstream_timeout,
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
        Ok(Box::new(Inline::new(
            Arc::clone(&self.pool),
            req,
            self.upstream_timeout,
        )))
    }

    fn open(&self, open: Frame, tx: Sender<Vec<Frame>>) -> Result<Placed, Error> {
        self.world.open(open, tx, None)
    }

    fn open_at(&self, rank: usize, open: Frame, tx: Sender<Vec<Frame>>) -> Result<Placed, Error> {
        self.world.open(open, tx, Some(rank))
    }

    fn send(&self, frame: Frame) {
        self.world.command(Cmd::Frame(frame));
    }

    /// Alone, rank 0 is its own worker.
    fn live_workers(&self) -> Vec<usize> {
        self.world.membership().live_workers()
    }

    fn workers(&self) -> Vec<usize> {
        self.world.membership().workers()
    }

    fn close(&self, id: u64, finished: bool) {
        self.world.command(Cmd::Close(id, finished));
    }
}
