//! Credit, once for every stream: a body's sending end is a `Write`
//! (`Sending`) that puts bytes in `Data` frames only as far as the
//! receiver's grants allow; the receiving end grants credit back as it
//! consumes (`Grants`). Either end may be rank 0's `Stream` or a worker's
//! (`WorkerEnds`): both are `Ends`.

use super::transport::{take_grant, Out, Stream, CHUNK, WINDOW};
use super::wire::{AbortReason, Frame};
use std::io;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// One stream seen from one side: frames out, frames in.
pub trait Ends {
    fn id(&self) -> u64;
    fn send(&self, frame: Frame);
    /// The next frame from the other side, waiting at most `wait`.
    fn next(&mut self, wait: Duration) -> Result<Frame, RecvTimeoutError>;
    /// The next frame if one is waiting.
    fn try_next(&mut self) -> Option<Frame>;
}

impl Ends for Stream {
    fn id(&self) -> u64 {
        self.id
    }
    fn send(&self, frame: Frame) {
        Stream::send(self, frame);
    }
    fn next(&mut self, wait: Duration) -> Result<Frame, RecvTimeoutError> {
        super::transport::Frames::next_frame(self, wait)
    }
    fn try_next(&mut self) -> Option<Frame> {
        // A channel gone shows in the next wait.
        self.try_recv()?.ok()
    }
}

impl<E: Ends + ?Sized> Ends for &mut E {
    fn id(&self) -> u64 {
        (**self).id()
    }
    fn send(&self, frame: Frame) {
        (**self).send(frame);
    }
    fn next(&mut self, wait: Duration) -> Result<Frame, RecvTimeoutError> {
        (**self).next(wait)
    }
    fn try_next(&mut self) -> Option<Frame> {
        (**self).try_next()
    }
}

/// A worker's side of a stream: rank 0's frames come on `rx`, its own go
/// out through `out`.
pub struct WorkerEnds<'a> {
    pub id: u64,
    pub rx: &'a Receiver<Frame>,
    pub out: &'a Out,
}

impl Ends for WorkerEnds<'_> {
    fn id(&self) -> u64 {
        self.id
    }
    fn send(&self, frame: Frame) {
        (self.out)(vec![frame]);
    }
    fn next(&mut self, wait: Duration) -> Result<Frame, RecvTimeoutError> {
        self.rx.recv_timeout(wait)
    }
    fn try_next(&mut self) -> Option<Frame> {
        self.rx.try_recv().ok()
    }
}

/// Why a sending end stopped before its body was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The receiver aborted the stream.
    Aborted(AbortReason),
    /// No credit came within the wait.
    TimedOut,
    /// The stream's channel is gone.
    Gone,
    /// The other side answered before the body was all sent (an upstream
    /// that answers early): the answer is kept (`Sending::answer`).
    Answered,
}

impl Stopped {
    fn io_error(self) -> io::Error {
        let kind = match self {
            Stopped::Aborted(_) => io::ErrorKind::ConnectionAborted,
            Stopped::TimedOut => io::ErrorKind::TimedOut,
            Stopped::Gone => io::ErrorKind::BrokenPipe,
            Stopped::Answered => io::ErrorKind::Other,
        };
        io::Error::new(kind, format!("stream stopped: {self:?}"))
    }
}

/// The sending end of a stream's body: each `write` sends at most one
/// `Data` frame of at most `CHUNK` bytes, within the credit granted,
/// waiting up to `wait` for a grant when there is none.
pub struct Sending<E: Ends> {
    ends: E,
    credit: u64,
    wait: Duration,
    stopped: Option<Stopped>,
    answer: Option<Frame>,
}

impl<E: Ends> Sending<E> {
    /// A sending end with no credit yet: the receiver's first grant opens
    /// the window.
    pub fn new(ends: E, wait: Duration) -> Sending<E> {
        Sending::with_credit(ends, 0, wait)
    }

    /// A sending end that may send `credit` bytes before any grant.
    pub fn with_credit(ends: E, credit: u64, wait: Duration) -> Sending<E> {
        Sending {
            ends,
            credit,
            wait,
            stopped: None,
            answer: None,
        }
    }

    /// Why the last write failed, if it did.
    pub fn stopped(&self) -> Option<Stopped> {
        self.stopped
    }

    /// The frame that stopped the body early (`Stopped::Answered`).
    pub fn answer(&mut self) -> Option<Frame> {
        self.answer.take()
    }

    /// The stream's end, given back.
    pub fn into_inner(self) -> E {
        self.ends
    }

    /// Say the body is whole (`End`).
    pub fn finish(&self) {
        self.ends.send(Frame::End { id: self.ends.id() });
    }

    fn take(&mut self, frame: Frame) -> Result<(), Stopped> {
        match frame {
            Frame::Credit { bytes, .. } => self.credit += u64::from(bytes),
            Frame::Abort { reason, .. } => return Err(Stopped::Aborted(reason)),
            // Heartbeats never come on a stream.
            Frame::Ping { .. } | Frame::Pong { .. } => {}
            answer @ (Frame::Open { .. }
            | Frame::Head { .. }
            | Frame::Data { .. }
            | Frame::End { .. }
            | Frame::Stats { .. }) => {
                self.answer = Some(answer);
                return Err(Stopped::Answered);
            }
        }
        Ok(())
    }

