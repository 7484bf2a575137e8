//! What rank 0 keeps for the store and shares between connection threads
//! and the repair thread: the catalog, the version clock, readiness, and
//! the write path that puts a version on its replicas.

use super::catalog::{Catalog, Entry};
use super::ops;
use super::placement;
use crate::config;
use crate::error::Error;
use crate::proxy::wire::DocMeta;
use crate::proxy::Transport;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a store request waits for rank 0 to learn what the replicas
/// hold, at start-up.
const READY_WAIT: Duration = Duration::from_secs(30);

pub struct State {
    pub transport: Arc<dyn Transport>,
    /// Copies of each document.
    pub replicas: usize,
    catalog: RwLock<Catalog>,
    ready: Mutex<bool>,
    ready_cv: Condvar,
    /// The last version given out.
    clock: Mutex<u64>,
    /// Document bytes held in memory (bodies on their way to replicas).
    held: AtomicUsize,
    /// Where reads start among a document's holders.
    turn: AtomicUsize,
}

impl State {
    pub fn new(transport: Arc<dyn Transport>, replicas: usize) -> State {
        State {
            transport,
            replicas: replicas.max(1),
            catalog: RwLock::default(),
            ready: Mutex::new(false),
            ready_cv: Condvar::new(),
            clock: Mutex::new(0),
            held: AtomicUsize::new(0),
            turn: AtomicUsize::new(0),
        }
    }

    pub fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn catalog_mut(&self) -> RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Rank 0 knows what the replicas hold: store requests may run.
    pub fn set_ready(&self) {
        let max = self.catalog().max_version();
        self.seen_version(max);
        *self.ready.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.ready_cv.notify_all();
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until the store is ready; 503 if that takes too long.
    pub fn wait_ready(&self) -> Result<(), Error> {
        let ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        let (ready, _) = self
            .ready_cv
            .wait_timeout_while(ready, READY_WAIT, |r| !*r)
            .unwrap_or_else(|e| e.into_inner());
        match *ready {
            true => Ok(()),
            false => Err(Error::Overloaded),
        }
    }

    /// A version some replica holds: later versions must be larger.
    pub fn seen_version(&self, version: u64) {
        let mut c = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        *c = (*c).max(version);
    }

    /// The version of a new write: larger than any before, and close to
    /// the time in microseconds, so that versions keep growing across
    /// restarts even if a replica is read late.
    pub fn next_version(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut c = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        *c = (*c + 1).max(now);
        *c
    }

    /// Hold `n` more document bytes in memory, within the budget.
    pub fn hold(self: &Arc<Self>, n: usize) -> Result<Hold, Error> {
        let mut h = Hold {
            state: Arc::clone(self),
            bytes: 0,
        };
        h.grow(n)?;
        Ok(h)
    }

    /// The ranks that should hold `path`, best first, with stand-ins after.
    pub fn ranking(&self, path: &[u8]) -> Vec<usize> {
        placement::ranking(path, &self.transport.workers())
    }

    /// Copies each document should have: at most one per worker.
    pub fn copies(&self) -> usize {
        self.replicas.min(self.transport.workers().len()).max(1)
    }

    /// Put a version on its replicas: the first `copies()` live ranks of
    /// its ranking, all at once; a rank that fails or stalls is replaced by
    /// the next one. Returns the ranks that have it on disk; 503 if none.
    pub fn write(&self, path: &[u8], meta: &DocMeta, body: &[u8]) -> Result<Vec<usize>, Error> {
        let ranking = self.ranking(path);
        let n = self.copies();
        let mut tried = Vec::new();
        let mut acked = Vec::new();
        let mut waiting = VecDeque::new();
        loop {
            let live = self.transport.live_workers();
            while acked.len() + waiting.len() < n {
                let next = ranking
                    .iter()
                    .copied()
                    .find(|r| !tried.contains(r) && live.contains(r));
                let Some(rank) = next else { break };
                tried.push(rank);
                match ops::start_put(&self.transport, rank, path, meta, body) {
                    Ok(stream) => waiting.push_back((rank, stream)),
                    Err(e) => log::info!("store: rank {rank} cannot take a write: {e}"),
                }
            }
            let Some((rank, stream)) = waiting.pop_front() else {
                break;
            };
            match ops::finish_put(stream) {
                Ok(()) => acked.push(rank),
                Err(e) => log::info!(
                    "store: write of {} to rank {rank} failed ({e}); trying the next rank",
                    String::from_utf8_lossy(path)
                ),
            }
        }
        if acked.is_empty() {
            log::warn!(
                "store: no replica could take {}",
                String::from_utf8_lossy(path)
            );
            return Err(Error::Overloaded);
        }
        Ok(acked)
    }

    /// The body of a document's newest version, `len` bytes from
    /// `offset`, from a live replica that holds it.
    pub fn fetch(
        &self,
        path: &[u8],
        entry: &Entry,
        offset: u64,
        len: u64,
    ) -> Result<ops::DocBody, Error> {
        let live = self.transport.live_workers();
        let mut holders: Vec<usize> = entry.holders().filter(|r| live.contains(r)).collect();
        if !holders.is_empty() {
            let start = self.turn.fetch_add(1, Ordering::Relaxed) % holders.len();
            holders.rotate_left(start);
        }
        for rank in holders {
            match ops::read(&self.transport, rank, path, entry.meta.version) {
                Ok(Some(body)) => return Ok(body.range(offset, len)),
                Ok(None) => log::info!(
                    "store: rank {rank} no longer has version {:x} of {}",
                    entry.meta.version,
                    String::from_utf8_lossy(path)
                ),
                Err(e) => log::info!("store: read from rank {rank} failed: {e}"),
            }
        }
        log::warn!(
            "store: no live replica has {}",
            String::from_utf8_lossy(path)
        );
        Err(Error::Overloaded)
    }
}

/// Document bytes counted against `config::STORE_BUDGET` while held.
pub struct Hold {
    state: Arc<State>,
    bytes: usize,
}

impl Hold {
    /// Hold `n` bytes more; 503 beyond the budget.
    pub fn grow(&mut self, n: usize) -> Result<(), Error> {
        let all = self.state.held.fetch_add(n, Ordering::Relaxed) + n;
        if all > config::STORE_BUDGET {
            self.state.held.fetch_sub(n, Ordering::Relaxed);
            return Err(Error::Overloaded);
        }
        self.bytes += n;
        Ok(())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.state.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}
