//! Rank 0's dispatcher: the one thread that calls MPI on rank 0. Connection
//! threads reach it through `Link` (a `Transport`); it sends each new
//! stream to the live worker with the fewest streams in flight, routes the
//! frames that come back by stream id, and heartbeats the workers.

use super::outbox::{receive, Backoff, Outbox};
use crate::error::Error;
use crate::proxy::transport::{ends_stream, is_tunnel};
use crate::proxy::wire::{AbortReason, Frame};
use crate::proxy::Transport;
use mpi::topology::SimpleCommunicator;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often rank 0 pings every worker.
const PING_EVERY: Duration = Duration::from_millis(200);
/// A worker silent this long leaves the rotation (well within the 2 s in
/// which new requests must go elsewhere).
const STALL_AFTER: Duration = Duration::from_millis(1000);

/// What connection threads ask of the dispatcher.
pub enum Cmd {
    /// A new stream, for the least-loaded worker or for the rank given.
    Open(Frame, Sender<Vec<Frame>>, Option<usize>),
    Frame(Frame),
    Close(u64, bool),
}

/// The connection threads' end: a `Transport` over a channel.
pub struct Link {
    cmds: Sender<Cmd>,
    live: Arc<Membership>,
}

/// Which workers are in rotation, as the dispatcher's heartbeats found;
/// read by anyone who places work on a given rank (the store).
pub struct Membership {
    /// By rank; rank 0 is never a worker here.
    live: Vec<AtomicBool>,
}

impl Membership {
    fn set(&self, rank: usize, live: bool) {
        if let Some(flag) = self.live.get(rank) {
            flag.store(live, Ordering::Relaxed);
        }
    }
}

/// A link for a world of `size` ranks, and the dispatcher's end of it.
pub fn link(size: usize) -> (Link, Receiver<Cmd>, Arc<Membership>) {
    let (cmds, rx) = channel();
    let live = Arc::new(Membership {
        live: (0..size).map(|rank| AtomicBool::new(rank > 0)).collect(),
    });
    let link = Link {
        cmds,
        live: Arc::clone(&live),
    };
    (link, rx, live)
}

impl Transport for Link {
    fn open(&self, open: Frame, tx: Sender<Vec<Frame>>) -> Result<(), Error> {
        self.cmds
            .send(Cmd::Open(open, tx, None))
            .map_err(|_| Error::Overloaded)
    }
    fn open_at(&self, rank: usize, open: Frame, tx: Sender<Vec<Frame>>) -> Result<(), Error> {
        self.cmds
            .send(Cmd::Open(open, tx, Some(rank)))
            .map_err(|_| Error::Overloaded)
    }
    fn live_workers(&self) -> Vec<usize> {
        (1..self.live.live.len())
            .filter(|&r| self.live.live[r].load(Ordering::Relaxed))
            .collect()
    }
    fn workers(&self) -> Vec<usize> {
        (1..self.live.live.len()).collect()
    }
    fn send(&self, frame: Frame) {
        let _ = self.cmds.send(Cmd::Frame(frame));
    }
    fn close(&self, id: u64, finished: bool) {
        let _ = self.cmds.send(Cmd::Close(id, finished));
    }
}

/// A worker as rank 0 sees it.
struct Peer {
    rank: usize,
    in_flight: usize,
    last_pong: Instant,
    live: bool,
}

/// A stream and where it runs.
struct Flow {
    peer: usize,
    tx: Sender<Vec<Frame>>,
    /// The `Open` frame, kept until the worker says it took the stream,
    /// to send it elsewhere if the worker stalls first.
    open: Option<Frame>,
    /// The connection thread wants the worker's first credit: it has a
    /// body to send, or a tunnel. Otherwise that acknowledgement stops
    /// here rather than wake the thread for nothing.
    wants_ack: bool,
    tunnel: bool,
    /// Runs on this worker or nowhere: a stall ends it rather than moving it.
    pinned: bool,
}

struct Dispatcher<'w> {
    world: &'w SimpleCommunicator,
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
}

