//! One rank's replica of the store: a directory of document files, each
//! written to a temporary name, fsync'd, then renamed, and the worker side
//! of the store's frames (`serve`).
//!
//! A replica keeps the newest version it was given of each document: a
//! `Put` older than what is on disk is acknowledged and thrown away, so
//! writes that arrive late (a rank that stalled and woke up) never undo a
//! later one.

use super::doc::{file_name, header, parse_header, MAX_HEADER};
use crate::error::Error;
use crate::stream::credit::{Receiving, Sending, Stopped, WorkerEnds};
use crate::stream::transport::Out;
use crate::stream::wire::{
    encode_inventory, AbortReason, DocMeta, Frame, Inventory, Service, StoreOp, StoreReply,
};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Locks over document names: two writes of one document take turns to
/// compare versions and rename; writes of others do not wait.
const STRIPES: usize = 64;
/// How long a replica waits for the next frame of a stream from rank 0.
const FRAME_WAIT: Duration = Duration::from_secs(60);
/// Inventory bytes in one `Data` frame.
const INVENTORY_PIECE: usize = 512 * 1024;

/// The documents of one rank, under `DIR/rank-N/`.
pub struct Replica {
    docs: PathBuf,
    tmp: PathBuf,
    stripes: Vec<Mutex<()>>,
    next_tmp: AtomicU64,
}

/// A document file open for reading, positioned after its header.
pub struct Opened {
    pub file: File,
    pub body_at: u64,
    pub meta: DocMeta,
}

