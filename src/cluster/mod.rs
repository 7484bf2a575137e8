//! MPI: start-up, rank 0's dispatcher, the workers' loop, and telling
//! workers to exit. This is the only module that calls rsmpi. Any thread
//! may call MPI, one at a time, under its rank's lock (`Mpi`): MPI is
//! initialised `Serialized` (or better, where the library grants it). The
//! one exception: under `MPI_THREAD_MULTIPLE` (Open MPI's launcher), rank
//! 0 spawns a process in a dead worker's place outside the lock, one spawn
//! at a time (`dispatch`), so that its 300 ms hold up no other call.

mod bell;
mod dispatch;
pub mod keeper;
mod outbox;
mod spawn;
mod worker_loop;

pub use crate::stream::membership::Membership;
use crate::stream::transport::{Out, Runner};
pub use dispatch::{link, Link, Poller};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;
use spawn::Ranks;
use std::sync::atomic::{AtomicBool, Ordering};
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
/// rank is made inside `with`, by whichever thread needs it (but a spawn
/// under `MPI_THREAD_MULTIPLE`, see above). Once closed
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
        /// In a process rank 0 spawned in a dead worker's place: the rank
        /// it stands for and the size of rank 0's world.
        stands_for: Option<(usize, usize)>,
    },
}

/// MPI runs with `MPI_THREAD_MULTIPLE`: a call that blocks long (a spawn)
/// may run outside the rank's lock.
static MULTIPLE: AtomicBool = AtomicBool::new(false);

/// Whether the launcher is Open MPI's, whose library can spawn a process
/// in a dead worker's place. Only there is `MPI_THREAD_MULTIPLE` asked
/// for, so that the spawn's 300 ms do not hold the MPI lock; elsewhere
/// `Serialized` is enough.
fn launcher_can_spawn() -> bool {
    std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some()
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
        let wanted = match launcher_can_spawn() {
            true => Threading::Multiple,
            false => Threading::Serialized,
        };
        let (universe, granted) = match mpi::initialize_with_threading(wanted) {
            Some(started) => started,
            None => return Err("MPI was already initialised".into()),
        };
        if granted < Threading::Serialized {
            return Err(format!(
                "the MPI library grants only {granted:?} threading; mpiweb needs Serialized"
            ));
        }
        MULTIPLE.store(granted == Threading::Multiple, Ordering::Relaxed);
        // An error talking to a rank (a dead one) is returned, not fatal:
        // heartbeats decide what it means; a spawn refused says why.
        // SAFETY: MPI is initialised; the handles are the library's own
        // constants.
        unsafe {
            mpi::ffi::MPI_Comm_set_errhandler(
                mpi::ffi::RSMPI_COMM_WORLD,
                mpi::ffi::RSMPI_ERRORS_RETURN,
            );
            mpi::ffi::MPI_Comm_set_errhandler(
                mpi::ffi::RSMPI_COMM_SELF,
                mpi::ffi::RSMPI_ERRORS_RETURN,
            );
        }
        let stands_for = match spawn::parent() {
            Some(parent) => Some(spawn::identity(parent)?),
            None => None,
        };
        Ok(Cluster::Mpi {
            universe,
            stands_for,
        })
    }

    pub fn rank(&self) -> usize {
        match self {
            Cluster::Solo => 0,
            Cluster::Mpi {
                stands_for: Some((rank, _)),
                ..
            } => *rank,
            Cluster::Mpi { universe, .. } => universe.world().rank() as usize,
        }
    }

    pub fn size(&self) -> usize {
        match self {
            Cluster::Solo => 1,
            Cluster::Mpi {
                stands_for: Some((_, size)),
                ..
            } => *size,
            Cluster::Mpi { universe, .. } => universe.world().size() as usize,
        }
    }

    /// The worker loop of ranks > 0, driving what `make` builds (given
    /// where its frames go). Returns the exit code rank 0 sent.
    pub fn run_worker(&self, make: impl FnOnce(Out) -> Box<dyn Runner>) -> i32 {
        let Cluster::Mpi { stands_for, .. } = self else {
            return 0;
        };
        match (stands_for, spawn::parent()) {
            (Some(_), Some(parent)) => worker_loop::run(parent, make),
            // The world is never freed: its wrapper may be leaked.
            (Some(_), None) | (None, _) => {
                worker_loop::run(Box::leak(Box::new(SimpleCommunicator::world())), make)
            }
        }
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
        let Cluster::Mpi { universe, .. } = self else {
            return;
        };
        let all: Vec<usize> = (1..universe.world().size() as usize).collect();
        tell_workers(&Ranks::new(), &all, code);
    }
}

/// The exit-code message: four bytes, little-endian.
fn exit_message(code: i32) -> Vec<u8> {
    code.to_le_bytes().to_vec()
}

/// The exit code in a message from rank 0 (1 if it is malformed).
fn exit_code(message: &[u8]) -> i32 {
    message.try_into().map_or(1, i32::from_le_bytes)
}

/// Send every worker the exit code, then take and drop the frames they
/// sent before they stopped (heartbeat answers): left unreceived, MPI
/// complains at exit.
fn tell_workers(ranks: &Ranks, to: &[usize], code: i32) {
    for &rank in to {
        ranks.send_code(rank, code, TAG_SHUTDOWN);
    }
    let until = std::time::Instant::now() + SHUTDOWN_DRAIN;
    while std::time::Instant::now() < until {
        ranks.receive(|_, _| {});
        std::thread::sleep(Duration::from_millis(5));
    }
}
