//! Table tests of rank 0's dispatching, without MPI: frames to workers go
//! to a list, time is given to each step.

use super::*;
use crate::stream::wire::{ProxyRequest, Service};
use std::sync::mpsc::{channel, Receiver};

/// The frames sent to workers, in order.
#[derive(Default)]
struct Sent(Vec<(usize, Frame)>);

impl Sink for Sent {
    fn send(&mut self, rank: usize, frame: &Frame) {
        self.0.push((rank, frame.clone()));
    }
}

/// A proxied request; with a body it may not run twice.
fn request(id: u64, body: bool) -> Frame {
    Frame::Open {
        id,
        service: Service::Proxy(Box::new(ProxyRequest {
            upstream: b"127.0.0.1:9".to_vec(),
            method: match body {
                true => b"POST".to_vec(),
                false => b"GET".to_vec(),
            },
            target: b"/".to_vec(),
            fields: Vec::new(),
            has_body: body,
            length: body.then_some(2),
        })),
    }
}

struct World {
    t: Tables<Sent>,
    start: Instant,
    membership: Arc<Membership>,
}

/// A stream as its connection thread sees it.
struct Opened {
    rx: Receiver<Vec<Frame>>,
    placed: Placed,
}

impl Opened {
    fn rank(&self) -> usize {
        self.placed.load(Ordering::Relaxed)
    }
    fn frames(&self) -> Vec<Frame> {
        self.rx.try_iter().flatten().collect()
    }
}

