//! The dispatcher: rank 0's tables of workers and streams, without any
//! I/O (sans-IO). Which worker takes a new stream (the live one with the
//! fewest in flight, in turn among equals), what a worker's frame means
//! for its stream, and what heartbeats decide (a worker silent for 1 s
//! leaves the rotation and its streams not started go elsewhere; silent
//! for 5 s it is taken for dead, a spare joins, and a new process may be
//! spawned). Each step takes the time it runs at; frames for workers go to
//! a `Sink`: MPI on rank 0 of a cluster (`cluster::dispatch`), the codec
//! and the worker in a lone process (`loopback`), a list in the table tests
//! (`dispatcher_tests.rs`). Connection threads hear of their streams
//! through `deliver` and the channels of refused ones.

use super::membership::Membership;
use super::transport::{ends_stream, is_tunnel, Placed};
use super::wire::{AbortReason, Frame};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often rank 0 pings every worker.
pub const PING_EVERY: Duration = Duration::from_millis(200);
/// A worker silent this long leaves the rotation (well within the 2 s in
/// which new requests must go elsewhere).
const STALL_AFTER: Duration = Duration::from_millis(1000);
/// A worker silent this long is taken for dead: the streams it had started
/// end with 502, and the store places its documents elsewhere. MPI does
/// not say when a rank on the same host dies (only silence does), so this
/// is well past any stall a busy machine shows. When the launcher signals
/// a death (MPICH's sends every rank SIGUSR1), a worker that missed a ping
/// is taken for dead at once.
const DEAD_AFTER: Duration = Duration::from_secs(5);
/// With a death signalled, silence this long marks the dead worker.
const DEAD_AFTER_SIGNAL: Duration = Duration::from_millis(2 * PING_EVERY.as_millis() as u64);
/// A worker's bell is rung for a new stream while at most this many are in
/// flight: beyond it the workers are busy enough to find requests by
/// polling, and a ring would only add a wake-up.
const RING_MAX_IN_FLIGHT: usize = 8;

/// What connection threads ask of the dispatcher.
pub enum Cmd {
    /// A new stream, for the least-loaded worker or for the rank given.
    Open(Frame, Sender<Vec<Frame>>, Option<usize>, Placed),
    Frame(Frame),
    Close(u64, bool),
}

/// A worker as rank 0 sees it.
struct Peer {
    rank: usize,
    in_flight: usize,
    last_pong: Instant,
    live: bool,
    /// Taken for dead: nothing more is sent to it.
    dead: bool,
    /// Idle until a worker dies: it answers pings and takes no streams.
    spare: bool,
}

/// A stream and where it runs.
struct Flow {
    peer: usize,
    /// The stream's rank as its connection thread reads it.
    placed: Placed,
    tx: Sender<Vec<Frame>>,
    /// The `Open` frame, kept until the worker says it took the stream,
    /// to send it elsewhere if the worker stalls first; for a request that
    /// may run twice (`Frame::may_run_twice`), kept until the first answer
    /// frame, to send it again if the worker dies first.
    open: Option<Frame>,
    /// The worker said it took the stream (its first frame came).
    taken: bool,
    /// Some answer frame came (beyond credit).
    answered: bool,
    /// The request may be sent again after its worker died unanswered.
    retry: bool,
    /// The connection thread wants the worker's first credit: it has a
    /// body to send, or a tunnel. Otherwise that acknowledgement stops
    /// here rather than wake the thread for nothing.
    wants_ack: bool,
    tunnel: bool,
    /// Runs on this worker or nowhere: a stall ends it rather than moving it.
    pinned: bool,
}

/// Where the tables' frames for workers go.
pub trait Sink {
    fn send(&mut self, rank: usize, frame: &Frame);
}

