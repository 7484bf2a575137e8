//! Which workers are in rotation, dead or spare, as rank 0's tables
//! found: shared, lock-free, with whoever places work on a given rank (the
//! store, the status page).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Which workers are in rotation, as the dispatcher's heartbeats found;
/// read by anyone who places work on a given rank (the store).
pub struct Membership {
    /// By rank: which ranks run streams at all (not rank 0 in a world
    /// with workers; rank 0 alone).
    pub(super) is_worker: Vec<bool>,
    /// By rank: in rotation now.
    pub(super) live: Vec<AtomicBool>,
    /// By rank: taken for dead (silent past `DEAD_AFTER`).
    pub(super) dead: Vec<AtomicBool>,
    /// By rank: a spare, idle until a worker dies (`--spares`).
    pub(super) spare: Vec<AtomicBool>,
    /// By rank: how many times a new process was spawned in its place.
    pub(super) replaced: Vec<AtomicU32>,
}

impl Membership {
    /// The ranks that take streams now: live, not spares.
    pub fn live_workers(&self) -> Vec<usize> {
        (0..self.live.len())
            .filter(|&r| self.live[r].load(Ordering::Relaxed) && !self.is_spare(r))
            .collect()
    }

    /// Every rank that runs streams, live or not; spares are not workers
    /// until called in.
    pub fn workers(&self) -> Vec<usize> {
        (0..self.live.len())
            .filter(|&r| self.is_worker[r] && !self.is_spare(r))
            .collect()
    }

    pub(super) fn set(&self, rank: usize, live: bool) {
        if let Some(flag) = self.live.get(rank) {
            flag.store(live, Ordering::Relaxed);
        }
    }

    pub(super) fn set_dead(&self, rank: usize, dead: bool) {
        if let Some(flag) = self.dead.get(rank) {
            flag.store(dead, Ordering::Relaxed);
        }
    }

    fn is_spare(&self, rank: usize) -> bool {
        self.spare
            .get(rank)
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// The spares not called in yet.
    pub fn spares(&self) -> Vec<usize> {
        (0..self.spare.len())
            .filter(|&r| self.is_spare(r))
            .collect()
    }

    /// How many times a new process was spawned in `rank`'s place.
    pub fn replaced(&self, rank: usize) -> u32 {
        self.replaced
            .get(rank)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// The workers taken for dead now.
    pub fn dead(&self) -> Vec<usize> {
        (0..self.dead.len())
            .filter(|&r| self.dead[r].load(Ordering::Relaxed))
            .collect()
    }
}
