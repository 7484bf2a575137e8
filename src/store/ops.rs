//! Rank 0's side of the store's frames: one operation on one replica,
//! through the `Transport` (a worker rank, or this process when alone).

use crate::error::Error;
use crate::http::response::BodySource;
use crate::stream::credit::{Receiving, Sending, Stopped, WINDOW};
use crate::stream::transport::{Stream, Transport};
use crate::stream::wire::{
    decode_inventory, DocMeta, Frame, Inventory, Service, StoreOp, StoreReply,
};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// How long one operation may take on a replica: long enough to fsync
/// the largest document on a slow disk. A replica that stalls is noticed
/// by the heartbeats well before, and its operations end at once.
pub const OP_WAIT: Duration = Duration::from_secs(30);

fn open(
    t: &Arc<dyn Transport>,
    rank: usize,
    op: StoreOp,
    path: &[u8],
    meta: &DocMeta,
) -> Result<Stream, Error> {
    Stream::open_at(t, rank, |id| Frame::Open {
        id,
        service: Service::Store {
            op,
            path: path.to_vec(),
            meta: meta.clone(),
        },
    })
}

/// The replica's answer to `op` on `stream`.
fn reply(stream: &mut Stream, op: StoreOp) -> Result<StoreReply, Error> {
    loop {
        match stream.recv(OP_WAIT)? {
            Frame::Head { status, .. } => {
                return StoreReply::of(op, status).ok_or_else(|| {
                    Error::Internal(format!("replica answered {op:?} with {status}"))
                })
            }
            Frame::Abort { reason, .. } => return Err(reason.origin_error()),
            // Credit, and nothing else a replica sends before its answer.
            Frame::Credit { .. }
            | Frame::Open { .. }
            | Frame::Data { .. }
            | Frame::End { .. }
            | Frame::Ping { .. }
            | Frame::Pong { .. }
            | Frame::Stats { .. } => {}
        }
    }
}

/// Wait for the stream's `End`.
fn end(stream: &mut Stream) -> Result<(), Error> {
    loop {
        match stream.recv(OP_WAIT)? {
            Frame::End { .. } => return Ok(()),
            Frame::Abort { reason, .. } => return Err(reason.origin_error()),
            Frame::Credit { .. }
            | Frame::Open { .. }
            | Frame::Head { .. }
            | Frame::Data { .. }
            | Frame::Ping { .. }
            | Frame::Pong { .. }
            | Frame::Stats { .. } => {}
        }
    }
}

/// Start a write of a version of a document to `rank`: the body goes
/// into the returned `Sending` (within the replica's credit), and then
/// `Sending::finish`; `prepared` waits until the replica has it durable,
/// `commit` puts it in place. Dropping the stream before the commit drops
/// the copy.
pub fn open_put(
    t: &Arc<dyn Transport>,
    rank: usize,
    path: &[u8],
    meta: &DocMeta,
) -> Result<Sending<Stream>, Error> {
    let stream = open(t, rank, StoreOp::Put, path, meta)?;
    // Every write opens with a window: a document that fits in it goes out
    // at once, without waiting for the replica's first grant.
    Ok(Sending::with_credit(stream, u64::from(WINDOW), OP_WAIT))
}

/// What a write that stopped sending its body means for the client.
pub fn put_stopped(sending: &Sending<Stream>) -> Error {
    sending
        .stopped()
        .map_or(Error::Overloaded, Stopped::origin_error)
}

/// Send a whole version of a document to `rank` (`open_put`, the body,
/// `finish`): the stream to wait on with `prepared` (`finish_put` does the
/// rest).
pub fn start_put(
    t: &Arc<dyn Transport>,
    rank: usize,
    path: &[u8],
    meta: &DocMeta,
    body: &[u8],
) -> Result<Stream, Error> {
    let mut sending = open_put(t, rank, path, meta)?;
    if sending.write_all(body).is_err() {
        return Err(put_stopped(&sending));
    }
    sending.finish();
    Ok(sending.into_inner())
}

/// Wait until the replica has the body of a `start_put` durable, in a
/// temporary file: 507 if its disk is full.
pub fn prepared(stream: &mut Stream) -> Result<(), Error> {
    match reply(stream, StoreOp::Put)? {
        StoreReply::Prepared => Ok(()),
        other @ (StoreReply::Written
        | StoreReply::Stale
        | StoreReply::Found
        | StoreReply::Missing) => Err(Error::Internal(format!(
            "replica answered {other:?} before preparing"
        ))),
    }
}

/// Tell the replica to put a prepared version in place (`commit_done`
/// waits for it): sent to every replica before waiting for any.
pub fn commit_start(stream: &Stream) {
    stream.send(Frame::End { id: stream.id });
}

/// The replica has the committed version on disk (or a newer one).
pub fn commit_done(mut stream: Stream) -> Result<(), Error> {
    match reply(&mut stream, StoreOp::Put)? {
        StoreReply::Written | StoreReply::Stale => end(&mut stream),
        other @ (StoreReply::Prepared | StoreReply::Found | StoreReply::Missing) => Err(
            Error::Internal(format!("replica answered {other:?} to a commit")),
        ),
    }
}