    /// Take the grants waiting; while there is no credit, wait for one.
    fn wait_for_credit(&mut self) -> Result<(), Stopped> {
        while let Some(frame) = self.ends.try_next() {
            self.take(frame)?;
        }
        while self.credit == 0 {
            match self.ends.next(self.wait) {
                Ok(frame) => self.take(frame)?,
                Err(RecvTimeoutError::Timeout) => return Err(Stopped::TimedOut),
                Err(RecvTimeoutError::Disconnected) => return Err(Stopped::Gone),
            }
        }
        Ok(())
    }
}

impl<E: Ends> io::Write for Sending<E> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(stopped) = self.stopped {
            return Err(stopped.io_error());
        }
        if let Err(stopped) = self.wait_for_credit() {
            self.stopped = Some(stopped);
            return Err(stopped.io_error());
        }
        let n = buf.len().min(CHUNK).min(self.credit as usize);
        self.ends.send(Frame::Data {
            id: self.ends.id(),
            bytes: buf[..n].to_vec(),
        });
        self.credit -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The receiving end's grants: what it consumed and has not granted back.
#[derive(Debug, Default)]
pub struct Grants {
    consumed: u64,
}

impl Grants {
    /// The grant that opens a stream's window: a whole one.
    pub fn first(id: u64) -> Frame {
        Frame::Credit { id, bytes: WINDOW }
    }

    /// `n` bytes were consumed (written on): the `Credit` frame to send
    /// back, once a quarter window has gathered, at most a window.
    pub fn consumed(&mut self, id: u64, n: usize) -> Option<Frame> {
        self.consumed += n as u64;
        take_grant(&mut self.consumed).map(|bytes| Frame::Credit { id, bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc::{channel, Sender};
    use std::sync::{Arc, Mutex};

    /// Stream 7's `Out`, which keeps what is sent.
    fn ends(sent: &Arc<Mutex<Vec<Frame>>>) -> (u64, Out) {
        let sent = Arc::clone(sent);
        (
            7,
            Arc::new(move |b: Vec<Frame>| sent.lock().unwrap().extend(b)),
        )
    }

    fn data_lens(sent: &Mutex<Vec<Frame>>) -> Vec<usize> {
        sent.lock()
            .unwrap()
            .iter()
            .filter_map(|f| match f {
                Frame::Data { bytes, .. } => Some(bytes.len()),
                _ => None,
            })
            .collect()
    }

    fn grant(tx: &Sender<Frame>, bytes: u32) {
        tx.send(Frame::Credit { id: 7, bytes }).unwrap();
    }

    #[test]
    fn writes_stay_within_the_credit_and_wait_for_grants() {
        let (tx, rx) = channel();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (id, out) = ends(&sent);
        let mut w = Sending::new(
            WorkerEnds {
                id,
                rx: &rx,
                out: &out,
            },
            Duration::from_millis(50),
        );
        grant(&tx, 100);
        assert_eq!(w.write(&[1; 300]).unwrap(), 100);
        // No credit left and none coming: the write times out.
        let e = w.write(&[1; 300]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(w.stopped(), Some(Stopped::TimedOut));
        assert_eq!(data_lens(&sent), [100]);
    }

    #[test]
    fn a_write_sends_at_most_a_chunk() {
        let (tx, rx) = channel();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (id, out) = ends(&sent);
        let mut w = Sending::new(
            WorkerEnds {
                id,
                rx: &rx,
                out: &out,
            },
            Duration::from_millis(50),
        );
        grant(&tx, WINDOW);
        w.write_all(&vec![0; CHUNK * 2 + 5]).unwrap();
        w.finish();
        assert_eq!(data_lens(&sent), [CHUNK, CHUNK, 5]);
        assert!(matches!(
            sent.lock().unwrap().last(),
            Some(Frame::End { id: 7 })
        ));
    }

    #[test]
    fn an_abort_or_an_early_answer_stops_the_body() {
        let (tx, rx) = channel();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (id, out) = ends(&sent);
        let mut w = Sending::with_credit(
            WorkerEnds {
                id,
                rx: &rx,
                out: &out,
            },
            10,
            Duration::from_millis(50),
        );
        tx.send(Frame::Head {
            id: 7,
            status: 413,
            fields: Vec::new(),
            length: None,
        })
        .unwrap();
        assert!(w.write(&[0; 5]).is_err());
        assert_eq!(w.stopped(), Some(Stopped::Answered));
        assert!(matches!(w.answer(), Some(Frame::Head { status: 413, .. })));

        let (tx, rx) = channel();
        let mut w = Sending::with_credit(
            WorkerEnds {
                id,
                rx: &rx,
                out: &out,
            },
            10,
            Duration::from_millis(50),
        );
        tx.send(Frame::Abort {
            id: 7,
            reason: AbortReason::NoSpace,
        })
        .unwrap();
        let e = w.write(&[0; 5]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(w.stopped(), Some(Stopped::Aborted(AbortReason::NoSpace)));
        drop(tx);
        // A gone channel, once the credit is spent.
        let (tx, rx) = channel::<Frame>();
        drop(tx);
        let mut w = Sending::new(
            WorkerEnds {
                id,
                rx: &rx,
                out: &out,
            },
            Duration::from_millis(50),
        );
        assert!(w.write(&[0; 5]).is_err());
        assert_eq!(w.stopped(), Some(Stopped::Gone));
    }
}
