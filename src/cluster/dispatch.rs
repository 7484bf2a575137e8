//! Rank 0's dispatcher: the tables of streams and workers (`tables`, no
//! I/O) with MPI around them, behind rank 0's MPI lock. A connection
//! thread opens its stream and sends its frames itself through `Link` (a
//! `Transport`). One poller thread receives the workers' frames, hands
//! each stream's batch to the connection thread that waits for it (its one
//! wake), heartbeats the workers, and spawns processes in dead ones'
//! places.

use super::bell::{Card, Ringer};
use super::outbox::{nearly_idle, Backoff, Outbox};
use super::spawn::{self, Ranks};
use super::{Mpi, TAG_BELL};
use crate::error::Error;
use crate::stream::dispatcher::{Cmd, Sink, Tables, PING_EVERY};
use crate::stream::membership::Membership;
use crate::stream::transport::{Placed, Transport};
use crate::stream::wire::{AbortReason, Frame};
use mpi::topology::InterCommunicator;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The connection threads' end: a `Transport` that does its own MPI
/// sends, under rank 0's MPI lock, with the dispatcher's tables.
pub struct Link {
    mpi: Arc<Mpi<Dispatcher>>,
    live: Arc<Membership>,
    kick: Arc<Kick>,
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
    let sink = MpiSink {
        ranks: Ranks::new(),
        out: Outbox::new(size),
    };
    let (tables, live) = Tables::new(size, spares, sink, Instant::now());
    let d = Dispatcher {
        tables,
        ringer: Ringer::new(size),
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
            d.tables.command(cmd);
            d.tables.sink.flush();
            // After the send: a worker that wakes finds the frame.
            for rank in std::mem::take(&mut d.tables.rings) {
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
        self.live.live_workers()
    }
    fn workers(&self) -> Vec<usize> {
        self.live.workers()
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

/// The exit code a worker taken for dead gets if it wakes after a new
/// process took its place.
const REPLACED_EXIT: i32 = 0;

/// Rank 0's frames to workers, over MPI.
pub struct MpiSink {
    ranks: Ranks,
    out: Outbox,
}

impl Sink for MpiSink {
    fn send(&mut self, rank: usize, frame: &Frame) {
        self.out.push(&self.ranks, rank, frame);
    }
}

impl MpiSink {
    fn flush(&mut self) {
        self.out.flush(&self.ranks);
    }
}

/// Rank 0's MPI state and tables, behind its MPI lock.
pub struct Dispatcher {
    tables: Tables<MpiSink>,
    /// The workers' bells.
    ringer: Ringer,
    /// Workers whose card has not come yet: once none, polls stop
    /// probing for cards.
    cards_due: usize,
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
                let sink = &mut d.tables.sink;
                sink.flush();
                sink.out.wait(Duration::from_secs(1));
                let (alive, died) = d.tables.alive();
                super::tell_workers(&d.tables.sink.ranks, &alive, code);
                died
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
                let busy = (d.tables.sink.ranks).receive(|from, frame| got.push((from, frame)));
                let now = Instant::now();
                for (from, frame) in got {
                    d.tables.on_worker_frame(from, frame, now);
                }
                let handed = d.tables.deliver();
                if now >= next_ping {
                    let signalled = crate::server::signals::take_death_notice();
                    d.tables.heartbeat(now, signalled);
                    next_ping = now + PING_EVERY;
                }
                d.tables.sink.flush();
                let sending = d.tables.sink.out.progress();
                let to_spawn = std::mem::take(&mut d.tables.to_spawn);
                let in_flight = d.tables.in_flight() + usize::from(sending);
                (busy, in_flight, handed, to_spawn)
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
                // One spawn at a time: MPI_Comm_spawn is a collective on
                // MPI_COMM_SELF, which two threads may not call at once.
                // Recovered when poisoned: it guards nothing but the turn.
                let _turn = SPAWNING.lock().unwrap_or_else(|p| p.into_inner());
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

/// Spawns take turns (`Poller::spawn_for`).
static SPAWNING: Mutex<()> = Mutex::new(());

/// A poller's sleep longer than this can be cut short by a new stream.
const LONG_SLEEP: Duration = Duration::from_millis(1);

impl Dispatcher {
    /// Take the cards workers sent at start: where their bells are.
    fn learn_bells(&mut self) {
        while self.cards_due > 0 {
            let Some((rank, bytes)) = self.tables.sink.ranks.take_tagged(TAG_BELL) else {
                return;
            };
            self.cards_due -= 1;
            match Card::decode(&bytes) {
                Some(card) => self.ringer.learn(rank, &card),
                None => log::warn!("rank {rank} sent a bell card that does not parse"),
            }
        }
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
                self.tables.can_spawn = false;
                log::warn!(
                    "no new process in place of dead rank {rank} (this MPI library cannot spawn one: {e}); the cluster goes on without it"
                );
                return;
            }
        };
        let exit = super::exit_message(REPLACED_EXIT);
        if !self.tables.is_dead(rank) {
            // It answered again while the new one started (it was only
            // stalled, and may run streams again): the new one exits.
            log::warn!(
                "rank {rank} answered again while a process was spawned in its place: the new one exits"
            );
            spawn::dismiss(inter, &exit, super::TAG_SHUTDOWN);
            return;
        }
        // The process it replaces, if only stalled, exits when it wakes:
        // nothing it sends is read any more.
        let sink = &mut self.tables.sink;
        sink.out
            .send_tagged(&sink.ranks, rank, exit, super::TAG_SHUTDOWN);
        sink.ranks.replace(rank, inter);
        if !self.tables.replaced(rank, spare, Instant::now()) {
            return;
        }
        // Its bell is a new one.
        self.cards_due += 1;
        let role = if spare { "spare" } else { "worker" };
        log::warn!(
            "a new process stands for rank {rank} as a {role}, spawned in {} ms",
            took.as_millis()
        );
    }
}
