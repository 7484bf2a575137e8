//! What rank 0 keeps for the store and shares between connection threads
//! and the repair thread: the catalog, the version clock, readiness, and
//! the write path that puts a version on its replicas.

use super::catalog::{Catalog, Entry};
use super::ops;
use super::placement;
use crate::config;
use crate::error::Error;
use crate::stream::transport::Transport;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a store request waits for rank 0 to learn what the replicas
/// hold, at start-up.
const READY_WAIT: Duration = Duration::from_secs(30);

/// Every lock here is recovered when poisoned, for one reason: each holds
/// plain values changed in single steps (a counter, a flag, one map entry,
/// the catalog's per-path records), never user code, so a panic elsewhere
/// leaves them whole; refusing every later store request would serve no
/// one, and the repair thread re-reads the replicas' inventories anyway.
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
    cache: Cache,
    /// Writes take their path's stripe, so that writes to one path are
    /// numbered and made one after the other.
    stripes: Vec<Mutex<()>>,
}

/// Bodies of small documents on rank 0, each for one version: a read of
/// the newest version is served from memory, and a newer write makes the
/// old body useless by its version alone (it is also removed then).
/// Its lock is recovered when poisoned (see `State`).
struct Cache {
    limit: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    docs: HashMap<Vec<u8>, (u64, Arc<[u8]>)>,
    bytes: usize,
}

impl Cache {
    fn get(&self, path: &[u8], version: u64) -> Option<Arc<[u8]>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.docs.get(path) {
            Some((v, body)) if *v == version => Some(Arc::clone(body)),
            _ => None,
        }
    }

    fn put(&self, path: &[u8], version: u64, body: Arc<[u8]>) {
        if body.len() as u64 > config::STORE_CACHE_MAX_DOC || body.len() > self.limit {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.docs.get(path).is_some_and(|(v, _)| *v > version) {
            return; // a newer version is here already
        }
        // Make room: drop entries in the map's (arbitrary) order.
        while inner.bytes + body.len() > self.limit {
            let Some(victim) = inner.docs.keys().next().cloned() else {
                break;
            };
            if let Some((_, old)) = inner.docs.remove(&victim) {
                inner.bytes -= old.len();
            }
        }
        inner.bytes += body.len();
        if let Some((_, old)) = inner.docs.insert(path.to_vec(), (version, body)) {
            inner.bytes -= old.len();
        }
    }

    fn forget(&self, path: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, old)) = inner.docs.remove(path) {
            inner.bytes -= old.len();
        }
    }
}

impl State {
    /// `cache_bytes`: memory for small documents' bodies (0: none).
    pub fn new(transport: Arc<dyn Transport>, replicas: usize, cache_bytes: usize) -> State {
        State {
            transport,
            replicas: replicas.max(1),
            catalog: RwLock::default(),
            ready: Mutex::new(false),
            ready_cv: Condvar::new(),
            clock: Mutex::new(0),
            held: AtomicUsize::new(0),
            turn: AtomicUsize::new(0),
            cache: Cache {
                limit: cache_bytes,
                inner: Mutex::default(),
            },
            // Enough that unrelated paths rarely share one.
            stripes: (0..1024).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Held while a write to `path` is checked, numbered and made.
    pub fn path_lock(&self, path: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        let i = crate::hash::hash64(&[path]) as usize % self.stripes.len();
        self.stripes[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The body of `version` of `path`, if it is in memory.
    pub fn cached(&self, path: &[u8], version: u64) -> Option<Arc<[u8]>> {
        self.cache.get(path, version)
    }

    /// Keep the body of `version` of `path` in memory, if it is small; or
    /// forget the one there (`None`: deleted).
    pub fn remember(&self, path: &[u8], version: u64, body: Option<Arc<[u8]>>) {
        match body {
            Some(body) => self.cache.put(path, version, body),
            None => self.cache.forget(path),
        }
    }

    /// Whether a body of `len` bytes would be kept in memory.
    pub fn caches(&self, len: u64) -> bool {
        len <= config::STORE_CACHE_MAX_DOC && len as usize <= self.cache.limit
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_one_version_within_its_limit() {
        let c = Cache {
            limit: 10,
            inner: Mutex::default(),
        };
        let body = |s: &str| Arc::<[u8]>::from(s.as_bytes());
        c.put(b"/a", 2, body("abcd"));
        assert_eq!(c.get(b"/a", 2).as_deref(), Some(&b"abcd"[..]));
        assert!(c.get(b"/a", 1).is_none() && c.get(b"/a", 3).is_none());
        c.put(b"/a", 1, body("old")); // older than what is there: ignored
        assert!(c.get(b"/a", 2).is_some());
        c.put(b"/b", 1, body("efgh"));
        c.put(b"/c", 1, body("ijkl")); // 12 bytes > 10: one goes
        let kept = [&b"/a"[..], b"/b", b"/c"]
            .iter()
            .filter(|p| c.get(p, if **p == b"/a" { 2 } else { 1 }).is_some())
            .count();
        assert_eq!(kept, 2);
        c.put(b"/d", 1, body("far too long")); // over the limit: never kept
        assert!(c.get(b"/d", 1).is_none());
        c.forget(b"/c");
        c.forget(b"/b");
        c.forget(b"/a");
        assert_eq!(c.inner.lock().unwrap().bytes, 0);
    }
}