/// The replica has the version on disk (or a newer one).
pub fn finish_put(mut stream: Stream) -> Result<(), Error> {
    prepared(&mut stream)?;
    commit_start(&stream);
    commit_done(stream)
}

/// Write a version to `rank` and wait until it is on disk.
pub fn put(
    t: &Arc<dyn Transport>,
    rank: usize,
    path: &[u8],
    meta: &DocMeta,
    body: &[u8],
) -> Result<(), Error> {
    finish_put(start_put(t, rank, path, meta, body)?)
}

/// Remove `version` of `path` from `rank`; whether that copy was there.
pub fn drop_copy(
    t: &Arc<dyn Transport>,
    rank: usize,
    path: &[u8],
    version: u64,
) -> Result<bool, Error> {
    let meta = DocMeta {
        version,
        ..DocMeta::default()
    };
    let mut stream = open(t, rank, StoreOp::Drop, path, &meta)?;
    let found = match reply(&mut stream, StoreOp::Drop)? {
        StoreReply::Found => true,
        StoreReply::Missing => false,
        other @ (StoreReply::Prepared | StoreReply::Written | StoreReply::Stale) => {
            return Err(Error::Internal(format!(
                "replica answered {other:?} to a drop"
            )))
        }
    };
    end(&mut stream)?;
    Ok(found)
}

/// Every document on `rank`.
pub fn inventory(t: &Arc<dyn Transport>, rank: usize) -> Result<Inventory, Error> {
    let mut stream = open(t, rank, StoreOp::List, b"", &DocMeta::default())?;
    reply(&mut stream, StoreOp::List)?;
    let mut all = Vec::new();
    loop {
        match stream.recv(OP_WAIT)? {
            Frame::Data { bytes, .. } => {
                all.extend(decode_inventory(&bytes).map_err(|e| Error::Internal(e.to_string()))?)
            }
            Frame::End { .. } => return Ok(all),
            Frame::Abort { reason, .. } => return Err(reason.origin_error()),
            Frame::Credit { .. }
            | Frame::Open { .. }
            | Frame::Head { .. }
            | Frame::Ping { .. }
            | Frame::Pong { .. }
            | Frame::Stats { .. } => {}
        }
    }
}

/// Start reading `version` of `path` on `rank`: the body as it streams,
/// or `None` if the replica has another version (or none).
pub fn read(
    t: &Arc<dyn Transport>,
    rank: usize,
    path: &[u8],
    version: u64,
) -> Result<Option<DocBody>, Error> {
    let meta = DocMeta {
        version,
        ..DocMeta::default()
    };
    let mut stream = open(t, rank, StoreOp::Read, path, &meta)?;
    match reply(&mut stream, StoreOp::Read)? {
        StoreReply::Found => {}
        StoreReply::Missing => return Ok(None),
        other @ (StoreReply::Prepared | StoreReply::Written | StoreReply::Stale) => {
            return Err(Error::Internal(format!(
                "replica answered {other:?} to a read"
            )))
        }
    }
    Ok(Some(DocBody {
        body: Receiving::new(stream, OP_WAIT),
        skip: 0,
        left: None,
    }))
}

/// A whole document read into memory (for copies between replicas).
pub fn read_all(
    t: &Arc<dyn Transport>,
    rank: usize,
    path: &[u8],
    version: u64,
) -> Result<Option<Vec<u8>>, Error> {
    let Some(mut body) = read(t, rank, path, version)? else {
        return Ok(None);
    };
    let mut all = Vec::new();
    while let Some(piece) = body.next_chunk()? {
        all.extend_from_slice(&piece);
    }
    Ok(Some(all))
}

/// A stored body as it comes from a replica, cut to a byte range.
pub struct DocBody {
    body: Receiving<Stream>,
    /// Bytes still to skip before the range.
    skip: u64,
    /// Bytes of the range still to hand out (`None`: all there is).
    left: Option<u64>,
}

impl DocBody {
    /// The rank it is read from.
    pub fn rank(&self) -> usize {
        self.body.ends().rank()
    }

    /// Only `len` bytes from `offset`.
    pub fn range(mut self, offset: u64, len: u64) -> DocBody {
        self.skip = offset;
        self.left = Some(len);
        self
    }
}

impl BodySource for DocBody {
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        loop {
            if self.left == Some(0) {
                return Ok(None); // the rest is not wanted: dropping aborts it
            }
            let piece = match self.body.next_piece() {
                Ok(piece) => piece,
                Err(Stopped::TimedOut) => return Err(Error::UpstreamTimeout),
                Err(Stopped::Aborted(_) | Stopped::Gone | Stopped::Answered) => {
                    return Err(Error::UpstreamBroken("stored document cut short"))
                }
            };
            let Some(mut bytes) = piece else {
                return match self.left {
                    None => Ok(None),
                    Some(_) => Err(Error::UpstreamBroken("stored document cut short")),
                };
            };
            let skip = self.skip.min(bytes.len() as u64) as usize;
            self.skip -= skip as u64;
            bytes.drain(..skip);
            if let Some(left) = &mut self.left {
                bytes.truncate((*left).min(bytes.len() as u64) as usize);
                *left -= bytes.len() as u64;
            }
            if !bytes.is_empty() {
                return Ok(Some(bytes));
            }
        }
    }
}
