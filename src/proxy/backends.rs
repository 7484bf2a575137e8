//! A route's pool of upstreams at run time: which of them are in rotation
//! (active and passive health checks) and which one a request goes to (the
//! route's policy).
//!
//! It lives on rank 0, where every proxied request starts: the counts that
//! `least-conn` compares are therefore the whole cluster's, and one health
//! verdict serves every worker.

use super::route::{Policy, RouteSpec};
use crate::hash::rendezvous_score;
use std::cmp::Ordering as Order;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One route's upstreams.
pub struct Backends {
    pub spec: RouteSpec,
    members: Vec<Member>,
    /// Smooth weighted round-robin: each member's current weight.
    current: Mutex<Vec<i64>>,
    /// Where least-conn starts looking among equals.
    turn: AtomicUsize,
}

struct Member {
    /// Requests sent to it and not finished, from every worker.
    in_flight: AtomicUsize,
    health: Mutex<Health>,
    /// Times it left or rejoined the rotation.
    changes: AtomicU64,
    /// Requests that got an answer head, and the time to it in all.
    answered: AtomicU64,
    wait_us: AtomicU64,
}

/// One upstream as the status page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberReport {
    pub authority: String,
    pub healthy: bool,
    pub in_flight: usize,
    pub changes: u64,
    pub answered: u64,
    /// Mean time from sending a request to its answer's head.
    pub mean_wait: Option<Duration>,
}

/// What the checks know of one upstream.
#[derive(Debug)]
struct Health {
    /// The active checks' verdict (always true without them).
    up: bool,
    /// Check results in a row that would change the state, all passes
    /// or all failures (`streak_passing`).
    streak: u32,
    streak_passing: bool,
    /// Passive failures counted since `window`.
    fails: u32,
    window: Instant,
    /// Taken out by passive failures until then.
    out_until: Option<Instant>,
}

/// Why an upstream failed a request, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Timeout,
    Broken,
    Status(u16),
}

impl Backends {
    pub fn new(spec: RouteSpec) -> Backends {
        let now = Instant::now();
        let members = spec
            .upstreams
            .iter()
            .map(|_| Member {
                in_flight: AtomicUsize::new(0),
                changes: AtomicU64::new(0),
                answered: AtomicU64::new(0),
                wait_us: AtomicU64::new(0),
                health: Mutex::new(Health {
                    up: true,
                    streak: 0,
                    streak_passing: false,
                    fails: 0,
                    window: now,
                    out_until: None,
                }),
            })
            .collect();
        Backends {
            current: Mutex::new(vec![0; spec.upstreams.len()]),
            spec,
            members,
            turn: AtomicUsize::new(0),
        }
    }

