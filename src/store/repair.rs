//! The store's repair thread on rank 0: it reads the inventory of every
//! replica that joins (at start-up, and each time a stalled rank answers
//! again), then brings every document back to its place: copies to home
//! ranks that miss its newest version (a wiped directory, writes a stalled
//! rank missed), and drops stand-in and stale copies once the home ranks
//! all have it.

use super::catalog::{plan, Action};
use super::ops;
use super::state::State;
use crate::error::Error;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How often membership is looked at.
const TICK: Duration = Duration::from_millis(200);
/// At start-up, how long to wait for every replica's inventory before
/// serving with those that answered.
const START_WAIT: Duration = Duration::from_secs(10);
/// A rank down this long is no longer waited for: its documents are
/// copied to the next ranks of their rankings.
const REPLACE_AFTER: Duration = Duration::from_secs(30);
/// A pass runs at least this often, to finish work an earlier pass could
/// not (a copy that failed).
const PASS_EVERY: Duration = Duration::from_secs(30);
/// After a rank said its disk is full, copies to it wait this long, then
/// twice as long after each further refusal, up to `FULL_WAIT_MAX`.
const FULL_WAIT: Duration = Duration::from_secs(30);
const FULL_WAIT_MAX: Duration = Duration::from_secs(600);

/// Ranks whose disks were full, and when copies may be tried again.
#[derive(Default)]
struct Full {
    ranks: HashMap<usize, (Instant, Duration)>,
}

impl Full {
    /// Whether copies to `rank` wait.
    fn waits(&self, rank: usize, now: Instant) -> bool {
        self.ranks.get(&rank).is_some_and(|(until, _)| now < *until)
    }

    /// `rank` refused a copy for lack of space: back off, longer each time.
    fn refused(&mut self, rank: usize, now: Instant) {
        let wait = match self.ranks.get(&rank) {
            Some((_, last)) => (*last * 2).min(FULL_WAIT_MAX),
            None => FULL_WAIT,
        };
        self.ranks.insert(rank, (now + wait, wait));
        log::warn!(
            "store: rank {rank} is out of space; copies to it wait {} s",
            wait.as_secs()
        );
    }

    /// `rank` took a copy: it has room again.
    fn took(&mut self, rank: usize) {
        if self.ranks.remove(&rank).is_some() {
            log::info!("store: rank {rank} takes copies again");
        }
    }
}

/// Start the repair thread.
pub fn start(state: Arc<State>) {
    let spawned = thread::Builder::new()
        .name("store-repair".into())
        .spawn(move || run(&state));
    if let Err(e) = spawned {
        log::error!("store: cannot start the repair thread: {e}");
    }
}

fn run(state: &State) {
    let started = Instant::now();
    let mut known: HashSet<usize> = HashSet::new();
    let mut down_since: HashMap<usize, Instant> = HashMap::new();
    let mut last_pass = Instant::now();
    let mut wanted = false;
    let mut full = Full::default();
    let mut buried: Vec<usize> = Vec::new();
    loop {
        // Read each time: a spare called in becomes a worker.
        let all = state.transport.workers();
        let live = state.transport.live_workers();
        let dead = state.transport.dead_workers();
        if dead.iter().any(|r| !buried.contains(r)) {
            log::warn!(
                "store: rank(s) {dead:?} taken for dead: their documents are copied to the others"
            );
            wanted = true;
        }
        buried = dead;
        let now = Instant::now();
        for &rank in &all {
            if live.contains(&rank) {
                down_since.remove(&rank);
            } else {
                down_since.entry(rank).or_insert(now);
                // Back later, it may hold anything: read it again then.
                known.remove(&rank);
            }
        }
        for &rank in &live {
            if known.contains(&rank) {
                continue;
            }
            match ops::inventory(&state.transport, rank) {
                Ok(docs) => {
                    let mut catalog = state.catalog_mut();
                    catalog.forget_rank(rank);
                    for (path, meta) in &docs {
                        catalog.note_copy(rank, path, meta);
                        state.seen_version(meta.version);
                    }
                    drop(catalog);
                    log::info!("store: rank {rank} holds {} documents", docs.len());
                    known.insert(rank);
                    wanted = true;
                }
                Err(e) => log::info!("store: no inventory from rank {rank} yet: {e}"),
            }
        }
        if !state.is_ready() && (known.len() == all.len() || started.elapsed() > START_WAIT) {
            state.set_ready();
            log::info!(
                "store: ready, {} documents from {} ranks",
                state.catalog().live_count(),
                known.len()
            );
        }
        if state.is_ready() && (wanted || last_pass.elapsed() > PASS_EVERY) {
            // A dead rank is not waited for: its documents go to the
            // next ranks of their rankings at once.
            let dead = state.transport.dead_workers();
            let placeable: Vec<usize> = all
                .iter()
                .copied()
                .filter(|r| {
                    !dead.contains(r)
                        && down_since
                            .get(r)
                            .is_none_or(|t| t.elapsed() < REPLACE_AFTER)
                })
                .collect();
            pass(state, &placeable, &live, &mut full);
            last_pass = Instant::now();
            wanted = false;
        }
        thread::sleep(TICK);
    }
}

