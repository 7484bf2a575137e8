//! MPI: start-up, rank 0's dispatcher, the workers' loop, and telling
//! workers to exit. This is the only module that calls rsmpi, and on each
//! rank only the main thread does (MPI is initialised `Funneled`).

mod dispatch;
mod outbox;
mod worker_loop;

use crate::proxy::worker::Side;
pub use dispatch::{link, Cmd, Link, Membership};
use mpi::point_to_point::Destination;
use mpi::topology::Communicator;
use mpi::Threading;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

/// Tag of the exit code rank 0 sends to end a worker.
const TAG_SHUTDOWN: mpi::Tag = 1;
/// How long rank 0 takes the workers' last frames before it exits.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(300);

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
        match mpi::initialize_with_threading(Threading::Funneled) {
            Some((universe, _)) => Ok(Cluster::Mpi { universe }),
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

    /// The worker loop of ranks > 0. Returns the exit code rank 0 sent.
    /// `side` runs the store's streams when this rank keeps a replica.
    pub fn run_worker(&self, upstream_timeout: Duration, side: Option<Side>) -> i32 {
        let Cluster::Mpi { universe } = self else {
            return 0;
        };
        worker_loop::run(&universe.world(), upstream_timeout, side)
    }

    /// Rank 0's dispatcher, on the calling (main) thread, until `stop` is
    /// set or every `Link` is dropped.
    pub fn dispatch(&self, cmds: Receiver<Cmd>, membership: Arc<Membership>, stop: &AtomicBool) {
        let Cluster::Mpi { universe } = self else {
            return;
        };
        let world = universe.world();
        dispatch::run(&world, world.size() as usize, cmds, membership, stop);
    }

    /// From rank 0: tell every worker to exit with `code`.
    pub fn shutdown_workers(&self, code: i32) {
        let Cluster::Mpi { universe } = self else {
            return;
        };
        let world = universe.world();
        for rank in 1..world.size() {
            world
                .process_at_rank(rank)
                .send_with_tag(&code, TAG_SHUTDOWN);
        }
        // Frames the workers sent before they stopped (heartbeat answers)
        // are taken and dropped: left unreceived, MPI complains at exit.
        let until = std::time::Instant::now() + SHUTDOWN_DRAIN;
        while std::time::Instant::now() < until {
            outbox::receive(&world, |_, _| {});
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
