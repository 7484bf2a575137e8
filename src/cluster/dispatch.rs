//! Rank 0's dispatcher: the tables of streams and workers, behind rank 0's
//! MPI lock. A connection thread opens its stream and sends its frames
//! itself through `Link` (a `Transport`): each new stream goes to the live
//! worker with the fewest streams in flight. One poller thread receives
//! the workers' frames, hands each stream's batch to the connection thread
//! that waits for it (its one wake), and heartbeats the workers.

use super::bell::{Card, Ringer};
use super::outbox::{nearly_idle, Backoff, Outbox};
use super::spawn::{self, Ranks};
use super::{Mpi, TAG_BELL};
use crate::error::Error;
use crate::stream::transport::Transport;
use crate::stream::transport::{ends_stream, is_tunnel, Placed};
use crate::stream::wire::{AbortReason, Frame};
use mpi::topology::InterCommunicator;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How often rank 0 pings every worker.
const PING_EVERY: Duration = Duration::from_millis(200);
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

/// The exit code a worker taken for dead gets if it wakes after a new
/// process took its place.
const REPLACED_EXIT: i32 = 0;

/// What connection threads ask of the dispatcher.
pub enum Cmd {
    /// A new stream, for the least-loaded worker or for the rank given.
    Open(Frame, Sender<Vec<Frame>>, Option<usize>, Placed),
    Frame(Frame),
    Close(u64, bool),
}

/// The connection threads' end: a `Transport` that does its own MPI
/// sends, under rank 0's MPI lock, with the dispatcher's tables.
pub struct Link {
    mpi: Arc<Mpi<Dispatcher>>,
    live: Arc<Membership>,
    kick: Arc<Kick>,
}

/// Which workers are in rotation, as the dispatcher's heartbeats found;
/// read by anyone who places work on a given rank (the store).
pub struct Membership {
    /// By rank; rank 0 is never a worker here.
    live: Vec<AtomicBool>,
    /// By rank: taken for dead (silent past `DEAD_AFTER`).
    dead: Vec<AtomicBool>,
    /// By rank: a spare, idle until a worker dies (`--spares`).
    spare: Vec<AtomicBool>,
    /// By rank: how many times a new process was spawned in its place.
    replaced: Vec<AtomicU32>,
}

impl Membership {
    fn set(&self, rank: usize, live: bool) {
        if let Some(flag) = self.live.get(rank) {
            flag.store(live, Ordering::Relaxed);
        }
    }

    fn set_dead(&self, rank: usize, dead: bool) {
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
        (1..self.spare.len())
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
        (1..self.dead.len())
            .filter(|&r| self.dead[r].load(Ordering::Relaxed))
            .collect()
    }
}

/// Wakes the poller from a long sleep when a stream opens: the answer is
/// then looked for at once. A poller that polls often is never woken (a
/// wake is a context switch, the budget of a busy rank).
#[derive(Default)]
pub struct Kick {
    /// Streams opened so far: a poller about to sleep compares it with
    /// what it saw under the MPI lock, so an open in between is not missed.
    opened: AtomicU64,
    asleep: AtomicBool,
    kicked: Mutex<bool>,
    cv: Condvar,
}

impl Kick {
    fn kick(&self) {
        self.opened.fetch_add(1, Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst) {
            *self.kicked.lock().unwrap_or_else(|p| p.into_inner()) = true;
            self.cv.notify_one();
        }
    }

    /// Streams opened so far (read under the MPI lock, before a poll).
    fn opened(&self) -> u64 {
        self.opened.load(Ordering::SeqCst)
    }

    /// Sleep up to `wait`, or until kicked; not at all if a stream opened
    /// since `seen`. Either the opener sees `asleep` and notifies (the
    /// notice waits for the mutex this sleep holds until it waits), or
    /// this sleep sees its count: both are SeqCst.
    fn sleep(&self, wait: Duration, seen: u64) {
        // Recovered when poisoned: the lock guards one flag.
        let mut kicked = self.kicked.lock().unwrap_or_else(|p| p.into_inner());
        self.asleep.store(true, Ordering::SeqCst);
        if !*kicked && self.opened() == seen {
            kicked = self
                .cv
                .wait_timeout(kicked, wait)
                .map_or_else(|p| p.into_inner().0, |r| r.0);
        }
        *kicked = false;
        self.asleep.store(false, Ordering::SeqCst);
    }
}

