//! What each rank counts about the work it does: requests (streams, on a
//! worker) by status class, bytes, requests in flight, a latency
//! histogram, and per-second request counts. Counting is a few relaxed
//! atomic adds; a `Snapshot` is what travels to rank 0 and what the status
//! pages show.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// Upper bounds of the latency buckets, in microseconds (the last bucket,
/// past them, is unbounded).
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
const NBUCKETS: usize = BUCKETS_US.len() + 1;
/// Seconds of per-second counts kept.
pub const HISTORY_SECS: usize = 600;
/// Seconds of them a snapshot carries (the status page's chart).
pub const CHART_SECS: u64 = 300;

/// This process's counters.
pub struct Metrics {
    started: Instant,
    /// By status class: 1xx (index 0) to 5xx (index 4).
    classes: [AtomicU64; 5],
    bytes: AtomicU64,
    in_flight: AtomicI64,
    buckets: [AtomicU64; NBUCKETS],
    latency_sum_us: AtomicU64,
    /// Requests per second, in a ring: the second each slot counts, and
    /// its count.
    seconds: [AtomicU64; HISTORY_SECS],
    counts: [AtomicU64; HISTORY_SECS],
    /// Document files in this rank's store replica, if it keeps one.
    has_store: AtomicBool,
    store_docs: AtomicI64,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// This process's counters.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// Start this process's clock: uptime counts from here. Called first
/// thing at start; without it the clock started at the first use of the
/// counters (a worker's at the first status request), so every rank
/// showed an uptime of a second or two.
pub fn start() {
    LazyLock::force(&METRICS);
}

/// Whether this process counts the streams it runs (a worker rank). A lone
/// mpiweb counts each request once, where the client sent it.
static STREAMS: AtomicBool = AtomicBool::new(false);

/// This process is a worker rank: count its streams.
pub fn count_streams() {
    STREAMS.store(true, Ordering::Relaxed);
}

/// The counters for a stream run here, on a worker rank only.
pub fn streams() -> Option<&'static Metrics> {
    STREAMS.load(Ordering::Relaxed).then(global)
}

