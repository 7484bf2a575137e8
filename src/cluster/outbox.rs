//! The MPI side of one rank's traffic: frames batched per destination and
//! sent with non-blocking sends, messages received by matched probes, and
//! the idle back-off that keeps a quiet rank from spinning a core.
//!
//! Sends must not block: two ranks each blocked sending a large message to
//! the other would wait forever for a matching receive (MPI's rendezvous
//! protocol). So every send is an `MPI_Isend` whose buffer lives here
//! until MPI says it is done.

use crate::stream::wire::{decode_batch, push_batch, Frame};
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::request::StaticScope;
use mpi::topology::Communicator;
use mpi::Rank;
use std::time::{Duration, Instant};

/// Tag of every frame batch.
pub const TAG_FRAMES: mpi::Tag = 2;
/// A batch is sent once it holds this many bytes, even mid-drain.
const BATCH_BYTES: usize = 1 << 20;

/// Where a rank's messages go: a worker's to rank 0 of its world (or, for a
/// process spawned in a dead worker's place, of its parent's); rank 0's to
/// the world's ranks, or to the processes that replaced them.
pub trait Route {
    /// Start sending `data` with `tag` to `rank`: the raw request.
    fn isend(&self, rank: usize, data: &'static [u8], tag: mpi::Tag) -> mpi::ffi::MPI_Request;
}

impl<C: Communicator> Route for C {
    fn isend(&self, rank: usize, data: &'static [u8], tag: mpi::Tag) -> mpi::ffi::MPI_Request {
        let request =
            self.process_at_rank(rank as Rank)
                .immediate_send_with_tag(StaticScope, data, tag);
        // SAFETY: the caller completes or leaks the handle (`Outbox`), and
        // `data` is 'static to MPI until then.
        let (request, _, _) = unsafe { request.into_raw() };
        request
    }
}

/// An `MPI_Isend` in flight and the buffer it reads. The request is kept
/// raw: one that failed (its rank died) completes with an error, which
/// rsmpi's `test` takes for a bug and panics on.
struct Pending {
    request: mpi::ffi::MPI_Request,
    buf: *mut [u8],
}

/// Batches being filled, and sends in flight.
pub struct Outbox {
    batches: Vec<Vec<u8>>,
    pending: Vec<Pending>,
}

impl Outbox {
    /// An outbox for a world of `size` ranks.
    pub fn new(size: usize) -> Outbox {
        Outbox {
            batches: vec![Vec::new(); size],
            pending: Vec::new(),
        }
    }

    /// Queue `frame` for `rank`; a full batch goes out at once.
    pub fn push(&mut self, to: &impl Route, rank: usize, frame: &Frame) {
        let Some(batch) = self.batches.get_mut(rank) else {
            return;
        };
        push_batch(batch, frame);
        if batch.len() >= BATCH_BYTES {
            let batch = std::mem::take(batch);
            self.send(to, rank, batch);
        }
    }

    /// Send every batch that has frames.
    pub fn flush(&mut self, to: &impl Route) {
        for rank in 0..self.batches.len() {
            if !self.batches[rank].is_empty() {
                let batch = std::mem::take(&mut self.batches[rank]);
                self.send(to, rank, batch);
            }
        }
    }

    fn send(&mut self, to: &impl Route, rank: usize, batch: Vec<u8>) {
        self.send_tagged(to, rank, batch, TAG_FRAMES);
    }

    /// Send `bytes` to `rank` with `tag`, without waiting: the buffer is
    /// kept here until MPI is done with it.
    pub fn send_tagged(&mut self, to: &impl Route, rank: usize, bytes: Vec<u8>, tag: mpi::Tag) {
        let buf: *mut [u8] = Box::into_raw(bytes.into_boxed_slice());
        // SAFETY: `buf` is freed only in `progress`, after MPI reports the
        // send complete, and never touched in between.
        let data: &'static [u8] = unsafe { &*buf };
        let request = to.isend(rank, data, tag);
        self.pending.push(Pending { request, buf });
    }