    /// How many upstreams the route has.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    fn name(&self, i: usize) -> String {
        format!(
            "upstream {} of route {}",
            self.spec.upstreams[i].authority,
            self.describe()
        )
    }

    /// The route as its matches read, for the log.
    fn describe(&self) -> String {
        let mut s = self.spec.prefix.clone();
        if let Some(host) = &self.spec.host {
            s.push_str(&format!(" host={host}"));
        }
        if let Some((name, value)) = &self.spec.header {
            s.push_str(&format!(" header={name}:{value}"));
        }
        s
    }

    fn health(&self, i: usize) -> MutexGuard<'_, Health> {
        // A panic elsewhere while holding it leaves plain numbers behind.
        self.members[i]
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether upstream `i` is in rotation now. A passive time-out that
    /// has run out ends here, and says so once.
    pub fn healthy(&self, i: usize) -> bool {
        let mut h = self.health(i);
        if let Some(until) = h.out_until {
            if Instant::now() < until {
                return false;
            }
            h.out_until = None;
            h.fails = 0;
            if h.up {
                log::warn!(
                    "{}: back in rotation after fail-timeout {:?}",
                    self.name(i),
                    self.spec.fail_timeout
                );
            }
        }
        h.up
    }

    /// The upstream for the next request: `key` is what the hash policies
    /// hash (`None`: go round-robin), `exclude` one that just failed it.
    /// `None` when no other upstream is in rotation.
    pub fn pick(&self, key: Option<&[u8]>, exclude: Option<usize>) -> Option<usize> {
        let healthy: Vec<usize> = (0..self.size())
            .filter(|&i| Some(i) != exclude && self.healthy(i))
            .collect();
        if healthy.is_empty() {
            return None;
        }
        let weight = |i: usize| u64::from(self.spec.upstreams[i].weight);
        Some(match (&self.spec.policy, key) {
            (Policy::IpHash | Policy::HeaderHash(_), Some(key)) => *healthy
                .iter()
                .max_by(|&&a, &&b| {
                    let (sa, sb) = (
                        rendezvous_score(key, a as u64, weight(a)),
                        rendezvous_score(key, b as u64, weight(b)),
                    );
                    sa.partial_cmp(&sb).unwrap_or(Order::Equal)
                })
                .unwrap_or(&healthy[0]),
            (Policy::LeastConn, _) => {
                let start = self.turn.fetch_add(1, Ordering::Relaxed);
                let n = healthy.len();
                let load = |i: usize| self.members[i].in_flight.load(Ordering::Relaxed) as u64;
                (0..n)
                    .map(|k| healthy[(start + k) % n])
                    // a/wa < b/wb, without division; the first in turn
                    // wins ties.
                    .min_by(|&a, &b| (load(a) * weight(b)).cmp(&(load(b) * weight(a))))
                    .unwrap_or(healthy[0])
            }
            _ => {
                // nginx's smooth weighted round-robin: everyone gains its
                // weight, the richest is picked and pays the total. (A
                // poisoned lock is recovered: the numbers are only ever
                // off by one pick, and balancing goes on.)
                let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
                let total: i64 = healthy.iter().map(|&i| weight(i) as i64).sum();
                let mut best = healthy[0];
                for &i in &healthy {
                    current[i] += weight(i) as i64;
                    if current[i] > current[best] {
                        best = i;
                    }
                }
                current[best] -= total;
                best
            }
        })
    }

    /// Count a request to `i` as in flight until the lease is dropped.
    pub fn lease(self: &Arc<Self>, i: usize) -> Lease {
        self.members[i].in_flight.fetch_add(1, Ordering::Relaxed);
        Lease {
            pool: Arc::clone(self),
            member: i,
        }
    }

    #[cfg(test)]
    fn in_flight(&self, i: usize) -> usize {
        self.members[i].in_flight.load(Ordering::Relaxed)
    }

    /// A request to `i` failed (connect, timeout, broken answer, or a 5xx
    /// other than 501 and 505, which are about the request):
    /// `max-fails` of them within `fail-timeout` take it out for
    /// `fail-timeout`. As in nginx, the lone upstream of a route is never
    /// taken out this way: there is nowhere else to send its requests.
    pub fn failed(&self, i: usize, why: Failure) {
        let max = self.spec.max_fails;
        if max == 0 || self.size() < 2 {
            return;
        }
        let window = self.spec.fail_timeout;
        let mut h = self.health(i);
        let now = Instant::now();
        if h.out_until.is_some() {
            return; // already out
        }
        if h.fails == 0 || now.duration_since(h.window) > window {
            h.fails = 0;
            h.window = now;
        }
        h.fails += 1;
        if h.fails >= max {
            h.out_until = Some(now + window);
            h.fails = 0;
            if h.up {
                self.members[i].changes.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "{}: out of rotation for {window:?} after {max} failed request(s), \
                     the last {why:?}",
                    self.name(i)
                );
            }
        }
    }

    /// The result of an active check of `i`. `fails` failures in a row
    /// take an upstream in rotation out; `passes` passes in a row bring one
    /// that is out back, also one that passive checks took out.
    pub fn checked(&self, i: usize, passed: bool, detail: &str) {
        let Some(check) = &self.spec.health else {
            return;
        };
        let mut h = self.health(i);
        let passive_out = h.out_until.is_some_and(|until| Instant::now() < until);
        if passive_out && !passed {
            // Out already; the check agrees, and keeps it out after the
            // passive time-out too.
            h.up = false;
            h.streak = 0;
            return;
        }
        let in_rotation = h.up && !passive_out;
        if passed == in_rotation {
            h.streak = 0;
            return;
        }
        if h.streak_passing != passed {
            h.streak = 0;
            h.streak_passing = passed;
        }
        h.streak += 1;
        let needed = if in_rotation {
            check.fails
        } else {
            check.passes
        };
        if h.streak < needed {
            return;
        }
        h.streak = 0;
        h.up = passed;
        self.members[i].changes.fetch_add(1, Ordering::Relaxed);
        if passed {
            h.out_until = None;
            h.fails = 0;
            log::warn!(
                "{}: back in rotation after {needed} passed health check(s)",
                self.name(i)
            );
        } else {
            log::warn!(
                "{}: out of rotation after {needed} failed health check(s): {detail}",
                self.name(i)
            );
        }
    }

    /// Upstream `i` answered a request's head after `took`.
    pub fn answered(&self, i: usize, took: Duration) {
        let m = &self.members[i];
        m.answered.fetch_add(1, Ordering::Relaxed);
        m.wait_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Every upstream's state and figures.
    pub fn report(&self) -> Vec<MemberReport> {
        (0..self.size())
            .map(|i| {
                let m = &self.members[i];
                let answered = m.answered.load(Ordering::Relaxed);
                MemberReport {
                    authority: self.spec.upstreams[i].authority.clone(),
                    healthy: self.healthy(i),
                    in_flight: m.in_flight.load(Ordering::Relaxed),
                    changes: m.changes.load(Ordering::Relaxed),
                    answered,
                    mean_wait: (answered > 0).then(|| {
                        Duration::from_micros(m.wait_us.load(Ordering::Relaxed) / answered)
                    }),
                }
            })
            .collect()
    }

    /// Seconds a client should wait when nothing is in rotation: until the
    /// first passive time-out ends, or the next health check.
    pub fn retry_after(&self) -> u64 {
        let now = Instant::now();
        let soonest = (0..self.size())
            .filter_map(|i| {
                let h = self.health(i);
                match (h.out_until, &self.spec.health) {
                    (Some(until), _) if h.up => Some(until.saturating_duration_since(now)),
                    (_, Some(check)) => Some(check.interval),
                    (until, None) => until.map(|u| u.saturating_duration_since(now)),
                }
            })
            .min()
            .unwrap_or(Duration::from_secs(1));
        soonest.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// A request in flight to one upstream; dropping it ends the count.
pub struct Lease {
    pool: Arc<Backends>,
    member: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.members[self.member]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::route::parse_route;

    fn pool(spec: &str) -> Arc<Backends> {
        Arc::new(Backends::new(parse_route(spec).unwrap()))
    }

    fn counts(b: &Backends, n: usize, key: impl Fn(usize) -> Option<Vec<u8>>) -> Vec<usize> {
        let mut c = vec![0; b.size()];
        for k in 0..n {
            c[b.pick(key(k).as_deref(), None).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn round_robin_follows_weights_smoothly() {
        let b = pool("/ http://a:1 weight=5 http://b:1 http://c:1");
        let order: Vec<usize> = (0..7).map(|_| b.pick(None, None).unwrap()).collect();
        // nginx's documented sequence for weights 5, 1, 1.
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&b, 700, |_| None), [500, 100, 100]);
        let b = pool("/ http://a:1 http://b:1 http://c:1");
        assert_eq!(counts(&b, 300, |_| None), [100, 100, 100]);
    }

    #[test]
    fn least_conn_counts_leases() {
        let b = pool("/ http://a:1 http://b:1 http://c:1 policy=least-conn");
        let held: Vec<Lease> = (0..3)
            .map(|_| {
                let i = b.pick(None, None).unwrap();
                b.lease(i)
            })
            .collect();
        assert_eq!(
            (0..3).map(|i| b.in_flight(i)).collect::<Vec<_>>(),
            [1, 1, 1]
        );
        let extra = b.lease(0);
        let next = b.pick(None, None).unwrap();
        assert_ne!(next, 0, "a has two in flight");
        drop(held);
        drop(extra);
        assert_eq!(b.in_flight(0), 0);
        let b = pool("/ http://a:1 weight=3 http://b:1 policy=least-conn");
        let mut leases = Vec::new();
        for _ in 0..8 {
            let i = b.pick(None, None).unwrap();
            leases.push(b.lease(i));
        }
        assert_eq!((b.in_flight(0), b.in_flight(1)), (6, 2));
    }

    #[test]
    fn hashing_keeps_a_key_on_its_upstream() {
        let b = pool("/ http://a:1 http://b:1 http://c:1 policy=ip-hash");
        let ip = |k: usize| Some(format!("10.0.0.{k}").into_bytes());
        let first: Vec<usize> = (0..60)
            .map(|k| b.pick(ip(k).as_deref(), None).unwrap())
            .collect();
        let again: Vec<usize> = (0..60)
            .map(|k| b.pick(ip(k).as_deref(), None).unwrap())
            .collect();
        assert_eq!(first, again);
        let spread = counts(&b, 3000, |k| Some(k.to_le_bytes().to_vec()));
        assert!(
            spread.iter().all(|&c| (800..1200).contains(&c)),
            "{spread:?}"
        );
        // Take out c: only the keys it had move.
        b.failed(2, Failure::Connect);
        assert!(!b.healthy(2));
        let moved: Vec<usize> = (0..60)
            .map(|k| b.pick(ip(k).as_deref(), None).unwrap())
            .collect();
        for (was, now) in first.iter().zip(&moved) {
            if *was != 2 {
                assert_eq!(was, now);
            } else {
                assert_ne!(*now, 2);
            }
        }
        // Without the header, header-hash goes round-robin.
        let b = pool("/ http://a:1 http://b:1 policy=header-hash:X-User");
        assert_eq!(counts(&b, 10, |_| None), [5, 5]);
        let weighted = pool("/ http://a:1 weight=3 http://b:1 policy=ip-hash");
        let spread = counts(&weighted, 4000, |k| Some(k.to_le_bytes().to_vec()));
        assert!((2700..3300).contains(&spread[0]), "{spread:?}");
    }

    #[test]
    fn passive_failures_take_out_for_fail_timeout() {
        let b = pool("/ http://a:1 http://b:1 max-fails=2 fail-timeout=200ms");
        b.failed(0, Failure::Status(502));
        assert!(b.healthy(0), "one failure of two");
        b.failed(0, Failure::Timeout);
        assert!(!b.healthy(0));
        assert_eq!(counts(&b, 4, |_| None), [0, 4]);
        assert_eq!(b.pick(None, Some(1)), None, "the other is out");
        assert_eq!(b.retry_after(), 1);
        std::thread::sleep(Duration::from_millis(250));
        assert!(b.healthy(0), "back after fail-timeout");
        for off in ["/ http://a:1 http://b:1 max-fails=0", "/ http://a:1"] {
            let off = pool(off);
            for _ in 0..10 {
                off.failed(0, Failure::Connect);
            }
            assert!(off.healthy(0));
        }
    }

    #[test]
    fn active_checks_need_fails_and_passes_in_a_row() {
        let b = pool("/ http://a:1 http://b:1 health=/h fails=2 passes=3 interval=4s");
        b.checked(0, false, "refused");
        b.checked(0, true, "");
        b.checked(0, false, "refused");
        assert!(b.healthy(0), "not two in a row");
        b.checked(0, false, "refused");
        assert!(!b.healthy(0));
        b.checked(0, true, "");
        b.checked(0, true, "");
        assert!(!b.healthy(0));
        b.checked(0, true, "");
        assert!(b.healthy(0));
        b.checked(1, false, "x");
        b.checked(1, false, "x");
        b.checked(0, false, "x");
        b.checked(0, false, "x");
        assert_eq!(b.pick(None, None), None);
        assert_eq!(b.retry_after(), 4, "the next check");
    }

    #[test]
    fn checks_and_passive_time_outs_agree() {
        // Passing checks end a passive time-out early...
        let b = pool("/ http://a:1 http://b:1 health=/h passes=2 fail-timeout=10s");
        b.failed(0, Failure::Connect);
        assert!(!b.healthy(0));
        b.checked(0, true, "");
        assert!(!b.healthy(0), "one pass of two");
        b.checked(0, true, "");
        assert!(b.healthy(0));
        // ...and a failing one keeps it out after the time-out.
        let b = pool("/ http://a:1 http://b:1 health=/h passes=2 fail-timeout=150ms");
        b.failed(0, Failure::Connect);
        b.checked(0, false, "refused");
        std::thread::sleep(Duration::from_millis(200));
        assert!(!b.healthy(0), "the check still fails");
        b.checked(0, true, "");
        b.checked(0, true, "");
        assert!(b.healthy(0));
        // A streak is of passes or of failures, never a mix.
        let b = pool("/ http://a:1 http://b:1 health=/h fails=2 passes=2 fail-timeout=10s");
        b.checked(0, false, "refused");
        b.failed(0, Failure::Connect);
        b.checked(0, true, "");
        assert!(!b.healthy(0), "one pass, after a failure, is not two");
        b.checked(0, true, "");
        assert!(b.healthy(0));
    }
}
