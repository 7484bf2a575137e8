//! MPI: start-up, the worker loop, and telling workers to exit. This is
//! the only module that calls rsmpi, and on each rank only the main
//! thread does (MPI is initialised `Funneled`).

use mpi::point_to_point::{Destination, Source};
use mpi::topology::Communicator;
use mpi::Threading;
use std::thread;
use std::time::Duration;

/// Message tags between ranks.
const TAG_SHUTDOWN: mpi::Tag = 1;
/// Longest sleep of an idle worker between two probes. MPI's blocking
/// receive spins a core, so workers probe and sleep instead.
const MAX_IDLE_SLEEP: Duration = Duration::from_millis(50);

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
    pub fn run_worker(&self) -> i32 {
        let Cluster::Mpi { universe } = self else {
            return 0;
        };
        let world = universe.world();
        let root = world.process_at_rank(0);
        let mut sleep = Duration::from_millis(1);
        loop {
            if let Some(status) = root.immediate_probe_with_tag(TAG_SHUTDOWN) {
                let _ = status;
                let (code, _) = root.receive_with_tag::<i32>(TAG_SHUTDOWN);
                return code;
            }
            thread::sleep(sleep);
            sleep = (sleep * 2).min(MAX_IDLE_SLEEP);
        }
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
    }
}