/// The rank-0 end of a world of `size` ranks, the last `spares` of which
/// start as spares: the connection threads' `Link`, and the poller's
/// `Poller`.
pub fn link(size: usize, spares: usize) -> (Link, Poller, Arc<Membership>) {
    let first_spare = size.saturating_sub(spares).max(1);
    let live = Arc::new(Membership {
        live: (0..size).map(|rank| AtomicBool::new(rank > 0)).collect(),
        dead: (0..size).map(|_| AtomicBool::new(false)).collect(),
        spare: (0..size)
            .map(|rank| AtomicBool::new(rank >= first_spare))
            .collect(),
        replaced: (0..size).map(|_| AtomicU32::new(0)).collect(),
    });
    let now = Instant::now();
    let d = Dispatcher {
        ranks: Ranks::new(),
        to_spawn: Vec::new(),
        can_spawn: true,
        membership: Arc::clone(&live),
        out: Outbox::new(size),
        peers: (1..size)
            .map(|rank| Peer {
                rank,
                in_flight: 0,
                last_pong: now,
                live: true,
                dead: false,
                spare: rank >= first_spare,
            })
            .collect(),
        flows: HashMap::new(),
        turn: 0,
        ping_seq: 0,
        inbox: HashMap::new(),
        ringer: Ringer::new(size),
        rings: Vec::new(),
        cards_due: size.saturating_sub(1),
    };
    let mpi = Arc::new(Mpi::new(d));
    let kick = Arc::new(Kick::default());
    let link = Link {
        mpi: Arc::clone(&mpi),
        live: Arc::clone(&live),
        kick: Arc::clone(&kick),
    };
    (link, Poller { mpi, kick, size }, live)
}

impl Link {
    fn command(&self, cmd: Cmd) {
        let refused = match &cmd {
            Cmd::Open(frame, tx, _, _) => Some((frame.id(), tx.clone())),
            Cmd::Frame(_) | Cmd::Close(..) => None,
        };
        let done = self.mpi.with(|d| {
            d.command(cmd);
            d.out.flush(&d.ranks);
            // After the send: a worker that wakes finds the frame.
            for rank in std::mem::take(&mut d.rings) {
                d.ringer.ring(rank);
            }
        });
        // After the shutdown no stream opens: its thread hears so at once.
        if let (None, Some((id, tx))) = (done, refused) {
            let _ = tx.send(vec![Frame::Abort {
                id,
                reason: AbortReason::Refused,
            }]);
        }
    }
}