/// One repair pass over every document.
fn pass(state: &State, placeable: &[usize], live: &[usize], full: &mut Full) {
    let docs: Vec<_> = state
        .catalog()
        .iter()
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect();
    let n = state.copies();
    let (mut copied, mut dropped, mut failed, mut deferred) = (0, 0, 0, 0);
    for (path, entry) in docs {
        let ranking = state.ranking(&path);
        let mut actions = plan(&entry, &ranking, placeable, live, n);
        let copies = actions.len();
        let mut ok = 0;
        // Once the copies are made, the same pass drops what they replace.
        for round in 0..2 {
            if round == 1 {
                if ok < copies || copies == 0 {
                    break;
                }
                let Some(entry) = state.catalog().get(&path).cloned() else {
                    break;
                };
                actions = plan(&entry, &ranking, placeable, live, n);
                if actions.iter().any(|a| matches!(a, Action::Copy { .. })) {
                    break;
                }
            }
            for action in std::mem::take(&mut actions) {
                let done = match action {
                    // A full disk is not asked again and again, each time
                    // with a log line: it is asked after its wait.
                    Action::Copy { to, .. } if full.waits(to, Instant::now()) => {
                        deferred += 1;
                        continue;
                    }
                    Action::Copy { from, to } => {
                        let v = entry.meta.version;
                        let copy =
                            ops::read_all(&state.transport, from, &path, v).and_then(|body| {
                                let Some(body) = body else { return Ok(false) };
                                ops::put(&state.transport, to, &path, &entry.meta, &body)?;
                                state.catalog_mut().note_copy(to, &path, &entry.meta);
                                Ok(true)
                            });
                        match &copy {
                            Ok(true) => {
                                copied += 1;
                                full.took(to);
                            }
                            Err(Error::InsufficientStorage) => full.refused(to, Instant::now()),
                            _ => {}
                        }
                        copy
                    }
                    Action::Drop { at, version } => {
                        let gone = ops::drop_copy(&state.transport, at, &path, version);
                        if gone.is_ok() {
                            state.catalog_mut().drop_copy(at, &path, version);
                            dropped += 1;
                        }
                        gone
                    }
                };
                match done {
                    Ok(_) => ok += 1,
                    Err(Error::InsufficientStorage) => failed += 1,
                    Err(e) => {
                        failed += 1;
                        log::info!(
                            "store: repair of {}: {action:?}: {e}",
                            String::from_utf8_lossy(&path)
                        );
                    }
                }
            }
        }
    }
    if copied + dropped + failed > 0 {
        log::info!(
            "store: repair done: {copied} copied, {dropped} dropped, {failed} failed, \
             {deferred} waiting for space"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_rank_waits_longer_after_each_refusal_until_it_takes_a_copy() {
        let t0 = Instant::now();
        let mut full = Full::default();
        assert!(!full.waits(2, t0));
        full.refused(2, t0);
        assert!(full.waits(2, t0 + FULL_WAIT - Duration::from_secs(1)));
        assert!(!full.waits(2, t0 + FULL_WAIT));
        assert!(!full.waits(1, t0), "other ranks are not held back");
        let mut at = t0 + FULL_WAIT;
        let mut waits = Vec::new();
        for _ in 0..7 {
            full.refused(2, at);
            waits.push(full.ranks[&2].1.as_secs());
            at += full.ranks[&2].1;
        }
        assert_eq!(waits, [60, 120, 240, 480, 600, 600, 600]);
        full.took(2);
        assert!(!full.waits(2, t0));
        full.refused(2, at);
        assert_eq!(
            full.ranks[&2].1, FULL_WAIT,
            "room again: the wait starts over"
        );
    }
}