/// The workers and the streams on them, with what they send out.
pub struct Tables<S: Sink> {
    pub sink: S,
    membership: Arc<Membership>,
    peers: Vec<Peer>,
    flows: HashMap<u64, Flow>,
    /// Where the search for the least-loaded worker starts (round-robin
    /// among equals).
    turn: usize,
    ping_seq: u64,
    /// Frames from workers gathered during one receive, by stream: each
    /// stream's connection thread gets its frames in one batch.
    inbox: HashMap<u64, Vec<Frame>>,
    /// Workers to ring once the frames are sent (their bells).
    pub rings: Vec<usize>,
    /// Ranks taken for dead, to start a new process for (and whether it
    /// is to be a spare, a spare having taken the dead one's place).
    pub to_spawn: Vec<(usize, bool)>,
    /// Until the MPI library refuses a spawn.
    pub can_spawn: bool,
    /// New processes that stood in for dead ones so far.
    replacements: usize,
}

impl<S: Sink> Tables<S> {
    /// The tables of a world of `size` ranks, the last `spares` of which
    /// start as spares, all heard from at `now`; and their membership,
    /// for those who place work on a given rank.
    pub fn new(size: usize, spares: usize, sink: S, now: Instant) -> (Tables<S>, Arc<Membership>) {
        let first_spare = size.saturating_sub(spares).max(1);
        let workers: Vec<(usize, bool)> = (1..size).map(|r| (r, r >= first_spare)).collect();
        Tables::of(size, &workers, sink, now)
    }

    /// The tables of a lone process, whose rank 0 is its only worker
    /// (`loopback`).
    pub fn alone(sink: S, now: Instant) -> (Tables<S>, Arc<Membership>) {
        let (mut tables, membership) = Tables::of(1, &[(0, false)], sink, now);
        // Nothing to spawn in place of the one process.
        tables.can_spawn = false;
        (tables, membership)
    }

    /// A world of `size` ranks whose `workers` (rank, spare) run streams.
    fn of(
        size: usize,
        workers: &[(usize, bool)],
        sink: S,
        now: Instant,
    ) -> (Tables<S>, Arc<Membership>) {
        let is = |rank: usize| workers.iter().any(|&(r, _)| r == rank);
        let spare = |rank: usize| workers.iter().any(|&(r, s)| r == rank && s);
        let membership = Arc::new(Membership {
            is_worker: (0..size).map(is).collect(),
            live: (0..size).map(|r| AtomicBool::new(is(r))).collect(),
            dead: (0..size).map(|_| AtomicBool::new(false)).collect(),
            spare: (0..size).map(|r| AtomicBool::new(spare(r))).collect(),
            replaced: (0..size).map(|_| AtomicU32::new(0)).collect(),
        });
        let tables = Tables {
            sink,
            membership: Arc::clone(&membership),
            peers: workers
                .iter()
                .map(|&(rank, spare)| Peer {
                    rank,
                    in_flight: 0,
                    last_pong: now,
                    live: true,
                    dead: false,
                    spare,
                })
                .collect(),
            flows: HashMap::new(),
            turn: 0,
            ping_seq: 0,
            inbox: HashMap::new(),
            rings: Vec::new(),
            to_spawn: Vec::new(),
            can_spawn: true,
            replacements: 0,
        };
        (tables, membership)
    }

    /// Streams in flight.
    pub fn in_flight(&self) -> usize {
        self.flows.len()
    }

    /// The workers not taken for dead, and whether a process of the
    /// world died: one is taken for dead now, or a new process stands for
    /// one (MPI_Finalize would wait for the dead one forever).
    pub fn alive(&self) -> (Vec<usize>, bool) {
        let alive: Vec<usize> = self
            .peers
            .iter()
            .filter(|p| !p.dead)
            .map(|p| p.rank)
            .collect();
        let died = alive.len() < self.peers.len() || self.replacements > 0;
        (alive, died)
    }

    /// Whether worker `rank` is taken for dead now (it did not answer again).
    pub fn is_dead(&self, rank: usize) -> bool {
        self.peers.iter().any(|p| p.rank == rank && p.dead)
    }

    /// Ring worker `rank`'s bell for a stream just sent, if few are in
    /// flight.
    fn ring_if_quiet(&mut self, rank: usize) {
        if self.flows.len() <= RING_MAX_IN_FLIGHT {
            self.rings.push(rank);
        }
    }