    /// Free the buffers of completed sends. Returns whether any are left.
    pub fn progress(&mut self) -> bool {
        for mut p in std::mem::take(&mut self.pending) {
            let mut flag = 0;
            let mut status = std::mem::MaybeUninit::<mpi::ffi::MPI_Status>::uninit();
            // SAFETY: a live request handle and valid out-pointers. Errors
            // are returned (the world's handler is MPI_ERRORS_RETURN): a
            // send to a dead rank completes with one.
            unsafe { mpi::ffi::MPI_Test(&mut p.request, &mut flag, status.as_mut_ptr()) };
            if flag == 0 {
                self.pending.push(p);
                continue;
            }
            // SAFETY: the request is complete; one that failed may still
            // need freeing. MPI is done with the buffer (see `send`).
            unsafe {
                if p.request != mpi::ffi::RSMPI_REQUEST_NULL {
                    mpi::ffi::MPI_Request_free(&mut p.request);
                }
                drop(Box::from_raw(p.buf));
            }
        }
        !self.pending.is_empty()
    }

    /// At exit: wait up to `limit` for sends in flight, then abandon the
    /// rest (a peer that stopped receiving must not hold up the exit).
    pub fn wait(&mut self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.progress() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Incomplete sends (to a rank that died or stopped) are left to
        // MPI, their buffers leaked: the process is about to exit.
        self.pending.clear();
    }
}

/// Every frame batch waiting for this rank, with the sender's rank.
/// Returns whether any frame was more than a heartbeat.
pub fn receive<C: Communicator>(comm: &C, mut each: impl FnMut(usize, Frame)) -> bool {
    let mut any = false;
    while let Some(probed) = comm
        .any_process()
        .immediate_matched_probe_with_tag(TAG_FRAMES)
    {
        let (buf, status) = probed.matched_receive_vec::<u8>();
        let from = status.source_rank() as usize;
        match decode_batch(&buf) {
            Ok(frames) => {
                for f in frames {
                    any |= !is_heartbeat(&f);
                    each(from, f);
                }
            }
            Err(e) => log::error!("from rank {from}: {e}"),
        }
    }
    any
}

/// Pings and pongs keep a rank alive, but are not work: they must not keep
/// an idle rank polling eagerly.
pub fn is_heartbeat(frame: &Frame) -> bool {
    matches!(frame, Frame::Ping { .. } | Frame::Pong { .. })
}

/// How long an MPI thread waits before it polls again.
///
/// A rank that may spin (rank 0 with at most `SPIN_MAX_IN_FLIGHT`
/// streams; a worker its bell woke lately, or one that never heard its
/// bell) spins for `SPIN_FOR` after work, yielding the core between polls:
/// a sleep costs the timer's slack (about 50 µs on Linux) plus a wake-up,
/// twice per hop, and with so little in flight the cores have room for it.
/// A worker cannot tell from its own streams whether the cores are busy
/// (at 50 connections it often has two or fewer in flight, and its yields
/// were 1.2 of 7.7 switches per request): rank 0 rings its bell only while
/// few streams are in flight.
///
/// A busier rank sleeps instead (a spinning poller would take the core
/// from the threads doing the work, and every poll is a context switch):
/// `BATCH_SLEEP` between polls while work keeps coming, so that one
/// receive takes what came meanwhile; then longer and longer from
/// `FIRST_SLEEP`, up to `IN_FLIGHT_SLEEP` while requests are in flight (an
/// answer may come any moment), `RECENT_SLEEP` while they were lately, and
/// `idle` once the rank has been quiet for `QUIET_AFTER`.
pub struct Backoff {
    rounds: u32,
    last_work: Instant,
    idle: Duration,
}

const SPIN_MAX_IN_FLIGHT: usize = 2;
const SPIN_FOR: Duration = Duration::from_millis(1);
const FIRST_SLEEP: Duration = Duration::from_micros(20);
const IN_FLIGHT_SLEEP: Duration = Duration::from_micros(100);
/// A busy rank's wait between polls: what arrives meanwhile is taken in
/// one receive and handed out in one pass, instead of a wake per frame.
/// Measured at 50 connections (3 runs each, alternating): 500 µs gave
/// 6.9-7.6k req/s at 195-209 µs of CPU per request, 200 µs 6.1-6.3k at
/// 236-252 µs; one connection's median (it spins) stayed at 203-206 µs.
const BATCH_SLEEP: Duration = Duration::from_micros(500);
const RECENT_SLEEP: Duration = Duration::from_micros(250);
const QUIET_AFTER: Duration = Duration::from_secs(1);

/// Whether `in_flight` streams leave the cores room for a spin.
pub fn nearly_idle(in_flight: usize) -> bool {
    in_flight <= SPIN_MAX_IN_FLIGHT
}

impl Backoff {
    /// A rank starts idle: nothing has happened yet to poll eagerly for.
    pub fn new(idle: Duration) -> Backoff {
        let now = Instant::now();
        Backoff {
            rounds: 0,
            last_work: now.checked_sub(QUIET_AFTER).unwrap_or(now),
            idle,
        }
    }

