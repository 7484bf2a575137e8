//! The store's write path on rank 0, in two phases: the body goes to the
//! first `copies()` live ranks of the document's ranking, each makes it
//! durable in a temporary file (prepared); only when all have does any put
//! it in place (committed). A whole body (small documents, chunked
//! uploads, repair copies) can go again to the next rank when one fails;
//! a streamed one (`write_from`) goes through rank 0 a piece at a time,
//! within each replica's credit, and is never held whole here.

use super::ops;
use super::state::State;
use crate::error::Error;
use crate::stream::credit::Sending;
use crate::stream::credit::CHUNK;
use crate::stream::transport::Stream;
use crate::stream::wire::DocMeta;
use std::collections::VecDeque;
use std::io::Write;

impl State {
    /// Put a version on its replicas and into the catalog, in two phases:
    /// the first `copies()` live ranks of its ranking (a rank that fails or
    /// stalls is replaced by the next one) each make the body durable in a
    /// temporary file; only when all of them have does any put it in
    /// place. Fewer than `copies()` prepared copies: every one is dropped,
    /// the catalog keeps the version before, and the client gets 507 if a
    /// disk was full, else 503.
    pub fn write(&self, path: &[u8], meta: &DocMeta, body: &[u8]) -> Result<(), Error> {
        let ranking = self.ranking(path);
        let n = self.copies();
        let name = String::from_utf8_lossy(path);
        let mut tried = Vec::new();
        let mut ready = Vec::new();
        let mut waiting = VecDeque::new();
        let mut full = Vec::new();
        loop {
            let live = self.transport.live_workers();
            while ready.len() + waiting.len() < n {
                let Some(rank) = next_rank(&ranking, &tried, &live) else {
                    break;
                };
                tried.push(rank);
                match ops::start_put(&self.transport, rank, path, meta, body) {
                    Ok(stream) => waiting.push_back((rank, stream)),
                    // Refused before the body was all sent.
                    Err(Error::InsufficientStorage) => {
                        log::warn!("store: rank {rank} is out of space: {name} not written there");
                        full.push(rank);
                    }
                    Err(e) => log::info!("store: rank {rank} cannot take a write: {e}"),
                }
            }
            let Some((rank, mut stream)) = waiting.pop_front() else {
                break;
            };
            match ops::prepared(&mut stream) {
                Ok(()) => ready.push((rank, stream)),
                Err(Error::InsufficientStorage) => {
                    log::warn!("store: rank {rank} is out of space: {name} not written there");
                    full.push(rank);
                }
                Err(e) => {
                    log::info!(
                        "store: write of {name} to rank {rank} failed ({e}); trying the next rank"
                    )
                }
            }
        }
        if ready.len() < n {
            // Dropping the prepared streams aborts them: nothing is kept.
            let kept = ready.len();
            drop(ready);
            log::warn!(
                "store: {name} not written: {kept} of {n} copies could be made{}",
                match full.is_empty() {
                    true => String::new(),
                    false => format!(" (out of space on rank {full:?})"),
                }
            );
            return Err(match full.is_empty() {
                true => Error::Overloaded,
                false => Error::InsufficientStorage,
            });
        }
        self.commit(path, meta, ready, &ranking, &mut tried, Some(body))
    }