impl Transport for Link {
    /// A stream no worker took ends with an `Abort` on its channel; its
    /// rank is then 0's.
    fn open(&self, open: Frame, tx: Sender<Vec<Frame>>) -> Result<Placed, Error> {
        let placed = Placed::default();
        self.command(Cmd::Open(open, tx, None, Arc::clone(&placed)));
        self.kick.kick();
        Ok(placed)
    }
    fn open_at(&self, rank: usize, open: Frame, tx: Sender<Vec<Frame>>) -> Result<Placed, Error> {
        let placed = Placed::default();
        self.command(Cmd::Open(open, tx, Some(rank), Arc::clone(&placed)));
        self.kick.kick();
        Ok(placed)
    }
    fn live_workers(&self) -> Vec<usize> {
        (1..self.live.live.len())
            .filter(|&r| self.live.live[r].load(Ordering::Relaxed) && !self.live.is_spare(r))
            .collect()
    }
    /// Spares are not workers until called in.
    fn workers(&self) -> Vec<usize> {
        (1..self.live.live.len())
            .filter(|&r| !self.live.is_spare(r))
            .collect()
    }
    fn dead_workers(&self) -> Vec<usize> {
        self.live.dead()
    }
    fn spare_workers(&self) -> Vec<usize> {
        self.live.spares()
    }
    fn replaced(&self, rank: usize) -> u32 {
        self.live.replaced(rank)
    }
    fn send(&self, frame: Frame) {
        self.command(Cmd::Frame(frame));
    }
    fn close(&self, id: u64, finished: bool) {
        self.command(Cmd::Close(id, finished));
    }
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

/// Rank 0's MPI state and tables, behind its MPI lock.
pub struct Dispatcher {
    ranks: Ranks,
    membership: Arc<Membership>,
    out: Outbox,
    peers: Vec<Peer>,
    flows: HashMap<u64, Flow>,
    /// Where the search for the least-loaded worker starts (round-robin
    /// among equals).
    turn: usize,
    ping_seq: u64,
    /// Frames from workers gathered during one receive, by stream: each
    /// stream's connection thread gets its frames in one batch.
    inbox: HashMap<u64, Vec<Frame>>,
    /// The workers' bells, and the ranks to ring once the frames are sent.
    ringer: Ringer,
    rings: Vec<usize>,
    /// Workers whose card has not come yet: once none, polls stop
    /// probing for cards.
    cards_due: usize,
    /// Ranks taken for dead, to start a new process for (and whether it
    /// is to be a spare, a spare having taken the dead one's place).
    to_spawn: Vec<(usize, bool)>,
    /// Until the MPI library refuses a spawn.
    can_spawn: bool,
}

/// The one thread of rank 0 that receives: it hands each stream's frames
/// to the connection thread waiting for them, and heartbeats the workers.
pub struct Poller {
    mpi: Arc<Mpi<Dispatcher>>,
    kick: Arc<Kick>,
    /// The world's size.
    size: usize,
}

impl Poller {
    /// Tell every worker not taken for dead to exit with `code`, under the
    /// lock, and close it: no thread of rank 0 calls MPI after this.
    /// Returns whether a worker died: then MPI must not be finalised (that
    /// would wait for the dead rank forever).
    pub fn shutdown(&self, code: i32) -> bool {
        self.mpi
            .close(|d| {
                d.out.flush(&d.ranks);
                d.out.wait(Duration::from_secs(1));
                let alive: Vec<usize> =
                    d.peers.iter().filter(|p| !p.dead).map(|p| p.rank).collect();
                super::tell_workers(&d.ranks, &alive, code);
                alive.len() < d.peers.len()
            })
            .unwrap_or(false)
    }

    /// Poll until `stop` is set.
    pub fn run(&self, stop: &AtomicBool) {
        let mut backoff = Backoff::new(super::IDLE_POLL_FRONT);
        let mut next_ping = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let seen = self.kick.opened();
            let polled = self.mpi.try_with(|d| {
                d.learn_bells();
                let mut got = Vec::new();
                let busy = d.ranks.receive(|from, frame| got.push((from, frame)));
                for (from, frame) in got {
                    d.on_worker_frame(from, frame);
                }
                let handed = d.deliver();
                if Instant::now() >= next_ping {
                    d.heartbeat();
                    next_ping = Instant::now() + PING_EVERY;
                }
                d.out.flush(&d.ranks);
                let sending = d.out.progress();
                let to_spawn = std::mem::take(&mut d.to_spawn);
                (busy, d.flows.len() + usize::from(sending), handed, to_spawn)
            });
            let (busy, in_flight) = match polled {
                Ok(Some((busy, in_flight, handed, to_spawn))) => {
                    for (rank, spare) in to_spawn {
                        self.spawn_for(rank, spare);
                    }
                    // Woken outside the lock: a thread that wakes and
                    // sends at once does not find it taken.
                    for (tx, batch) in handed {
                        let _ = tx.send(batch); // the connection may be gone: Close follows
                    }
                    (busy, in_flight)
                }
                Ok(None) => return,
                // A connection thread is sending: poll after a batch's wait.
                Err(super::Busy) => (false, 3),
            };
            if busy {
                backoff.reset();
            }
            let wait = backoff.next(nearly_idle(in_flight), in_flight);
            if wait.is_zero() {
                std::thread::yield_now();
            } else if wait > LONG_SLEEP {
                self.kick.sleep(wait, seen);
            } else {
                std::thread::sleep(wait);
            }
        }
    }
}

