//! MPI: start-up, rank 0's dispatcher, the workers' loop, and telling
//! workers to exit. This is the only module that calls rsmpi. Any thread
//! may call MPI, one at a time, under its rank's lock (`Mpi`): MPI is
//! initialised `Serialized` (or better, where the library grants it).

mod bell;
mod dispatch;
pub mod keeper;
mod outbox;
mod worker_loop;

use crate::stream::transport::{Out, Runner};
pub use dispatch::{link, Link, Membership, Poller};
use mpi::point_to_point::Destination;
use mpi::topology::Communicator;
use mpi::Threading;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;

/// Tag of the exit code rank 0 sends to end a worker.
const TAG_SHUTDOWN: mpi::Tag = 1;
/// Tag of the card a worker sends at start: where its bell is.
const TAG_BELL: mpi::Tag = 3;
/// How long rank 0 takes the workers' last frames before it exits.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(300);
/// How often an idle worker looks for frames: a request after a quiet
/// spell waits at most this long there. Each poll costs a wake-up (35-70
/// µs of CPU on a small virtual machine): polling every 4 ms took 2.7% of
/// a core for an idle 3-rank cluster, every 15 ms 1.4-1.5%, against the 1%
/// allowed.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// The same once the worker's bell rang (rank 0 reaches it): a request
/// rings it, so the poll is only for heartbeats (rank 0 pings every 200 ms
/// and waits 1 s before it calls a worker stalled).
const IDLE_POLL_RUNG: Duration = Duration::from_millis(200);
/// Rank 0's idle poll: a stream that opens wakes its poller at once, so
/// only heartbeat answers wait for it (it pings every 200 ms, and calls a
/// worker stalled after 1 s of silence). Idle, a 3-rank cluster used 0.6%
/// of a core with 100 ms here, rank 0 most of it.
const IDLE_POLL_FRONT: Duration = Duration::from_millis(200);

/// A rank's MPI lock and what is used under it (the world communicator,
/// the send buffers in flight, rank 0's tables): every MPI call of the
/// rank is made inside `with`, by whichever thread needs it. Once closed
/// (the rank is about to finalise MPI), nothing runs under it any more.
pub struct Mpi<T> {
    inner: Mutex<Option<T>>,
}

// SAFETY: `T` holds MPI handles and the raw buffers of sends in flight,
// which rsmpi does not mark Send or Sync. They are only touched inside
// `with` and `close`, under the mutex, so one thread at a time, and MPI was
// initialised with at least MPI_THREAD_SERIALIZED, which allows exactly
// that.
unsafe impl<T> Send for Mpi<T> {}
// SAFETY: as above: shared access goes through the mutex only.
unsafe impl<T> Sync for Mpi<T> {}

impl<T> Mpi<T> {
    pub fn new(inner: T) -> Mpi<T> {
        Mpi {
            inner: Mutex::new(Some(inner)),
        }
    }

    /// Run `f` under the lock; `None` once closed. A panic under it
    /// (rsmpi panics on some MPI errors) leaves the send list and tables
    /// whole, so a poisoned lock is recovered: refusing every later frame
    /// would stop the rank.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_mut().map(f)
    }

    /// Run `f` under the lock if no other thread holds it now: `Err(Busy)`
    /// when one does (it is making MPI progress itself), `Ok(None)` once
    /// closed. A poller that finds the lock taken polls later instead of
    /// waiting in line behind the senders (a wait is two context switches).
    pub fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<Option<R>, Busy> {
        let mut guard = match self.inner.try_lock() {
            Ok(guard) => guard,
            // Recovered when poisoned, as in `with`.
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(Busy),
        };
        Ok(guard.as_mut().map(f))
    }

    /// Run `f` under the lock for the last time: after it, no thread calls
    /// MPI through this lock, so MPI may be finalised.
    pub fn close<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let result = guard.as_mut().map(f);
        // `f` waited for the sends in flight: nothing is left to drop
        // that MPI still reads.
        *guard = None;
        result
    }
}