impl Replica {
    /// Open (creating it if needed) the replica in `dir`. Temporary files a
    /// crash left behind are removed: they were never acknowledged.
    pub fn open(dir: &Path) -> io::Result<Replica> {
        let docs = dir.join("docs");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&docs)?;
        fs::create_dir_all(&tmp)?;
        for entry in fs::read_dir(&tmp)? {
            let _ = fs::remove_file(entry?.path());
        }
        Ok(Replica {
            docs,
            tmp,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            next_tmp: AtomicU64::new(0),
        })
    }

    fn lock(&self, name: &str) -> MutexGuard<'_, ()> {
        let i = crate::hash::hash64(&[name.as_bytes()]) as usize % STRIPES;
        // A poisoned stripe only means a writer panicked; the files are whole.
        self.stripes[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start writing a version of `path`: its header goes to a new
    /// temporary file, which goes away with the `Pending` unless it is
    /// committed. A deletion that finds the disk full frees the space of
    /// the body it replaces and tries again: its tombstone could not be
    /// written otherwise, and the space could never be freed. (Only then:
    /// a deletion that is aborted later must leave the body in place.)
    pub fn begin(&self, path: &[u8], meta: &DocMeta) -> io::Result<Pending> {
        match self.try_begin(path, meta) {
            Err(e) if meta.deleted && Error::is_no_space(&e) => {
                self.free_body(path, &file_name(path), meta.version)?;
                self.try_begin(path, meta)
            }
            other => other,
        }
    }

    fn try_begin(&self, path: &[u8], meta: &DocMeta) -> io::Result<Pending> {
        let name = file_name(path);
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(format!("{name}.{n}"));
        let file = File::create(&tmp)?;
        let mut p = Pending {
            file,
            tmp,
            name,
            path: path.to_vec(),
            meta: meta.clone(),
            written: 0,
            kept: false,
        };
        p.file.write_all(&header(path, meta))?;
        Ok(p)
    }

    /// Remove the body of `path` if what is on disk is an older version of
    /// a live document: a deletion that wins needs none of it.
    fn free_body(&self, path: &[u8], name: &str, version: u64) -> io::Result<()> {
        let _guard = self.lock(name);
        match self.current(path)? {
            Some(m) if m.version < version && !m.deleted => {
                fs::remove_file(self.docs.join(name))?;
                crate::metrics::global().change_store_docs(-1);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The body is all here: make it durable (the first half of a write).
    pub fn prepare(&self, p: &mut Pending) -> io::Result<()> {
        if p.written != p.meta.length {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("body of {} bytes, {} expected", p.written, p.meta.length),
            ));
        }
        p.file.flush()?;
        p.file.sync_all()
    }

    /// Finish a prepared write: rename it over the document, unless the
    /// replica has the same or a newer version. Returns whether this
    /// version is now on disk.
    pub fn commit(&self, mut p: Pending) -> io::Result<bool> {
        let _guard = self.lock(&p.name);
        let current = self.current(&p.path)?;
        if current
            .as_ref()
            .is_some_and(|c| c.version >= p.meta.version)
        {
            return Ok(false); // the temporary file goes with `p`
        }
        fs::rename(&p.tmp, self.docs.join(&p.name))?;
        p.kept = true;
        sync_dir(&self.docs)?;
        if current.is_none() {
            crate::metrics::global().change_store_docs(1);
        }
        Ok(true)
    }

    /// Write a whole version at once.
    pub fn put(&self, path: &[u8], meta: &DocMeta, body: &[u8]) -> io::Result<bool> {
        let mut p = self.begin(path, meta)?;
        p.write(body)?;
        self.prepare(&mut p)?;
        self.commit(p)
    }

    /// The version of `path` on disk, if any.
    pub fn current(&self, path: &[u8]) -> io::Result<Option<DocMeta>> {
        Ok(self.open_doc(path)?.map(|o| o.meta))
    }

    /// The file of `path`, positioned after its header.
    pub fn open_doc(&self, path: &[u8]) -> io::Result<Option<Opened>> {
        let file = match File::open(self.docs.join(file_name(path))) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some((stored, meta, body_at)) = read_header(&file)? else {
            return Err(broken("unreadable document header"));
        };
        if stored != path {
            // Two paths with one 128-bit name: never seen, never served.
            return Err(broken("document file of another path"));
        }
        Ok(Some(Opened {
            file,
            body_at: body_at as u64,
            meta,
        }))
    }

    /// Remove the copy of `path` if it is `version`. Returns whether it was.
    pub fn remove(&self, path: &[u8], version: u64) -> io::Result<bool> {
        let name = file_name(path);
        let _guard = self.lock(&name);
        match self.current(path)? {
            Some(m) if m.version == version => {
                fs::remove_file(self.docs.join(&name))?;
                sync_dir(&self.docs)?;
                crate::metrics::global().change_store_docs(-1);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Every document here (tombstones too). Files that are not whole
    /// documents (cut short by a disk error) are reported and skipped.
    pub fn inventory(&self) -> io::Result<Inventory> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.docs)? {
            let path = entry?.path();
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let whole = match (read_header(&file), file.metadata()) {
                (Ok(Some((doc, meta, at))), Ok(m)) if m.len() == at as u64 + meta.length => {
                    Some((doc, meta))
                }
                _ => None,
            };
            match whole {
                Some(doc) => out.push(doc),
                None => log::warn!("store: skipping broken file {}", path.display()),
            }
        }
        Ok(out)
    }
}

/// A version being written. Its temporary file is removed when it is
/// dropped without being committed: a failed write leaves nothing behind.
pub struct Pending {
    file: File,
    tmp: PathBuf,
    name: String,
    path: Vec<u8>,
    meta: DocMeta,
    written: u64,
    /// Renamed into place: nothing to remove.
    kept: bool,
}

impl Pending {
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.written += bytes.len() as u64;
        if self.written > self.meta.length {
            return Err(broken("body longer than announced"));
        }
        self.file.write_all(bytes)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn broken(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// A rename is durable once its directory is synced.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The header at the start of `file`, read in growing pieces.
fn read_header(file: &File) -> io::Result<Option<(Vec<u8>, DocMeta, usize)>> {
    let mut buf = vec![0u8; 4096];
    let mut have = 0;
    loop {
        let n = file.read_at(&mut buf[have..], have as u64)?;
        have += n;
        if let Some(parsed) = parse_header(&buf[..have]) {
            return Ok(Some(parsed));
        }
        if n == 0 || have >= MAX_HEADER {
            return Ok(None);
        }
        if have == buf.len() {
            buf.resize((buf.len() * 2).min(MAX_HEADER), 0);
        }
    }
}

/// Run one store stream on this replica: `first` is its `Store` frame,
/// `rx` brings the rest, answers go to `out`.
pub fn serve(replica: &Replica, first: Frame, rx: &Receiver<Frame>, out: &Out) {
    let Frame::Open {
        id,
        service: Service::Store { op, path, meta },
    } = first
    else {
        return;
    };
    let t0 = std::time::Instant::now();
    let metrics = crate::metrics::streams();
    let _counted = metrics.map(|m| m.begin());
    let record = |status, bytes| {
        if let Some(m) = metrics {
            m.record(status, bytes, t0.elapsed());
        }
    };
    let answer = |reply: StoreReply| reply_head(id, reply, None);
    let result = match op {
        StoreOp::Put => receive_put(replica, id, &path, &meta, rx, out).map(|written| {
            vec![answer(match written {
                true => StoreReply::Written,
                false => StoreReply::Stale,
            })]
        }),
        StoreOp::Drop => replica.remove(&path, meta.version).map(|gone| {
            vec![answer(match gone {
                true => StoreReply::Found,
                false => StoreReply::Missing,
            })]
        }),
        StoreOp::List => replica.inventory().map(|inv| {
            let mut frames = vec![answer(StoreReply::Found)];
            let mut piece = Vec::new();
            for doc in inv {
                piece.push(doc);
                if piece.len() * 64 >= INVENTORY_PIECE {
                    let bytes = encode_inventory(&std::mem::take(&mut piece));
                    frames.push(Frame::Data { id, bytes });
                }
            }
            frames.push(Frame::Data {
                id,
                bytes: encode_inventory(&piece),
            });
            frames
        }),
        StoreOp::Read => match replica.open_doc(&path) {
            Ok(Some(doc)) if doc.meta.version == meta.version => {
                let length = doc.meta.length;
                send_doc(doc, id, rx, out);
                record(StoreReply::Found.status(), length);
                return;
            }
            Ok(_) => Ok(vec![answer(StoreReply::Missing)]),
            Err(e) => Err(e),
        },
    };
    let status = match &result {
        Ok(frames) => match frames.first() {
            Some(Frame::Head { status, .. }) => *status,
            _ => 200,
        },
        Err(_) => 500,
    };
    record(status, 0);
    match result {
        Ok(mut frames) => {
            frames.push(Frame::End { id });
            out(frames);
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {} // rank 0 gave up
        Err(e) => {
            log::warn!("store: {op:?} {}: {e}", String::from_utf8_lossy(&path));
            let reason = match Error::is_no_space(&e) {
                true => AbortReason::NoSpace,
                false => AbortReason::BadUpstream,
            };
            out(vec![Frame::Abort { id, reason }]);
        }
    }
}

/// Write a `Put`'s body as it comes, granting credit for more as it is
/// written, and make it durable; say so with a
/// `Head` of 202 (prepared), then wait for rank 0's word: a second `End`
/// commits it (renamed into place), an `Abort` drops it. Rank 0 commits
/// only once every replica it needs has prepared, so a write that cannot
/// be kept everywhere is kept nowhere.
fn receive_put(
    replica: &Replica,
    id: u64,
    path: &[u8],
    meta: &DocMeta,
    rx: &Receiver<Frame>,
    out: &Out,
) -> io::Result<bool> {
    let mut pending = replica.begin(path, meta)?;
    // The body comes within the credit granted as it is written, after
    // the window every write opens with (`ops::open_put`).
    let mut body = Receiving::new(WorkerEnds { id, rx, out }, FRAME_WAIT);
    loop {
        match body.next_piece() {
            Ok(Some(piece)) => pending.write(&piece)?,
            Ok(None) => break,
            Err(Stopped::TimedOut) => return Err(io::Error::from(io::ErrorKind::TimedOut)),
            Err(Stopped::Aborted(_) | Stopped::Gone | Stopped::Answered) => {
                return Err(io::Error::from(io::ErrorKind::Interrupted))
            }
        }
    }
    replica.prepare(&mut pending)?;
    out(vec![reply_head(id, StoreReply::Prepared, None)]);
    loop {
        match rx.recv_timeout(FRAME_WAIT) {
            Ok(Frame::End { .. }) => return replica.commit(pending),
            Ok(Frame::Abort { .. }) | Err(RecvTimeoutError::Disconnected) => {
                return Err(io::Error::from(io::ErrorKind::Interrupted))
            }
            // What never comes here now.
            Ok(
                Frame::Data { .. }
                | Frame::Credit { .. }
                | Frame::Open { .. }
                | Frame::Head { .. }
                | Frame::Ping { .. }
                | Frame::Pong { .. }
                | Frame::Stats { .. },
            ) => {}
            Err(RecvTimeoutError::Timeout) => return Err(io::Error::from(io::ErrorKind::TimedOut)),
        }
    }
}

/// The `Head` that carries a replica's answer.
fn reply_head(id: u64, reply: StoreReply, length: Option<u64>) -> Frame {
    Frame::Head {
        id,
        status: reply.status(),
        fields: Vec::new(),
        length,
    }
}

/// Send a document's body within the credit rank 0 grants, reading the
/// file only that far; the head goes with the first piece, the last piece
/// with the `End`.
fn send_doc(doc: Opened, id: u64, rx: &Receiver<Frame>, out: &Out) {
    let length = doc.meta.length;
    let head = reply_head(id, StoreReply::Found, Some(length));
    let mut sending = Sending::answer_batched(WorkerEnds { id, rx, out }, vec![head], FRAME_WAIT);
    let mut at = 0u64;
    while at < length {
        let Ok(room) = sending.room() else {
            return; // rank 0 stopped reading
        };
        let want = (length - at).min(room as u64) as usize;
        let mut bytes = vec![0u8; want];
        if let Err(e) = doc.file.read_exact_at(&mut bytes, doc.body_at + at) {
            log::warn!("store: reading a document: {e}");
            out(vec![Frame::Abort {
                id,
                reason: AbortReason::BadUpstream,
            }]);
            return;
        }
        at += want as u64;
        match at < length {
            true => sending.send_piece(bytes),
            false => sending.send_last_piece(bytes),
        }
    }
    sending.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(version: u64, body: &[u8]) -> DocMeta {
        DocMeta {
            version,
            time_ms: 1,
            content_type: "text/plain".into(),
            length: body.len() as u64,
            deleted: false,
        }
    }

    #[test]
    fn newest_version_wins_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path()).unwrap();
        assert!(r.put(b"/s/a", &meta(5, b"five"), b"five").unwrap());
        assert!(!r.put(b"/s/a", &meta(3, b"three"), b"three").unwrap());
        assert!(!r.put(b"/s/a", &meta(5, b"again"), b"again").unwrap());
        assert!(r.put(b"/s/a", &meta(7, b"seven!"), b"seven!").unwrap());
        assert!(r.put(b"/s/a/b", &meta(1, b""), b"").unwrap());
        // A crash left a temporary file: it goes at the next start.
        fs::write(dir.path().join("tmp/junk"), b"x").unwrap();
        let r = Replica::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let doc = r.open_doc(b"/s/a").unwrap().unwrap();
        assert_eq!(doc.meta, meta(7, b"seven!"));
        let mut body = [0u8; 6];
        doc.file.read_exact_at(&mut body, doc.body_at).unwrap();
        assert_eq!(&body, b"seven!");
        let mut inv = r.inventory().unwrap();
        inv.sort_by(|a, b| a.0.cmp(&b.0));
        let paths: Vec<&[u8]> = inv.iter().map(|(p, _)| p.as_slice()).collect();
        assert_eq!(paths, [&b"/s/a"[..], b"/s/a/b"]);
        // Only the named version is removed.
        assert!(!r.remove(b"/s/a", 5).unwrap());
        assert!(r.remove(b"/s/a", 7).unwrap());
        assert!(r.open_doc(b"/s/a").unwrap().is_none());
    }

    #[test]
    fn a_deletion_leaves_the_body_until_it_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path()).unwrap();
        let body = vec![7u8; 100_000];
        r.put(b"/big", &meta(3, &body), &body).unwrap();
        let file = dir.path().join("docs").join(file_name(b"/big"));
        let tombstone = DocMeta {
            deleted: true,
            ..meta(5, b"")
        };
        // Begun and dropped (rank 0 aborted it): the document stays whole.
        drop(r.begin(b"/big", &tombstone).unwrap());
        assert_eq!(r.open_doc(b"/big").unwrap().unwrap().meta, meta(3, &body));
        // Committed: the tombstone replaces the body.
        let p = r.begin(b"/big", &tombstone).unwrap();
        r.commit(p).unwrap();
        let doc = r.open_doc(b"/big").unwrap().unwrap();
        assert!(doc.meta.deleted && doc.meta.length == 0);
        assert!(fs::metadata(&file).unwrap().len() < 1000);
        // On a full disk the body is freed first: tests/store.rs, on a tmpfs.
        // An older deletion frees nothing.
        r.put(b"/new", &meta(9, b"kept"), b"kept").unwrap();
        let old = DocMeta {
            deleted: true,
            ..meta(4, b"")
        };
        assert!(!r.put(b"/new", &old, b"").unwrap());
        assert_eq!(r.open_doc(b"/new").unwrap().unwrap().meta, meta(9, b"kept"));
    }

    #[test]
    fn short_bodies_and_torn_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let r = Replica::open(dir.path()).unwrap();
        let tmp_files = || fs::read_dir(dir.path().join("tmp")).unwrap().count();
        let mut p = r.begin(b"/x", &meta(1, b"abcd")).unwrap();
        p.write(b"ab").unwrap();
        assert!(r.prepare(&mut p).is_err());
        assert_eq!(tmp_files(), 1);
        drop(p);
        assert_eq!(tmp_files(), 0, "a failed write leaves no file behind");
        let mut p = r.begin(b"/x", &meta(1, b"abcd")).unwrap();
        assert!(p.write(b"abcde").is_err());
        drop(p);
        assert!(r.open_doc(b"/x").unwrap().is_none());
        assert_eq!(tmp_files(), 0);
        // Prepared and not committed: nothing on disk either.
        let mut p = r.begin(b"/x", &meta(1, b"abcd")).unwrap();
        p.write(b"abcd").unwrap();
        r.prepare(&mut p).unwrap();
        drop(p);
        assert!(r.open_doc(b"/x").unwrap().is_none());
        assert_eq!(tmp_files(), 0);
        // A document file cut short is left out of the inventory.
        r.put(b"/y", &meta(2, b"whole"), b"whole").unwrap();
        let file = dir.path().join("docs").join(file_name(b"/y"));
        let bytes = fs::read(&file).unwrap();
        fs::write(&file, &bytes[..bytes.len() - 1]).unwrap();
        assert!(r.inventory().unwrap().is_empty());
    }
}