    /// Sleep up to `idle` when idle, from now on.
    pub fn set_idle(&mut self, idle: Duration) {
        self.idle = idle;
    }

    /// Something happened: poll eagerly again.
    pub fn reset(&mut self) {
        self.rounds = 0;
        self.last_work = Instant::now();
    }

    /// The wait before the next poll, given the streams in flight (and
    /// sends not yet complete). Zero means: yield the core, then poll.
    /// `spin`: whether a spin after work may be cheap here (see
    /// `nearly_idle`, and a worker's bell).
    pub fn next(&mut self, spin: bool, in_flight: usize) -> Duration {
        if self.last_work.elapsed() < SPIN_FOR {
            return match spin {
                true => Duration::ZERO,
                false => BATCH_SLEEP,
            };
        }
        let doublings = self.rounds.min(16);
        self.rounds = self.rounds.saturating_add(1);
        let cap = if in_flight > 0 {
            IN_FLIGHT_SLEEP
        } else if self.last_work.elapsed() < QUIET_AFTER {
            RECENT_SLEEP
        } else {
            self.idle
        };
        (FIRST_SLEEP * 2u32.pow(doublings)).min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_spins_only_when_nearly_idle_and_lately_busy() {
        let idle = Duration::from_millis(50);
        let mut b = Backoff::new(idle);
        // Idle from the start: no spin, and soon the idle sleep.
        assert_eq!(b.next(nearly_idle(0), 0), FIRST_SLEEP);
        for _ in 0..20 {
            b.next(nearly_idle(0), 0);
        }
        assert_eq!(b.next(nearly_idle(0), 0), idle);
        b.reset();
        assert_eq!(b.next(nearly_idle(0), 0), Duration::ZERO);
        assert_eq!(
            b.next(nearly_idle(SPIN_MAX_IN_FLIGHT), SPIN_MAX_IN_FLIGHT),
            Duration::ZERO
        );
        // Busy right after work: one batch window between polls.
        let busy = SPIN_MAX_IN_FLIGHT + 1;
        assert_eq!(b.next(nearly_idle(busy), busy), BATCH_SLEEP);
        assert_eq!(b.next(nearly_idle(busy), busy), BATCH_SLEEP);
        // Busy but nothing came for SPIN_FOR: doubling up to the cap.
        b.last_work = Instant::now() - SPIN_FOR;
        b.rounds = 0;
        assert_eq!(b.next(nearly_idle(busy), busy), FIRST_SLEEP);
        assert_eq!(b.next(nearly_idle(busy), busy), FIRST_SLEEP * 2);
        for _ in 0..20 {
            b.next(nearly_idle(busy), busy);
        }
        assert_eq!(b.next(nearly_idle(busy), busy), IN_FLIGHT_SLEEP);
        // The spin ends SPIN_FOR after the last work, whatever is in flight.
        b.last_work = Instant::now() - SPIN_FOR;
        assert_eq!(b.next(nearly_idle(1), 1), IN_FLIGHT_SLEEP);
        assert_eq!(b.next(nearly_idle(0), 0), RECENT_SLEEP);
        b.last_work = Instant::now() - QUIET_AFTER;
        assert_eq!(b.next(nearly_idle(0), 0), idle);
        // Work again: spin when nearly idle, a batch window when busy.
        b.reset();
        assert_eq!(b.next(nearly_idle(0), 0), Duration::ZERO);
        assert_eq!(b.next(nearly_idle(busy), busy), BATCH_SLEEP);
    }
}
