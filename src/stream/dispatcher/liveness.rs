//! What heartbeats decide: a worker silent past `STALL_AFTER` leaves the
//! rotation and the streams it has not taken go to others; silent past
//! `DEAD_AFTER` (or `DEAD_AFTER_SIGNAL` once the launcher signalled a
//! death) it is taken for dead: what may run twice is sent again, the rest
//! ends with `WorkerLost`, a spare joins, and a new process may stand for
//! it (`replaced`).

use super::*;

impl<S: Sink> Tables<S> {
    /// Ping every worker; take silent ones out of rotation and send the
    /// streams they have not taken to others.
    pub fn heartbeat(&mut self, now: Instant, signalled: bool) {
        self.ping_seq += 1;
        let ping = Frame::Ping { id: self.ping_seq };
        for peer in self.peers.iter().filter(|p| !p.dead) {
            self.sink.send(peer.rank, &ping);
        }
        for stalled in 0..self.peers.len() {
            let p = &self.peers[stalled];
            let silent = now.saturating_duration_since(p.last_pong);
            let dead_after = match signalled {
                true => DEAD_AFTER_SIGNAL,
                false => DEAD_AFTER,
            };
            if !p.dead && silent >= dead_after {
                self.bury(stalled, now);
                continue;
            }
            let p = &mut self.peers[stalled];
            if !p.live || now.saturating_duration_since(p.last_pong) < STALL_AFTER {
                continue;
            }
            p.live = false;
            self.membership.set(p.rank, false);
            log::warn!(
                "worker rank {} silent for {} ms: out of rotation",
                p.rank,
                now.saturating_duration_since(p.last_pong).as_millis()
            );
            self.resend_from(stalled);
        }
    }

    /// Take worker `index` for dead: out of rotation for good (unless it
    /// answers again), every stream on it ended with `WorkerLost` (502, and
    /// no upstream blamed for it), those not started yet sent elsewhere
    /// first.
    fn bury(&mut self, index: usize, now: Instant) {
        let rank = self.peers[index].rank;
        let silent = now.saturating_duration_since(self.peers[index].last_pong);
        if self.peers[index].live {
            self.peers[index].live = false;
            self.membership.set(rank, false);
            self.resend_from(index);
        }
        self.peers[index].dead = true;
        self.membership.set_dead(rank, true);
        let lost: Vec<u64> = self
            .flows
            .iter()
            .filter(|(_, f)| f.peer == index)
            .map(|(&id, _)| id)
            .collect();
        log::warn!(
            "worker rank {rank} silent for {} ms: taken for dead; {} stream(s) on it end",
            silent.as_millis(),
            lost.len()
        );
        for id in lost {
            if self.send_again(id, index) {
                continue;
            }
            if let Some(flow) = self.flows.remove(&id) {
                let _ = flow.tx.send(vec![Frame::Abort {
                    id,
                    reason: AbortReason::WorkerLost,
                }]);
            }
        }
        self.peers[index].in_flight = 0;
        let spare_came = self.call_in_spare(rank);
        // A new process in its place: a spare if one took its place.
        if self.can_spawn {
            self.to_spawn.push((rank, spare_came));
        }
    }

    /// Bring the first live spare into the rotation in place of `dead`;
    /// whether there was one.
    fn call_in_spare(&mut self, dead: usize) -> bool {
        let Some(spare) = self.peers.iter_mut().find(|p| p.spare && p.live && !p.dead) else {
            return false;
        };
        spare.spare = false;
        let rank = spare.rank;
        if let Some(flag) = self.membership.spare.get(rank) {
            flag.store(false, Ordering::Relaxed);
        }
        log::warn!("spare rank {rank} joins the rotation in place of rank {dead}");
        true
    }

    /// A new process stands for dead `rank` from now on (the caller routes
    /// its frames there), as a worker or as a spare; whether it does: not
    /// when `rank` answered again meanwhile (it was only stalled, and may
    /// run streams again), nor for a rank that is no worker.
    pub fn replaced(&mut self, rank: usize, spare: bool, now: Instant) -> bool {
        let Some(p) = self.peers.iter_mut().find(|p| p.rank == rank && p.dead) else {
            return false;
        };
        self.replacements += 1;
        p.dead = false;
        p.live = true;
        p.spare = spare;
        p.in_flight = 0;
        p.last_pong = now;
        self.membership.set(rank, true);
        self.membership.set_dead(rank, false);
        if let Some(flag) = self.membership.spare.get(rank) {
            flag.store(spare, Ordering::Relaxed);
        }
        if let Some(n) = self.membership.replaced.get(rank) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Send stream `id`, lost with dead worker `dead` before any answer,
    /// to another worker, if it may run twice; whether it was.
    fn send_again(&mut self, id: u64, dead: usize) -> bool {
        let retry = self.flows.get(&id).is_some_and(|f| f.retry && !f.answered);
        if !retry {
            return false;
        }
        let Some(target) = self.pick() else {
            return false;
        };
        let Some(to_rank) = self.move_to(id, target) else {
            return false;
        };
        log::info!(
            "stream {id} lost with rank {} before its answer: sent again to rank {to_rank}",
            self.peers[dead].rank
        );
        true
    }

    /// Send stream `id`'s kept `Open` to worker `target`, which runs the
    /// stream from now on; the rank it went to, or `None` with no `Open`
    /// kept. The worker it leaves is the caller's business.
    fn move_to(&mut self, id: u64, target: usize) -> Option<usize> {
        let flow = self.flows.get_mut(&id)?;
        let open = flow.open.clone()?;
        let to_rank = self.peers[target].rank;
        flow.peer = target;
        flow.taken = false;
        flow.placed.store(to_rank, Ordering::Relaxed);
        self.peers[target].in_flight += 1;
        self.sink.send(to_rank, &open);
        Some(to_rank)
    }

    fn resend_from(&mut self, stalled: usize) {
        // Streams that must run on this rank end here: their owner picks
        // another rank itself.
        let pinned: Vec<u64> = self
            .flows
            .iter()
            .filter(|(_, f)| f.peer == stalled && f.pinned)
            .map(|(&id, _)| id)
            .collect();
        let rank = self.peers[stalled].rank;
        for id in pinned {
            let Some(flow) = self.flows.remove(&id) else {
                continue;
            };
            let abort = Frame::Abort {
                id,
                reason: AbortReason::Refused,
            };
            let _ = flow.tx.send(vec![abort.clone()]);
            self.sink.send(rank, &abort);
            let p = &mut self.peers[stalled];
            p.in_flight = p.in_flight.saturating_sub(1);
        }
        let waiting: Vec<u64> = self
            .flows
            .iter()
            .filter(|(_, f)| f.peer == stalled && !f.taken && f.open.is_some())
            .map(|(&id, _)| id)
            .collect();
        for id in waiting {
            let Some(target) = self.pick() else { return };
            let Some(to_rank) = self.move_to(id, target) else {
                continue;
            };
            // If the stalled worker wakes up, it drops the stream unstarted.
            let abort = Frame::Abort {
                id,
                reason: AbortReason::Refused,
            };
            self.peers[stalled].in_flight = self.peers[stalled].in_flight.saturating_sub(1);
            let from_rank = self.peers[stalled].rank;
            self.sink.send(from_rank, &abort);
            log::info!("stream {id} re-sent from rank {from_rank} to rank {to_rank}");
        }
    }
}