    /// Write a version whose body of `meta.length` bytes comes from `read`
    /// (the client's request body, a piece at a time: `read` fills the
    /// buffer it is given as far as it goes, 0 at the end), streamed to the first `copies()` live
    /// ranks of its ranking at once: the slowest replica's credit paces
    /// the client. Nothing is held whole on rank 0, so a replica that fails
    /// mid-body cannot be replaced by another: every copy is dropped and
    /// the client gets 503 (507 for a full disk); `read` failing (the
    /// client) drops them too. Once every copy is prepared, as `write`.
    pub fn write_from(
        &self,
        path: &[u8],
        meta: &DocMeta,
        read: &mut dyn FnMut(&mut [u8]) -> Result<usize, Error>,
    ) -> Result<(), Error> {
        let ranking = self.ranking(path);
        let n = self.copies();
        let name = String::from_utf8_lossy(path);
        let live = self.transport.live_workers();
        let mut tried = Vec::new();
        let mut sending: Vec<(usize, Sending<Stream>)> = Vec::new();
        while sending.len() < n {
            let Some(rank) = next_rank(&ranking, &tried, &live) else {
                break;
            };
            tried.push(rank);
            match ops::open_put(&self.transport, rank, path, meta) {
                Ok(s) => sending.push((rank, s)),
                Err(e) => log::info!("store: rank {rank} cannot take a write: {e}"),
            }
        }
        if sending.len() < n {
            log::warn!(
                "store: {name} not written: {} of {n} ranks live",
                sending.len()
            );
            return Err(Error::Overloaded);
        }
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0u64;
        loop {
            let got = read(&mut buf)?;
            if got == 0 {
                break;
            }
            sent += got as u64;
            for (rank, s) in &mut sending {
                if s.write_all(&buf[..got]).is_err() {
                    let e = ops::put_stopped(s);
                    refused(&name, *rank, &e);
                    return Err(e);
                }
            }
        }
        if sent != meta.length {
            return Err(Error::BadRequest("request body shorter than its length"));
        }
        let waiting: Vec<(usize, Stream)> = sending
            .into_iter()
            .map(|(rank, mut s)| {
                s.finish();
                (rank, s.into_inner())
            })
            .collect();
        let mut ready = Vec::new();
        let mut failure = None;
        for (rank, mut stream) in waiting {
            match ops::prepared(&mut stream) {
                Ok(()) => ready.push((rank, stream)),
                Err(e) => {
                    refused(&name, rank, &e);
                    failure = Some(e);
                }
            }
        }
        if ready.len() < n {
            // Dropping the prepared streams aborts them: nothing is kept.
            return Err(failure.unwrap_or(Error::Overloaded));
        }
        self.commit(path, meta, ready, &ranking, &mut tried, None)
    }

    /// The second phase: every prepared copy put in place, then the
    /// catalog. A rank that failed between the phases is replaced by the
    /// next live rank of the ranking when the whole `body` is at hand
    /// (else the repair pass copies it there).
    fn commit(
        &self,
        path: &[u8],
        meta: &DocMeta,
        ready: Vec<(usize, Stream)>,
        ranking: &[usize],
        tried: &mut Vec<usize>,
        body: Option<&[u8]>,
    ) -> Result<(), Error> {
        let n = self.copies();
        let name = String::from_utf8_lossy(path);
        for (_, stream) in &ready {
            ops::commit_start(stream);
        }
        let mut committed = Vec::new();
        let mut failure = None;
        for (rank, stream) in ready {
            match ops::commit_done(stream) {
                Ok(()) => committed.push(rank),
                Err(e) => {
                    log::warn!("store: commit of {name} on rank {rank} failed: {e}");
                    failure = Some(e);
                }
            }
        }
        // A rank that stalled (or failed) between the two phases: the
        // version is in place elsewhere now, so its copy goes whole to the
        // next live rank of the ranking instead.
        if let (Some(body), false, true) = (body, committed.is_empty(), committed.len() < n) {
            let live = self.transport.live_workers();
            while committed.len() < n {
                let Some(rank) = next_rank(ranking, tried, &live) else {
                    break;
                };
                tried.push(rank);
                match ops::put(&self.transport, rank, path, meta, body) {
                    Ok(()) => committed.push(rank),
                    Err(e) => {
                        log::info!("store: copy of {name} to stand-in rank {rank} failed: {e}");
                        failure = Some(e);
                    }
                }
            }
        }
        // What is on disk is what the catalog says, even when fewer copies
        // than wanted could be put in place after every one was prepared
        // (rare: only the last step broke); the client hears of it.
        if !committed.is_empty() {
            self.catalog_mut().commit(path, meta, &committed);
        }
        match committed.len() >= n {
            true => Ok(()),
            false => Err(failure.unwrap_or(Error::Overloaded)),
        }
    }
}

/// Log why `rank` did not take a streamed write of `name`.
fn refused(name: &str, rank: usize, e: &Error) {
    match e {
        Error::InsufficientStorage => {
            log::warn!("store: rank {rank} is out of space: {name} not written there")
        }
        _ => log::warn!("store: write of {name} to rank {rank} failed ({e}): not written"),
    }
}

/// The first rank of `ranking` not tried yet and live now.
fn next_rank(ranking: &[usize], tried: &[usize], live: &[usize]) -> Option<usize> {
    ranking
        .iter()
        .copied()
        .find(|r| !tried.contains(r) && live.contains(r))
}
