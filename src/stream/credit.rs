//! Credit, once for every stream: a body's sending end is a `Write`
//! (`Sending`) that puts bytes in `Data` frames only as far as the
//! receiver's grants allow; its receiving end (`Receiving`) hands out the
//! pieces and grants credit back as they are consumed (`Grants`). Either
//! end may be rank 0's `Stream` or a worker's (`WorkerEnds`): both are
//! `Ends`. A CONNECT tunnel sends and receives at once on two threads that
//! share its credit, so it keeps its own loop (`proxy::tunnel`), with
//! `Grants` for what it receives.

use super::transport::{Out, Stream};
use super::wire::{AbortReason, Frame};
use std::io;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// Bytes a receiver lets a sender have in flight on one stream, in each
/// direction. Small enough that a 10 GiB body needs a few MiB on any rank;
/// large enough to keep a loopback transfer busy between two grants.
pub const WINDOW: u32 = 4 << 20;
/// A receiver grants credit again once it has written this much.
pub const GRANT_EVERY: u64 = (WINDOW / 4) as u64;
/// Largest body piece a sender puts in one `Data` frame.
pub const CHUNK: usize = 256 * 1024;

/// The credit a receiver grants back once it has written `consumed` bytes
/// (and not granted them yet): nothing until `GRANT_EVERY`, then at most a
/// window, which fits a `Credit` frame's u32.
fn take_grant(consumed: &mut u64) -> Option<u32> {
    if *consumed < GRANT_EVERY {
        return None;
    }
    let bytes = (*consumed).min(u64::from(WINDOW)) as u32;
    *consumed -= u64::from(bytes);
    Some(bytes)
}

/// One stream seen from one side: frames out, frames in.
pub trait Ends {
    fn id(&self) -> u64;
    fn send(&self, frame: Frame);
    /// Frames that travel together (one wake for whoever waits for them).
    fn send_batch(&self, frames: Vec<Frame>) {
        for frame in frames {
            self.send(frame);
        }
    }
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
    fn send_batch(&self, frames: Vec<Frame>) {
        (**self).send_batch(frames);
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
    fn send_batch(&self, frames: Vec<Frame>) {
        (self.out)(frames);
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
    /// Frames held back to travel with the next ones: the head goes with
    /// the first piece, and the last piece with the `End`
    /// (`answer_batched`).
    batch: Option<Vec<Frame>>,
    /// Frames from the other side other than credit and aborts are
    /// skipped (a worker relaying an answer while the tail of a request
    /// body rank 0 sent still comes in), not taken for an answer.
    skip_others: bool,
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
            batch: None,
            skip_others: false,
        }
    }