/// Another thread holds the MPI lock now.
#[derive(Debug)]
pub struct Busy;

/// The MPI world this process belongs to; a lone process is a world of one.
pub enum Cluster {
    Solo,
    Mpi {
        universe: mpi::environment::Universe,
    },
}

/// Whether a process launcher (MPICH's Hydra, Open MPI's PRRTE) started us.
/// Without one, MPI is not initialised at all: singleton start-up differs
/// between MPI libraries and buys nothing for a world of one.
fn launched_by_mpirun() -> bool {
    [
        "PMI_RANK",
        "PMI_SIZE",
        "PMI_FD",
        "PMIX_RANK",
        "OMPI_COMM_WORLD_SIZE",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

impl Cluster {
    /// Initialise MPI if we run under `mpirun`.
    pub fn init() -> Result<Cluster, String> {
        if !launched_by_mpirun() {
            return Ok(Cluster::Solo);
        }
        match mpi::initialize_with_threading(Threading::Serialized) {
            Some((universe, granted)) if granted >= Threading::Serialized => {
                // An error talking to a rank (a dead one) is returned, not
                // fatal: heartbeats decide what it means.
                // SAFETY: MPI is initialised; both handles are the
                // library's own constants.
                unsafe {
                    mpi::ffi::MPI_Comm_set_errhandler(
                        mpi::ffi::RSMPI_COMM_WORLD,
                        mpi::ffi::RSMPI_ERRORS_RETURN,
                    )
                };
                Ok(Cluster::Mpi { universe })
            }
            Some((_, granted)) => Err(format!(
                "the MPI library grants only {granted:?} threading; mpiweb needs Serialized"
            )),
            None => Err("MPI was already initialised".into()),
        }
    }

    pub fn rank(&self) -> usize {
        match self {
            Cluster::Solo => 0,
            Cluster::Mpi { universe } => universe.world().rank() as usize,
        }
    }

    pub fn size(&self) -> usize {
        match self {
            Cluster::Solo => 1,
            Cluster::Mpi { universe } => universe.world().size() as usize,
        }
    }

    /// The worker loop of ranks > 0, driving what `make` builds (given
    /// where its frames go). Returns the exit code rank 0 sent.
    pub fn run_worker(&self, make: impl FnOnce(Out) -> Box<dyn Runner>) -> i32 {
        let Cluster::Mpi { .. } = self else {
            return 0;
        };
        worker_loop::run(make)
    }

    /// Rank 0's poller, on the calling (main) thread, until `stop` is set.
    pub fn dispatch(&self, poller: &Poller, stop: &AtomicBool) {
        if let Cluster::Mpi { .. } = self {
            poller.run(stop);
        }
    }

    /// From rank 0, before any `Link` was made (a failed start): tell
    /// every worker to exit with `code`. With a `Link`, `Poller::shutdown`.
    pub fn shutdown_workers(&self, code: i32) {
        let Cluster::Mpi { universe } = self else {
            return;
        };
        let world = universe.world();
        let all: Vec<usize> = (1..world.size() as usize).collect();
        tell_workers(&world, &all, code);
    }
}

/// Send every worker the exit code, then take and drop the frames they
/// sent before they stopped (heartbeat answers): left unreceived, MPI
/// complains at exit.
fn tell_workers(world: &mpi::topology::SimpleCommunicator, ranks: &[usize], code: i32) {
    for &rank in ranks {
        world
            .process_at_rank(rank as mpi::Rank)
            .send_with_tag(&code, TAG_SHUTDOWN);
    }
    let until = std::time::Instant::now() + SHUTDOWN_DRAIN;
    while std::time::Instant::now() < until {
        outbox::receive(world, |_, _| {});
        std::thread::sleep(Duration::from_millis(5));
    }
}
