//! A lone process's world: rank 0 is its own only worker, and its streams
//! take the road they take across ranks, minus MPI. Every frame goes
//! through the wire codec (encoded, then decoded) and through the same
//! dispatcher tables (`dispatcher`) as in a cluster; the worker's `Runner`
//! is the one worker ranks run. So a test of a lone process exercises the
//! protocol itself. (A proxied request without a body does not come here:
//! its connection thread runs it, `proxy::local`.)

use super::dispatcher::{Cmd, Sink, Tables};
use super::membership::Membership;
use super::transport::{Out, Placed, Runner};
use super::wire::{decode_batch, push_batch, Frame};
use crate::error::Error;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Frames for the worker, encoded as they would go over MPI: delivered
/// once the tables' lock is let go (the worker may answer at once, which
/// takes the lock again).
#[derive(Default)]
pub struct Encoded(Vec<u8>);

impl Sink for Encoded {
    fn send(&mut self, _rank: usize, frame: &Frame) {
        push_batch(&mut self.0, frame);
    }
}

type Shared = Arc<Mutex<Tables<Encoded>>>;

/// The tables, recovered when poisoned: each step leaves them whole (as
/// rank 0's MPI lock does), and refusing every later frame would stop
/// every stream.
fn lock(tables: &Shared) -> MutexGuard<'_, Tables<Encoded>> {
    tables.lock().unwrap_or_else(|p| p.into_inner())
}

/// Decode what the codec encoded; a batch that does not decode is a bug,
/// said once in the log.
fn decoded(bytes: &[u8]) -> Vec<Frame> {
    match decode_batch(bytes) {
        Ok(frames) => frames,
        Err(e) => {
            log::error!("loopback: a batch that does not decode: {e}");
            Vec::new()
        }
    }
}

/// The in-process transport's core: the tables and the worker.
pub struct Loopback {
    tables: Shared,
    runner: Box<dyn Runner>,
    membership: Arc<Membership>,
}

impl Loopback {
    /// The world of one whose worker is what `make` builds, given where
    /// its frames go.
    pub fn new(make: impl FnOnce(Out) -> Box<dyn Runner>) -> Loopback {
        let (tables, membership) = Tables::alone(Encoded::default(), Instant::now());
        let tables: Shared = Arc::new(Mutex::new(tables));
        let back = Arc::clone(&tables);
        let out: Out = Arc::new(move |batch: Vec<Frame>| {
            let mut bytes = Vec::new();
            for frame in &batch {
                push_batch(&mut bytes, frame);
            }
            let handed = {
                let mut t = lock(&back);
                let now = Instant::now();
                for frame in decoded(&bytes) {
                    t.on_worker_frame(0, frame, now);
                }
                t.deliver()
            };
            for (tx, batch) in handed {
                let _ = tx.send(batch); // the connection may be gone: Close follows
            }
        });
        Loopback {
            tables,
            runner: make(out),
            membership,
        }
    }

    /// Run `cmd` through the tables, then give the worker what they sent.
    pub fn command(&self, cmd: Cmd) {
        let bytes = {
            let mut t = lock(&self.tables);
            t.command(cmd);
            // No bells to ring in one process.
            t.rings.clear();
            std::mem::take(&mut t.sink.0)
        };
        for frame in decoded(&bytes) {
            self.runner.deliver(frame);
        }
    }

    pub fn open(
        &self,
        open: Frame,
        tx: Sender<Vec<Frame>>,
        rank: Option<usize>,
    ) -> Result<Placed, Error> {
        let placed = Placed::default();
        self.command(Cmd::Open(open, tx, rank, Arc::clone(&placed)));
        Ok(placed)
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::wire::{AbortReason, ProxyRequest, Service};
    use std::sync::mpsc::channel;

    /// A worker that answers every `Open` at once, as worker ranks do
    /// (first credit, head, a piece, end), and keeps every frame it got.
    struct Echo {
        out: Out,
        got: Mutex<Vec<Frame>>,
    }

    impl Runner for Arc<Echo> {
        fn deliver(&self, frame: Frame) {
            if let Frame::Open { id, .. } = frame {
                (self.out)(vec![
                    Frame::Credit { id, bytes: 1 << 20 },
                    Frame::Head {
                        id,
                        status: 200,
                        fields: vec![(b"x".to_vec(), b"y".to_vec())],
                        length: Some(2),
                    },
                    Frame::Data {
                        id,
                        bytes: b"hi".to_vec(),
                    },
                ]);
            }
            self.got.lock().unwrap().push(frame);
        }
        fn in_flight(&self) -> usize {
            0
        }
    }

    fn get(id: u64, body: bool) -> Frame {
        Frame::Open {
            id,
            service: Service::Proxy(Box::new(ProxyRequest {
                upstream: b"u:80".to_vec(),
                method: b"GET".to_vec(),
                target: b"/".to_vec(),
                fields: Vec::new(),
                has_body: body,
                length: None,
            })),
        }
    }

    #[test]
    fn frames_go_through_the_codec_and_the_dispatcher_both_ways() {
        let mut echo = None;
        let world = Loopback::new(|out| {
            let e = Arc::new(Echo {
                out,
                got: Mutex::new(Vec::new()),
            });
            echo = Some(Arc::clone(&e));
            Box::new(e)
        });
        let echo = echo.unwrap();
        // A stream without a body: the dispatcher keeps the worker's first
        // credit to itself; the rest arrives decoded, in one batch.
        let (tx, rx) = channel();
        let placed = world.open(get(1, false), tx, None).unwrap();
        assert_eq!(placed.load(std::sync::atomic::Ordering::Relaxed), 0);
        let batch = rx.try_recv().unwrap();
        assert!(
            matches!(&batch[..], [Frame::Head { status: 200, fields, .. }, Frame::Data { bytes, .. }]
                if fields[0].0 == b"x" && bytes == b"hi"),
            "{batch:?}"
        );
        // With a body, the credit is for the sender: it comes too.
        let (tx2, rx2) = channel();
        world.open(get(2, true), tx2, None).unwrap();
        assert!(matches!(
            rx2.try_recv().unwrap()[0],
            Frame::Credit { id: 2, .. }
        ));
        // Closed before its end: the worker is told the client left.
        world.command(Cmd::Close(1, false));
        let got = echo.got.lock().unwrap();
        assert!(
            got.iter().any(|f| matches!(
                f,
                Frame::Abort {
                    id: 1,
                    reason: AbortReason::ClientGone
                }
            )),
            "{got:?}"
        );
        assert_eq!(world.membership().workers(), [0]);
    }
}
