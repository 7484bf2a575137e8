//! The loop of a worker rank's MPI thread: take frame batches from rank 0
//! and hand them to the `Worker`, whose pool threads do the upstream I/O;
//! send their frames back; answer heartbeats; stop when rank 0 says so.

use super::outbox::{is_heartbeat, receive, Backoff, Outbox};
use super::TAG_SHUTDOWN;
use crate::proxy::wire::Frame;
use crate::proxy::worker::{Side, Worker};
use mpi::point_to_point::Source;
use mpi::topology::{Communicator, SimpleCommunicator};
use std::collections::HashSet;
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// Serve rank 0 until it sends the exit code.
pub fn run(world: &SimpleCommunicator, upstream_timeout: Duration, side: Option<Side>) -> i32 {
    let (tx, outgoing) = channel::<Vec<Frame>>();
    let worker = Worker::new(
        upstream_timeout,
        Arc::new(move |batch| {
            let _ = tx.send(batch); // only fails once the loop has ended
        }),
        true,
        side,
    );
    let root = world.process_at_rank(0);
    let mut out = Outbox::new(world.size() as usize);
    // A new request is only seen by polling: an idle worker looks 20
    // times a second; a nearly idle one spins for a millisecond after
    // work, and a busy one polls every 20 to 100 µs.
    let mut backoff = Backoff::new(Duration::from_millis(50));
    let mut carry: Option<Vec<Frame>> = None;
    loop {
        if root.immediate_probe_with_tag(TAG_SHUTDOWN).is_some() {
            let (code, _) = root.receive_with_tag::<i32>(TAG_SHUTDOWN);
            out.flush(world);
            out.close(Duration::from_millis(500));
            return code;
        }
        let mut frames = Vec::new();
        let mut busy = receive(world, |_, frame| frames.push(frame));
        // A stream rank 0 took back (this rank stalled) comes as its
        // `Open` and then an `Abort`, read together when the rank wakes:
        // it is dropped unstarted.
        let aborted: HashSet<u64> = frames
            .iter()
            .filter(|f| matches!(f, Frame::Abort { .. }))
            .map(Frame::id)
            .collect();
        for frame in frames {
            if matches!(frame, Frame::Open { .. }) && aborted.contains(&frame.id()) {
                continue;
            }
            worker.deliver(frame);
        }
        for frame in carry
            .take()
            .into_iter()
            .chain(outgoing.try_iter())
            .flatten()
        {
            out.push(world, 0, &frame);
            busy |= !is_heartbeat(&frame);
        }
        out.flush(world);
        let sending = out.progress();
        if busy {
            backoff.reset();
            continue;
        }
        let wait = backoff.next(worker.in_flight() + usize::from(sending));
        if wait.is_zero() {
            std::thread::yield_now();
            continue;
        }
        match outgoing.recv_timeout(wait) {
            Ok(batch) => {
                if !batch.iter().all(is_heartbeat) {
                    backoff.reset();
                }
                carry = Some(batch);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return 1,
        }
    }
}