    pub fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Open(frame, tx, rank, placed) => {
                let id = frame.id();
                let peer = match rank {
                    // A spare too: it answers the status page's questions.
                    Some(rank) => self.peers.iter().position(|p| p.rank == rank && p.live),
                    None => self.pick(),
                };
                let Some(peer) = peer else {
                    let _ = tx.send(vec![Frame::Abort {
                        id,
                        reason: AbortReason::Refused,
                    }]);
                    return;
                };
                let pinned = rank.is_some();
                let to = self.peers[peer].rank;
                self.peers[peer].in_flight += 1;
                self.sink.send(to, &frame);
                placed.store(to, Ordering::Relaxed);
                let tunnel = is_tunnel(&frame);
                let wants_ack = tunnel || frame.opens_body();
                let retry = frame.may_run_twice();
                self.flows.insert(
                    id,
                    Flow {
                        placed,
                        peer,
                        tx,
                        // A pinned stream is never moved: nothing to keep.
                        open: (!pinned).then_some(frame),
                        taken: false,
                        answered: false,
                        retry,
                        wants_ack,
                        tunnel,
                        pinned,
                    },
                );
                self.ring_if_quiet(to);
            }
            Cmd::Frame(frame) => {
                if let Some(flow) = self.flows.get(&frame.id()) {
                    self.sink.send(self.peers[flow.peer].rank, &frame);
                }
            }
            Cmd::Close(id, finished) => {
                let Some(flow) = self.flows.remove(&id) else {
                    return;
                };
                let peer = &mut self.peers[flow.peer];
                peer.in_flight = peer.in_flight.saturating_sub(1);
                if !finished {
                    let rank = peer.rank;
                    let abort = Frame::Abort {
                        id,
                        reason: AbortReason::ClientGone,
                    };
                    self.sink.send(rank, &abort);
                }
            }
        }
    }

    /// The live worker with the fewest streams in flight.
    fn pick(&mut self) -> Option<usize> {
        let n = self.peers.len();
        let best = (0..n)
            .map(|i| (self.turn + i) % n)
            .filter(|&i| self.peers[i].live && !self.peers[i].spare)
            .min_by_key(|&i| self.peers[i].in_flight)?;
        self.turn = (best + 1) % n.max(1);
        Some(best)
    }

    pub fn on_worker_frame(&mut self, from: usize, frame: Frame, now: Instant) {
        let Some(peer) = self.peers.iter().position(|p| p.rank == from) else {
            return;
        };
        // Any message shows the worker is alive.
        self.peers[peer].last_pong = now;
        if !self.peers[peer].live {
            self.peers[peer].live = true;
            self.peers[peer].dead = false;
            self.membership.set(from, true);
            self.membership.set_dead(from, false);
            log::warn!("worker rank {from} answers again: back in rotation");
        }
        if let Frame::Pong { .. } = frame {
            return;
        }
        let Some(flow) = self.flows.get_mut(&frame.id()) else {
            return; // closed here already
        };
        if flow.peer != peer {
            return; // from a worker the stream was taken away from
        }
        let first = !std::mem::replace(&mut flow.taken, true);
        let credit = matches!(frame, Frame::Credit { .. });
        if !credit {
            flow.answered = true;
        }
        if !credit || !flow.retry {
            flow.open = None;
        }
        if first && credit && !flow.wants_ack {
            return; // the worker took it; nobody else needs to know
        }
        self.inbox.entry(frame.id()).or_default().push(frame);
    }

    /// Each stream's gathered frames and the connection thread to hand
    /// them to (once the lock is let go); the streams they end are
    /// forgotten.
    pub fn deliver(&mut self) -> Vec<(Sender<Vec<Frame>>, Vec<Frame>)> {
        let mut handed = Vec::with_capacity(self.inbox.len());
        for (id, batch) in self.inbox.drain() {
            let Some(flow) = self.flows.get(&id) else {
                continue;
            };
            let done = batch.iter().any(|f| ends_stream(f, flow.tunnel));
            handed.push((flow.tx.clone(), batch));
            if done {
                let peer = flow.peer;
                self.flows.remove(&id);
                let p = &mut self.peers[peer];
                p.in_flight = p.in_flight.saturating_sub(1);
            }
        }
        handed
    }
}

mod liveness;

#[cfg(test)]
#[path = "dispatcher_tests.rs"]
mod tests;