    /// A worker's answer: `first` (its head) goes out with the first piece,
    /// and the last piece (`send_last_piece`) with the `End`; the window
    /// rank 0 gives every stream is open from the start, and frames other
    /// than credit and aborts are skipped.
    pub fn answer_batched(ends: E, first: Vec<Frame>, wait: Duration) -> Sending<E> {
        Sending {
            batch: Some(first),
            skip_others: true,
            ..Sending::with_credit(ends, u64::from(WINDOW), wait)
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

    /// Say the body is whole (`End`), with what is held back.
    pub fn finish(&mut self) {
        let end = Frame::End { id: self.ends.id() };
        match self.batch.take() {
            Some(mut batch) => {
                batch.push(end);
                self.ends.send_batch(batch);
            }
            None => self.ends.send(end),
        }
    }

    /// How many bytes may go in the next piece (at most `CHUNK`), waiting
    /// for a grant when there is no credit: a sender that reads its source
    /// only this far holds nothing it cannot send.
    pub fn room(&mut self) -> Result<usize, Stopped> {
        if let Some(stopped) = self.stopped {
            return Err(stopped);
        }
        if let Err(stopped) = self.wait_for_credit() {
            self.stopped = Some(stopped);
            return Err(stopped);
        }
        Ok((self.credit as usize).min(CHUNK))
    }

    /// Send `bytes`, no more than the last `room()` said, as one piece.
    pub fn send_piece(&mut self, bytes: Vec<u8>) {
        self.push_piece(bytes);
        if let Some(batch) = self.batch.as_mut().filter(|b| !b.is_empty()) {
            let batch = std::mem::take(batch);
            self.ends.send_batch(batch);
        }
    }

    /// Send `bytes` as the body's last piece: held back to travel with the
    /// `End` (`finish`) when batched.
    pub fn send_last_piece(&mut self, bytes: Vec<u8>) {
        self.push_piece(bytes);
    }

    fn push_piece(&mut self, bytes: Vec<u8>) {
        self.credit = self.credit.saturating_sub(bytes.len() as u64);
        let data = Frame::Data {
            id: self.ends.id(),
            bytes,
        };
        match &mut self.batch {
            Some(batch) => batch.push(data),
            None => self.ends.send(data),
        }
    }

    fn take(&mut self, frame: Frame) -> Result<(), Stopped> {
        match frame {
            Frame::Credit { bytes, .. } => self.credit += u64::from(bytes),
            Frame::Abort { reason, .. } => return Err(Stopped::Aborted(reason)),
            // Heartbeats never come on a stream.
            Frame::Ping { .. } | Frame::Pong { .. } => {}
            Frame::Open { .. }
            | Frame::Head { .. }
            | Frame::Data { .. }
            | Frame::End { .. }
            | Frame::Stats { .. }
                if self.skip_others => {}
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
        let n = self.room().map_err(Stopped::io_error)?.min(buf.len());
        self.send_piece(buf[..n].to_vec());
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The receiving end of a stream's body: its `Data` pieces as they come,
/// each granted back as credit once the next is asked for (the one before
/// was consumed by then: written on, or handed out).
pub struct Receiving<E: Ends> {
    ends: E,
    wait: Duration,
    grants: Grants,
    /// The piece handed out last, not granted back yet.
    handed: usize,
}

impl<E: Ends> Receiving<E> {
    pub fn new(ends: E, wait: Duration) -> Receiving<E> {
        Receiving {
            ends,
            wait,
            grants: Grants::default(),
            handed: 0,
        }
    }

    /// The stream's end, to send on.
    pub fn ends(&self) -> &E {
        &self.ends
    }

    fn grant(&mut self) {
        let id = self.ends.id();
        if let Some(credit) = self.grants.consumed(id, std::mem::take(&mut self.handed)) {
            self.ends.send(credit);
        }
    }

    /// What `frame` gives: a piece, the end (`Some(None)`), or nothing.
    fn take(&mut self, frame: Frame) -> Result<Option<Option<Vec<u8>>>, Stopped> {
        match frame {
            Frame::Data { bytes, .. } => {
                self.handed = bytes.len();
                Ok(Some(Some(bytes)))
            }
            Frame::End { .. } => Ok(Some(None)),
            Frame::Abort { reason, .. } => Err(Stopped::Aborted(reason)),
            // Late grants of the other direction; nothing else comes
            // mid-body.
            Frame::Credit { .. }
            | Frame::Open { .. }
            | Frame::Head { .. }
            | Frame::Ping { .. }
            | Frame::Pong { .. }
            | Frame::Stats { .. } => Ok(None),
        }
    }

    /// The next piece, `None` at the end, waiting up to the wait.
    pub fn next_piece(&mut self) -> Result<Option<Vec<u8>>, Stopped> {
        self.grant();
        loop {
            let frame = match self.ends.next(self.wait) {
                Ok(frame) => frame,
                Err(RecvTimeoutError::Timeout) => return Err(Stopped::TimedOut),
                Err(RecvTimeoutError::Disconnected) => return Err(Stopped::Gone),
            };
            if let Some(piece) = self.take(frame)? {
                return Ok(piece);
            }
        }
    }

    /// The next piece if one is waiting (`None`: nothing yet).
    pub fn try_next_piece(&mut self) -> Option<Result<Option<Vec<u8>>, Stopped>> {
        self.grant();
        loop {
            let frame = self.ends.try_next()?;
            match self.take(frame) {
                Ok(Some(piece)) => return Some(Ok(piece)),
                Ok(None) => {}
                Err(stopped) => return Some(Err(stopped)),
            }
        }
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
#[path = "credit_tests.rs"]
mod tests;