/// Run the dispatcher until `stop` is set or every link is gone.
pub fn run(
    world: &SimpleCommunicator,
    size: usize,
    cmds: Receiver<Cmd>,
    membership: Arc<Membership>,
    stop: &AtomicBool,
) {
    let now = Instant::now();
    let mut d = Dispatcher {
        world,
        membership,
        out: Outbox::new(size),
        peers: (1..size)
            .map(|rank| Peer {
                rank,
                in_flight: 0,
                last_pong: now,
                live: true,
            })
            .collect(),
        flows: HashMap::new(),
        turn: 0,
        ping_seq: 0,
        inbox: HashMap::new(),
    };
    // Requests wake this thread through its channel; polling only looks
    // for answers, so with nothing in flight it can sleep longer.
    let mut backoff = Backoff::new(Duration::from_millis(100));
    let mut next_ping = now;
    'serve: while !stop.load(Ordering::Relaxed) {
        let mut busy = receive(world, |from, frame| d.on_worker_frame(from, frame));
        d.deliver();
        loop {
            match cmds.try_recv() {
                Ok(cmd) => {
                    busy = true;
                    d.command(cmd);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => break 'serve,
            }
        }
        if Instant::now() >= next_ping {
            d.heartbeat();
            next_ping = Instant::now() + PING_EVERY;
        }
        d.out.flush(world);
        let sending = d.out.progress();
        if busy {
            backoff.reset();
            continue;
        }
        let wait = backoff.next(d.flows.len() + usize::from(sending));
        if wait.is_zero() {
            std::thread::yield_now();
            continue;
        }
        match cmds.recv_timeout(wait) {
            Ok(cmd) => {
                backoff.reset();
                d.command(cmd);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break 'serve,
        }
    }
    d.out.close(Duration::from_secs(1));
}

impl Dispatcher<'_> {
    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Open(frame, tx, Some(rank)) => {
                let id = frame.id();
                let peer = self.peers.iter().position(|p| p.rank == rank && p.live);
                let Some(peer) = peer else {
                    let _ = tx.send(vec![Frame::Abort {
                        id,
                        reason: AbortReason::Refused,
                    }]);
                    return;
                };
                self.peers[peer].in_flight += 1;
                self.out.push(self.world, rank, &frame);
                self.flows.insert(
                    id,
                    Flow {
                        peer,
                        tx,
                        open: None,
                        wants_ack: false,
                        tunnel: false,
                        pinned: true,
                    },
                );
            }
            Cmd::Open(frame, tx, None) => {
                let id = frame.id();
                let Some(peer) = self.pick() else {
                    let _ = tx.send(vec![Frame::Abort {
                        id,
                        reason: AbortReason::Refused,
                    }]);
                    return;
                };
                self.peers[peer].in_flight += 1;
                self.out.push(self.world, self.peers[peer].rank, &frame);
                let tunnel = is_tunnel(&frame);
                let wants_ack = tunnel || matches!(frame, Frame::Open { has_body: true, .. });
                self.flows.insert(
                    id,
                    Flow {
                        peer,
                        tx,
                        open: Some(frame),
                        wants_ack,
                        tunnel,
                        pinned: false,
                    },
                );
            }
            Cmd::Frame(frame) => {
                if let Some(flow) = self.flows.get(&frame.id()) {
                    self.out
                        .push(self.world, self.peers[flow.peer].rank, &frame);
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
                    self.out.push(self.world, rank, &abort);
                }
            }
        }
    }

    /// The live worker with the fewest streams in flight.
    fn pick(&mut self) -> Option<usize> {
        let n = self.peers.len();
        let best = (0..n)
            .map(|i| (self.turn + i) % n)
            .filter(|&i| self.peers[i].live)
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
            self.membership.set(from, true);
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
        if flow.open.take().is_some() && !flow.wants_ack && matches!(frame, Frame::Credit { .. }) {
            return; // the worker took it; nobody else needs to know
        }
        self.inbox.entry(frame.id()).or_default().push(frame);
    }

    /// Hand each stream's gathered frames to its connection thread, and
    /// forget the streams they end.
    fn deliver(&mut self) {
        for (id, batch) in self.inbox.drain() {
            let Some(flow) = self.flows.get(&id) else {
                continue;
            };
            let done = batch.iter().any(|f| ends_stream(f, flow.tunnel));
            let _ = flow.tx.send(batch); // the connection may be gone: Close follows
            if done {
                let peer = flow.peer;
                self.flows.remove(&id);
                let p = &mut self.peers[peer];
                p.in_flight = p.in_flight.saturating_sub(1);
            }
        }
    }

    /// Ping every worker; take silent ones out of rotation and send the
    /// streams they have not taken to others.
    fn heartbeat(&mut self) {
        self.ping_seq += 1;
        let ping = Frame::Ping { id: self.ping_seq };
        for peer in &self.peers {
            self.out.push(self.world, peer.rank, &ping);
        }
        for stalled in 0..self.peers.len() {
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
            self.out.push(self.world, rank, &abort);
            let p = &mut self.peers[stalled];
            p.in_flight = p.in_flight.saturating_sub(1);
        }
        let waiting: Vec<u64> = self
            .flows
            .iter()
            .filter(|(_, f)| f.peer == stalled && f.open.is_some())
            .map(|(&id, _)| id)
            .collect();
        for id in waiting {
            let Some(target) = self.pick() else { return };
            let Some(flow) = self.flows.get_mut(&id) else {
                continue;
            };
            let Some(open) = flow.open.clone() else {
                continue;
            };
            // If the stalled worker wakes up, it drops the stream unstarted.
            let abort = Frame::Abort {
                id,
                reason: AbortReason::Refused,
            };
            flow.peer = target;
            self.peers[stalled].in_flight = self.peers[stalled].in_flight.saturating_sub(1);
            self.peers[target].in_flight += 1;
            let (from_rank, to_rank) = (self.peers[stalled].rank, self.peers[target].rank);
            self.out.push(self.world, from_rank, &abort);
            self.out.push(self.world, to_rank, &open);
            log::info!("stream {id} re-sent from rank {from_rank} to rank {to_rank}");
        }
    }
}