/// Counts a request as in flight while it lives.
pub struct InFlight(&'static Metrics);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            started: Instant::now(),
            classes: Default::default(),
            bytes: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            buckets: Default::default(),
            latency_sum_us: AtomicU64::new(0),
            seconds: [const { AtomicU64::new(u64::MAX) }; HISTORY_SECS],
            counts: [const { AtomicU64::new(0) }; HISTORY_SECS],
            has_store: AtomicBool::new(false),
            store_docs: AtomicI64::new(0),
        }
    }

    /// This rank keeps a store replica of `docs` document files; `change`
    /// them later.
    pub fn set_store_docs(&self, docs: u64) {
        self.store_docs.store(docs as i64, Ordering::Relaxed);
        self.has_store.store(true, Ordering::Relaxed);
    }

    pub fn change_store_docs(&self, by: i64) {
        self.store_docs.fetch_add(by, Ordering::Relaxed);
    }

    /// A request begins.
    pub fn begin(&'static self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// A request ended with `status`, `bytes` of body sent, after `took`.
    pub fn record(&self, status: u16, bytes: u64, took: Duration) {
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(NBUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        let sec = self.started.elapsed().as_secs();
        let slot = (sec % HISTORY_SECS as u64) as usize;
        if self.seconds[slot].swap(sec, Ordering::Relaxed) != sec {
            // A new second for this slot (a race here loses a count or two).
            self.counts[slot].store(0, Ordering::Relaxed);
        }
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now, as rank `rank`.
    pub fn snapshot(&self, rank: usize) -> Snapshot {
        let now = self.started.elapsed().as_secs();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // The last whole seconds, oldest first (the current second is not
        // over yet, so it is left out).
        let recent = (1..=CHART_SECS)
            .rev()
            .map(|ago| {
                let Some(sec) = now.checked_sub(ago) else {
                    return 0;
                };
                let slot = (sec % HISTORY_SECS as u64) as usize;
                match load(&self.seconds[slot]) == sec {
                    true => load(&self.counts[slot]),
                    false => 0,
                }
            })
            .collect();
        Snapshot {
            rank,
            uptime_ms: self.started.elapsed().as_millis() as u64,
            classes: std::array::from_fn(|i| load(&self.classes[i])),
            bytes: load(&self.bytes),
            in_flight: self.in_flight.load(Ordering::Relaxed).max(0) as u64,
            buckets: std::array::from_fn(|i| load(&self.buckets[i])),
            latency_sum_us: load(&self.latency_sum_us),
            recent,
            store_docs: self
                .has_store
                .load(Ordering::Relaxed)
                .then(|| self.store_docs.load(Ordering::Relaxed).max(0) as u64),
        }
    }
}

/// One rank's figures at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub rank: usize,
    pub uptime_ms: u64,
    pub classes: [u64; 5],
    pub bytes: u64,
    pub in_flight: u64,
    pub buckets: [u64; NBUCKETS],
    pub latency_sum_us: u64,
    /// Requests in each of the last `CHART_SECS` whole seconds, oldest first.
    pub recent: Vec<u64>,
    /// Documents in this rank's store replica, if it keeps one.
    pub store_docs: Option<u64>,
}

impl Snapshot {
    pub fn requests(&self) -> u64 {
        self.classes.iter().sum()
    }

    /// Requests per second over the last minute (or the uptime, if less).
    pub fn rate(&self) -> f64 {
        let secs = (self.uptime_ms / 1000).clamp(1, 60);
        self.recent.iter().rev().take(secs as usize).sum::<u64>() as f64 / secs as f64
    }

    /// The latency under which a fraction `q` of requests finished: the
    /// upper bound of the bucket where that request falls (`None` for no
    /// requests, or past the last bound).
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return BUCKETS_US.get(i).map(|&us| Duration::from_micros(us));
            }
        }
        None
    }

    /// Text lines `name value...`, for the wire.
    pub fn encode(&self) -> Vec<u8> {
        let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        let mut out = format!(
            "rank {}\nuptime_ms {}\nclasses {}\nbytes {}\nin_flight {}\nbuckets {}\nlatency_sum_us {}\nrecent {}\n",
            self.rank,
            self.uptime_ms,
            join(&self.classes),
            self.bytes,
            self.in_flight,
            join(&self.buckets),
            self.latency_sum_us,
            join(&self.recent),
        );
        if let Some(n) = self.store_docs {
            out.push_str(&format!("store_docs {n}\n"));
        }
        out.into_bytes()
    }

    /// The snapshot in `buf` (made by `encode`); `None` if it is not one.
    pub fn decode(buf: &[u8]) -> Option<Snapshot> {
        let text = std::str::from_utf8(buf).ok()?;
        let mut s = Snapshot::default();
        for line in text.lines() {
            let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
            let nums: Vec<u64> = rest
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let one = || nums.first().copied();
            match name {
                "rank" => s.rank = one()? as usize,
                "uptime_ms" => s.uptime_ms = one()?,
                "classes" => s.classes = nums.try_into().ok()?,
                "bytes" => s.bytes = one()?,
                "in_flight" => s.in_flight = one()?,
                "buckets" => s.buckets = nums.try_into().ok()?,
                "latency_sum_us" => s.latency_sum_us = one()?,
                "recent" => s.recent = nums,
                "store_docs" => s.store_docs = Some(one()?),
                _ => {} // a later version's figure
            }
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_and_travel() {
        let m: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let guard = m.begin();
        assert_eq!(m.snapshot(0).in_flight, 1);
        drop(guard);
        for (status, us) in [
            (200, 50),
            (204, 120),
            (304, 900),
            (404, 3_000),
            (502, 20_000_000),
        ] {
            m.record(status, 10, Duration::from_micros(us));
        }
        let mut s = m.snapshot(2);
        assert_eq!(s.classes, [0, 2, 1, 1, 1]);
        assert_eq!((s.requests(), s.bytes, s.in_flight), (5, 50, 0));
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[NBUCKETS - 1], 1);
        assert_eq!(s.percentile(0.5), Some(Duration::from_micros(1_000)));
        assert_eq!(s.percentile(0.2), Some(Duration::from_micros(100)));
        assert_eq!(s.percentile(1.0), None, "past the last bound");
        assert_eq!(s.recent.len(), CHART_SECS as usize);
        s.store_docs = Some(7);
        assert_eq!(Snapshot::decode(&s.encode()), Some(s));
        assert_eq!(Snapshot::decode(b"classes 1 2\n"), None);
        assert_eq!(Snapshot::default().percentile(0.5), None);
    }
}