impl Poller {
    /// Start a process in dead `rank`'s place, on a thread of its own: a
    /// spawn blocks for about 300 ms. With `MPI_THREAD_MULTIPLE` it runs
    /// outside the MPI lock; otherwise under it, and proxied requests wait
    /// for it once.
    fn spawn_for(&self, rank: usize, spare: bool) {
        let mpi = Arc::clone(&self.mpi);
        let size = self.size;
        let started = std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                let began = Instant::now();
                let spawned = match super::MULTIPLE.load(Ordering::Relaxed) {
                    true => spawn::spawn(rank, size),
                    false => mpi
                        .with(|_| spawn::spawn(rank, size))
                        .unwrap_or_else(|| Err("the rank is stopping".into())),
                };
                let mut spawned = Some(spawned);
                mpi.with(|d| {
                    if let Some(spawned) = spawned.take() {
                        d.replaced(rank, spare, spawned, began.elapsed());
                    }
                });
                // Stopping meanwhile: never disconnected (see `Ranks`).
                if let Some(Ok(inter)) = spawned {
                    std::mem::forget(inter);
                }
            });
        if let Err(e) = started {
            log::warn!("no thread to spawn a process in place of rank {rank}: {e}");
        }
    }
}

/// A poller's sleep longer than this can be cut short by a new stream.
const LONG_SLEEP: Duration = Duration::from_millis(1);

impl Dispatcher {
    /// Take the cards workers sent at start: where their bells are.
    fn learn_bells(&mut self) {
        while self.cards_due > 0 {
            let Some((rank, bytes)) = self.ranks.take_tagged(TAG_BELL) else {
                return;
            };
            self.cards_due -= 1;
            match Card::decode(&bytes) {
                Some(card) => self.ringer.learn(rank, &card),
                None => log::warn!("rank {rank} sent a bell card that does not parse"),
            }
        }
    }

