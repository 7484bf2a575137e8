//! A worker rank: one poller thread takes frame batches from rank 0 and
//! hands each to the `Worker`, whose pool thread runs it; the pool thread
//! sends its own answer frames under the rank's MPI lock, so an answer
//! wakes nobody on its way out. Between polls the poller sleeps on its
//! bell, which rank 0 rings for a new request while few are in flight.
//! The poller also answers heartbeats and stops when rank 0 says so.

use super::bell::Bell;
use super::outbox::{nearly_idle, receive, Backoff, Outbox};
use super::{Mpi, TAG_BELL, TAG_SHUTDOWN};
use crate::stream::transport::{Out, Runner};
use crate::stream::wire::Frame;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::Communicator;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A worker rung this recently spins after work.
const RUNG_LATELY: Duration = Duration::from_millis(1);

/// What a worker rank does under its MPI lock: send to rank 0 of `C`, its
/// world (or its parent's, in a process spawned in a dead worker's place).
struct Link<C: 'static> {
    world: &'static C,
    out: Outbox,
    /// Sends not complete yet: the poller keeps polling (which drives
    /// them) instead of an idle sleep. Set by whoever sent last.
    sending: Arc<AtomicBool>,
}

impl<C: Communicator> Link<C> {
    /// Send `batch` to rank 0 now, and free the buffers of sends done.
    fn send(&mut self, batch: &[Frame]) {
        for frame in batch {
            self.out.push(self.world, 0, frame);
        }
        self.out.flush(self.world);
        let left = self.out.progress();
        self.sending.store(left, Ordering::SeqCst);
    }
}

/// Serve rank 0 of `world` until it sends the exit code.
/// `make` builds what this rank runs, given where its frames go.
pub fn run<C: Communicator + 'static>(
    world: &'static C,
    make: impl FnOnce(Out) -> Box<dyn Runner>,
) -> i32 {
    let sending = Arc::new(AtomicBool::new(false));
    let mpi = Arc::new(Mpi::new(Link {
        world,
        // Only rank 0 is sent to.
        out: Outbox::new(1),
        sending: Arc::clone(&sending),
    }));
    // Rank 0 rings the bell when it sends a request while few are in
    // flight; without one, a request waits for the next poll.
    let bell = Bell::bind().and_then(|b| b.card().map(|card| (b, card)));
    let bell = match bell {
        Ok((bell, card)) => {
            let card = card.encode();
            mpi.with(|link| {
                link.world
                    .process_at_rank(0)
                    .send_with_tag(&card[..], TAG_BELL)
            });
            Some(bell)
        }
        Err(e) => {
            log::warn!("no bell for rank 0 to wake this worker with ({e}): polling only");
            None
        }
    };
    let sender = Arc::clone(&mpi);
    let worker = make(Arc::new(move |batch: Vec<Frame>| {
        // After the shutdown (`None`), a pool thread's frames go nowhere.
        let _ = sender.with(|link| link.send(&batch));
    }));
    // A new request is only seen by polling: an idle worker looks every
    // few milliseconds; a nearly idle one spins for a millisecond after
    // work, and a busy one polls every 20 to 100 µs.
    let mut backoff = Backoff::new(super::IDLE_POLL);
    let mut last_ring: Option<Instant> = None;
    loop {
        let mut frames = Vec::new();
        let polled = mpi.try_with(|link| {
            let root = link.world.process_at_rank(0);
            if root.immediate_probe_with_tag(TAG_SHUTDOWN).is_some() {
                let (bytes, _) = root.receive_vec_with_tag::<u8>(TAG_SHUTDOWN);
                return (Some(super::exit_code(&bytes)), false, false);
            }
            let busy = receive(link.world, |_, frame| frames.push(frame));
            let left = link.out.progress();
            link.sending.store(left, Ordering::SeqCst);
            (None, busy, left)
        });
        let (code, busy) = match polled {
            Ok(Some((code, busy, _))) => (code, busy),
            Ok(None) => return 1,
            // A pool thread is sending: poll after the usual wait.
            Err(super::Busy) => (None, false),
        };
        if let Some(code) = code {
            // Closed: pool threads still running send nothing more, and
            // MPI may be finalised.
            mpi.close(|link| link.out.wait(Duration::from_millis(500)));
            return code;
        }
        // A stream rank 0 gave up on while this rank stalled comes with
        // its `Abort` in the same batch when the rank wakes: its other
        // frames are dropped, so that it is not started (an `Open`) nor
        // finished (a store write's commit `End`) after rank 0 moved on.
        let aborted: HashSet<u64> = frames
            .iter()
            .filter(|f| matches!(f, Frame::Abort { .. }))
            .map(Frame::id)
            .collect();
        for frame in frames {
            if aborted.contains(&frame.id()) && !matches!(frame, Frame::Abort { .. }) {
                continue;
            }
            worker.deliver(frame);
        }
        if busy {
            backoff.reset();
        }
        // Read after the streams in flight: a pool thread that sent its
        // last frames and ended meanwhile left `sending` set.
        let in_flight = worker.in_flight() + usize::from(sending.load(Ordering::SeqCst));
        // Spin after work only when rung lately (rank 0 rings while few
        // streams are in flight), or, as long as the bell never rang
        // (rank 0 cannot reach it), when this rank has few streams.
        let spin = match last_ring {
            Some(at) => at.elapsed() < RUNG_LATELY,
            None => nearly_idle(in_flight),
        };
        let wait = backoff.next(spin, in_flight);
        match (wait.is_zero(), &bell) {
            (true, _) => std::thread::yield_now(),
            (false, Some(bell)) => {
                if bell.wait(wait) {
                    last_ring = Some(Instant::now());
                    backoff.reset();
                    backoff.set_idle(super::IDLE_POLL_RUNG);
                }
            }
            (false, None) => std::thread::sleep(wait),
        }
    }
}