impl World {
    fn new(size: usize, spares: usize) -> World {
        let start = Instant::now();
        let (t, membership) = Tables::new(size, spares, Sent::default(), start);
        World {
            t,
            start,
            membership,
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    fn open(&mut self, frame: Frame, rank: Option<usize>) -> Opened {
        let (tx, rx) = channel();
        let placed = Placed::default();
        self.t
            .command(Cmd::Open(frame, tx, rank, Arc::clone(&placed)));
        Opened { rx, placed }
    }

    /// Worker `from` sends `frame` at `ms`; the batches then handed to
    /// connection threads.
    fn worker_says(&mut self, from: usize, frame: Frame, ms: u64) {
        let now = self.at(ms);
        self.t.on_worker_frame(from, frame, now);
        for (tx, batch) in self.t.deliver() {
            let _ = tx.send(batch);
        }
    }

    /// Every live worker but `silent` answers at `ms`.
    fn pongs_but(&mut self, silent: usize, ms: u64) {
        for rank in 1..=self.t.peers.len() {
            if rank != silent {
                self.worker_says(rank, Frame::Pong { id: 0 }, ms);
            }
        }
    }

    /// The frames sent since the last call.
    fn sent(&mut self) -> Vec<(usize, Frame)> {
        std::mem::take(&mut self.t.sink.0)
    }
}

fn opens(sent: &[(usize, Frame)]) -> Vec<(usize, u64)> {
    sent.iter()
        .filter(|(_, f)| matches!(f, Frame::Open { .. }))
        .map(|(r, f)| (*r, f.id()))
        .collect()
}

fn aborts(sent: &[(usize, Frame)]) -> Vec<(usize, u64, AbortReason)> {
    sent.iter()
        .filter_map(|(r, f)| match f {
            Frame::Abort { id, reason } => Some((*r, *id, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn new_streams_go_to_the_least_loaded_worker_in_turn() {
    let mut w = World::new(4, 0);
    let s: Vec<Opened> = (1..=3).map(|id| w.open(request(id, false), None)).collect();
    assert_eq!(opens(&w.sent()), [(1, 1), (2, 2), (3, 3)]);
    assert_eq!(s.iter().map(Opened::rank).collect::<Vec<_>>(), [1, 2, 3]);
    // Rank 2 finishes its stream: it is the least loaded now.
    w.worker_says(2, Frame::End { id: 2 }, 10);
    assert!(matches!(s[1].frames()[..], [Frame::End { id: 2 }]));
    let next = w.open(request(4, false), None);
    assert_eq!(opens(&w.sent()), [(2, 4)]);
    assert_eq!(next.rank(), 2);
    assert_eq!(w.t.in_flight(), 3);
}

#[test]
fn a_first_credit_reaches_only_a_stream_that_sends_a_body() {
    let mut w = World::new(3, 0);
    let get = w.open(request(1, false), None);
    let post = w.open(request(2, true), None);
    w.worker_says(1, Frame::Credit { id: 1, bytes: 9 }, 1);
    w.worker_says(2, Frame::Credit { id: 2, bytes: 9 }, 1);
    assert!(get.frames().is_empty());
    assert!(matches!(post.frames()[..], [Frame::Credit { id: 2, .. }]));
}

#[test]
fn a_silent_worker_leaves_the_rotation_and_its_unstarted_streams_move() {
    let mut w = World::new(4, 0);
    let taken = w.open(request(1, false), None);
    let waiting = w.open(request(2, false), None);
    let pinned = w.open(request(3, false), Some(2));
    w.sent();
    assert_eq!((taken.rank(), waiting.rank(), pinned.rank()), (1, 2, 2));
    w.pongs_but(2, 900);
    w.t.heartbeat(w.at(1100), false);
    let sent = w.sent();
    // The stream rank 2 had not taken goes to another worker; rank 2 is
    // told to drop it, and the stream pinned to it ends.
    let moved: Vec<(usize, u64)> = opens(&sent);
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].1, 2);
    assert_ne!(moved[0].0, 2);
    assert_eq!(waiting.rank(), moved[0].0);
    let told = aborts(&sent);
    assert!(told.contains(&(2, 2, AbortReason::Refused)), "{told:?}");
    assert!(matches!(
        pinned.frames()[..],
        [Frame::Abort {
            id: 3,
            reason: AbortReason::Refused
        }]
    ));
    assert!(!w.membership.live[2].load(Ordering::Relaxed));
    // No new stream goes to it; once it answers, it is back.
    let next = w.open(request(4, false), None);
    assert_ne!(next.rank(), 2);
    w.worker_says(2, Frame::Pong { id: 0 }, 1200);
    assert!(w.membership.live[2].load(Ordering::Relaxed));
    assert!(w.membership.dead().is_empty());
}

#[test]
fn a_dead_worker_s_streams_go_again_or_end_and_a_spare_takes_its_place() {
    // Ranks 1 and 2 work, rank 3 is the spare.
    let mut w = World::new(4, 1);
    assert_eq!(w.membership.spares(), [3]);
    let get = w.open(request(1, false), None);
    let other = w.open(request(2, false), None);
    let post = w.open(request(3, true), None);
    assert_eq!((get.rank(), other.rank(), post.rank()), (1, 2, 1));
    // Rank 1 took both of its streams, and answered neither.
    w.worker_says(1, Frame::Credit { id: 1, bytes: 9 }, 10);
    w.worker_says(1, Frame::Credit { id: 3, bytes: 9 }, 10);
    w.sent();
    post.frames();
    w.pongs_but(1, 5000);
    w.t.heartbeat(w.at(5100), false);
    let sent = w.sent();
    // The GET may reach its upstream twice: it goes to rank 2. The POST
    // may not: it ends, with no upstream to blame.
    assert_eq!(opens(&sent), [(2, 1)]);
    assert_eq!(get.rank(), 2);
    assert!(matches!(
        post.frames()[..],
        [Frame::Abort {
            id: 3,
            reason: AbortReason::WorkerLost
        }]
    ));
    assert_eq!(w.membership.dead(), [1]);
    assert!(w.membership.spares().is_empty(), "the spare joined");
    assert_eq!(w.t.to_spawn, [(1, true)]);
    // Nothing more is sent to it, not even pings.
    w.pongs_but(1, 5150);
    w.t.heartbeat(w.at(5300), false);
    assert!(w.sent().iter().all(|(r, _)| *r != 1));
    // New streams go to the spare, the least loaded now (rank 2 runs
    // two), then to both.
    let r: Vec<usize> = (5..=7)
        .map(|id| w.open(request(id, false), None).rank())
        .collect();
    assert_eq!(r[..2], [3, 3]);
    assert!(r[2] == 2 || r[2] == 3);
    // A process spawned in its place comes back as the spare.
    assert!(w.t.replaced(1, true, w.at(5400)));
    assert_eq!(w.membership.spares(), [1]);
    assert!(w.membership.dead().is_empty());
    assert_eq!(w.membership.replaced(1), 1);
    // A world process died: MPI_Finalize must not wait for it.
    assert_eq!(w.t.alive(), (vec![1, 2, 3], true));
}

#[test]
fn a_worker_that_answers_again_before_its_replacement_keeps_its_place() {
    let mut w = World::new(3, 0);
    w.pongs_but(2, 5000);
    w.t.heartbeat(w.at(5100), false);
    assert!(w.t.is_dead(2));
    assert_eq!(w.t.to_spawn, [(2, false)]);
    // It was only stalled: it answers while the new process starts.
    w.worker_says(2, Frame::Pong { id: 0 }, 5200);
    assert!(!w.t.is_dead(2));
    let ranks: Vec<usize> = (1..=2)
        .map(|id| w.open(request(id, false), None).rank())
        .collect();
    assert!(ranks.contains(&2), "back in rotation: {ranks:?}");
    // The new process is not taken: the stream placed on rank 2 stays.
    assert!(!w.t.replaced(2, false, w.at(5300)));
    assert_eq!(w.membership.replaced(2), 0);
    assert_eq!(w.t.in_flight(), 2);
    assert_eq!(w.t.alive(), (vec![1, 2], false));
}

#[test]
fn a_death_signal_shortens_the_wait_for_the_dead() {
    let mut w = World::new(3, 0);
    w.pongs_but(2, 300);
    w.t.heartbeat(w.at(450), true);
    assert_eq!(w.membership.dead(), [2]);
    assert_eq!(w.t.to_spawn, [(2, false)]);
    // Without a signal, the same silence is nothing yet.
    let mut w = World::new(3, 0);
    w.pongs_but(2, 300);
    w.t.heartbeat(w.at(450), false);
    assert!(w.membership.dead().is_empty());
}