    /// Ring worker `rank`'s bell for a stream just sent, if few are in
    /// flight.
    fn ring_if_quiet(&mut self, rank: usize) {
        if self.flows.len() <= RING_MAX_IN_FLIGHT {
            self.rings.push(rank);
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Open(frame, tx, Some(rank), placed) => {
                let id = frame.id();
                // A spare too: it answers the status page's questions.
                let peer = self.peers.iter().position(|p| p.rank == rank && p.live);
                let Some(peer) = peer else {
                    let _ = tx.send(vec![Frame::Abort {
                        id,
                        reason: AbortReason::Refused,
                    }]);
                    return;
                };
                self.peers[peer].in_flight += 1;
                self.out.push(&self.ranks, rank, &frame);
                placed.store(rank, Ordering::Relaxed);
                let wants_ack = frame.opens_body();
                self.flows.insert(
                    id,
                    Flow {
                        placed,
                        peer,
                        tx,
                        open: None,
                        taken: false,
                        answered: false,
                        retry: false,
                        wants_ack,
                        tunnel: false,
                        pinned: true,
                    },
                );
                self.ring_if_quiet(rank);
            }
            Cmd::Open(frame, tx, None, placed) => {
                let id = frame.id();
                let Some(peer) = self.pick() else {
                    let _ = tx.send(vec![Frame::Abort {
                        id,
                        reason: AbortReason::Refused,
                    }]);
                    return;
                };
                self.peers[peer].in_flight += 1;
                self.out.push(&self.ranks, self.peers[peer].rank, &frame);
                placed.store(self.peers[peer].rank, Ordering::Relaxed);
                let tunnel = is_tunnel(&frame);
                let wants_ack = tunnel || frame.opens_body();
                let retry = frame.may_run_twice();
                self.flows.insert(
                    id,
                    Flow {
                        placed,
                        peer,
                        tx,
                        open: Some(frame),
                        taken: false,
                        answered: false,
                        retry,
                        wants_ack,
                        tunnel,
                        pinned: false,
                    },
                );
                let rank = self.peers[peer].rank;
                self.ring_if_quiet(rank);
            }
            Cmd::Frame(frame) => {
                if let Some(flow) = self.flows.get(&frame.id()) {
                    self.out
                        .push(&self.ranks, self.peers[flow.peer].rank, &frame);
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
                    self.out.push(&self.ranks, rank, &abort);
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

    fn on_worker_frame(&mut self, from: usize, frame: Frame) {
        let Some(peer) = self.peers.iter().position(|p| p.rank == from) else {
            return;
        };
        // Any message shows the worker is alive.
        self.peers[peer].last_pong = Instant::now();
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
    fn deliver(&mut self) -> Vec<(Sender<Vec<Frame>>, Vec<Frame>)> {
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

    /// Ping every worker; take silent ones out of rotation and send the
    /// streams they have not taken to others.
    fn heartbeat(&mut self) {
        self.ping_seq += 1;
        let ping = Frame::Ping { id: self.ping_seq };
        for peer in self.peers.iter().filter(|p| !p.dead) {
            self.out.push(&self.ranks, peer.rank, &ping);
        }
        let signalled = crate::server::signals::take_death_notice();
        for stalled in 0..self.peers.len() {
            let p = &self.peers[stalled];
            let silent = p.last_pong.elapsed();
            let dead_after = match signalled {
                true => DEAD_AFTER_SIGNAL,
                false => DEAD_AFTER,
            };
            if !p.dead && silent >= dead_after {
                self.bury(stalled);
                continue;
            }
            let p = &mut self.peers[stalled];
            if !p.live || p.last_pong.elapsed() < STALL_AFTER {
                continue;
            }
            p.live = false;
            self.membership.set(p.rank, false);
            log::warn!(
                "worker rank {} silent for {} ms: out of rotation",
                p.rank,
                p.last_pong.elapsed().as_millis()
            );
            self.resend_from(stalled);
        }
    }

    /// Take worker `index` for dead: out of rotation for good (unless it
    /// answers again), every stream on it ended with `WorkerLost` (502, and
    /// no upstream blamed for it), those not started yet sent elsewhere
    /// first.
    fn bury(&mut self, index: usize) {
        let rank = self.peers[index].rank;
        let silent = self.peers[index].last_pong.elapsed();
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

    /// A process was spawned (or not) in dead `rank`'s place, in `took`:
    /// it serves as that rank from now on, as a worker or as a spare.
    fn replaced(
        &mut self,
        rank: usize,
        spare: bool,
        spawned: Result<InterCommunicator, String>,
        took: Duration,
    ) {
        let inter = match spawned {
            Ok(inter) => inter,
            Err(e) => {
                self.can_spawn = false;
                log::warn!(
                    "no new process in place of dead rank {rank} (this MPI library cannot spawn one: {e}); the cluster goes on without it"
                );
                return;
            }
        };
        let Some(index) = self.peers.iter().position(|p| p.rank == rank) else {
            std::mem::forget(inter); // never disconnected: see `Ranks`
            return;
        };
        // The process it replaces, if only stalled, exits when it wakes:
        // nothing it sends is read any more.
        let exit = super::exit_message(REPLACED_EXIT);
        self.out
            .send_tagged(&self.ranks, rank, exit, super::TAG_SHUTDOWN);
        self.ranks.replace(rank, inter);
        // Its bell is a new one.
        self.cards_due += 1;
        let p = &mut self.peers[index];
        p.dead = false;
        p.live = true;
        p.spare = spare;
        p.in_flight = 0;
        p.last_pong = Instant::now();
        self.membership.set(rank, true);
        self.membership.set_dead(rank, false);
        if let Some(flag) = self.membership.spare.get(rank) {
            flag.store(spare, Ordering::Relaxed);
        }
        if let Some(n) = self.membership.replaced.get(rank) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        let role = if spare { "spare" } else { "worker" };
        log::warn!(
            "a new process stands for rank {rank} as a {role}, spawned in {} ms",
            took.as_millis()
        );
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
        self.out.push(&self.ranks, to_rank, &open);
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
            self.out.push(&self.ranks, rank, &abort);
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
            self.out.push(&self.ranks, from_rank, &abort);
            log::info!("stream {id} re-sent from rank {from_rank} to rank {to_rank}");
        }
    }
}
