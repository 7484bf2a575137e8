//! The access log: one Combined Log Format line per request, plus the
//! request's duration in seconds and the rank that served it.

use crate::http::date::{clf_date_bytes, unix_secs};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread;
use std::time::{Duration, SystemTime};

/// The log target of access lines, so the logger can print them bare.
pub const TARGET: &str = "mpiweb::access";

/// What one access line records.
pub struct Entry<'a> {
    pub peer: SocketAddr,
    /// The request line, or `None` when the head never parsed.
    pub request_line: Option<&'a str>,
    pub status: u16,
    pub bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub duration: Duration,
    /// The request's `X-Request-Id`, when a head was read.
    pub id: Option<&'a str>,
    pub rank: usize,
}

/// How long an access line may wait before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// With nothing to write, the writer waits for the next line instead of
/// waking every `FLUSH_INTERVAL` (50 wakes a second, 0.2% of a core on an
/// idle cluster); it looks for a SIGHUP at least this often.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// Lines that may wait at once; past it a line is written directly.
const QUEUE_LINES: usize = 8192;
/// Largest write to stderr: a pipe keeps writes up to PIPE_BUF (4096 on
/// Linux) whole, so another thread's log line never lands inside one.
const PIPE_PIECE: usize = 4096;

/// Where access lines go.
enum Dest {
    /// `--access-log FILE`; the open file is replaced when SIGHUP reopens
    /// it (log rotation).
    File {
        path: PathBuf,
        file: RwLock<Arc<File>>,
    },
    /// The default: stderr, which under `mpirun` is a pipe to the launcher.
    Stderr,
}

/// The access log's destination and the queue to its writer thread.
struct AccessLog {
    dest: Dest,
    queue: SyncSender<String>,
    /// The queue's end: the writer thread's, and `flush`'s at exit. Only
    /// they take it, once every interval: it is never contended.
    lines: Mutex<Receiver<String>>,
}

static ACCESS_LOG: OnceLock<AccessLog> = OnceLock::new();

/// Send access lines to `path` (appended, created if missing) instead of
/// stderr. Under `mpirun` stderr is forwarded through the launcher's
/// processes, which costs CPU on every line; a file does not.
///
/// After SIGHUP the file is opened again by its name, so that a rotated
/// log (renamed away) is followed by a new file.
pub fn to_file(path: &Path) -> io::Result<()> {
    let file = Arc::new(open(path)?);
    start(Dest::File {
        path: path.to_path_buf(),
        file: RwLock::new(file),
    })
}

/// Whether `path` can be opened for appending (created if missing): every
/// rank checks it at start, so that a bad path fails the same way on all;
/// only rank 0 then writes to it (`to_file`).
pub fn check_file(path: &Path) -> io::Result<()> {
    open(path).map(drop)
}

/// Write access lines to stderr in batches too (the default): one write
/// of up to 4 KiB for many lines instead of one per request.
pub fn to_stderr() -> io::Result<()> {
    start(Dest::Stderr)
}

/// Lines are queued and written in batches every `FLUSH_INTERVAL` by one
/// thread, which sleeps between batches so that queueing a line wakes
/// nobody: a request costs no log syscall. Only the first line after a
/// quiet interval wakes the writer, which waited for it rather than poll an
/// empty queue. A full queue makes the request write its own line: nothing
/// is dropped.
fn start(dest: Dest) -> io::Result<()> {
    let (queue, lines) = sync_channel::<String>(QUEUE_LINES);
    let log = AccessLog {
        dest,
        queue,
        lines: Mutex::new(lines),
    };
    if ACCESS_LOG.set(log).is_err() {
        return Ok(()); // already started
    }
    thread::Builder::new()
        .name("access-log".into())
        .spawn(write_batches)?;
    Ok(())
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl AccessLog {
    /// Write whole lines.
    fn write(&self, bytes: &[u8]) {
        let result = match &self.dest {
            // One write per batch; O_APPEND keeps lines from threads whole.
            Dest::File { file, .. } => {
                // Recovered when poisoned: the lock guards one `Arc`
                // swapped whole.
                let file = Arc::clone(&file.read().unwrap_or_else(|e| e.into_inner()));
                (&*file).write_all(bytes)
            }
            Dest::Stderr => write_pieces(&mut io::stderr().lock(), bytes),
        };
        if let Err(e) = result {
            log::warn!("access log: {e}");
        }
    }

    /// After SIGHUP: open the file again by its name.
    fn reopen(&self) {
        let Dest::File { path, file } = &self.dest else {
            return;
        };
        match open(path) {
            Ok(new) => {
                *file.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
                log::info!("access log reopened: {}", path.display());
            }
            Err(e) => log::warn!("cannot reopen {}: {e}", path.display()),
        }
    }
}

/// Write `bytes` (whole lines) in pieces of at most `PIPE_PIECE` that end
/// at a line's end (a longer line goes alone).
fn write_pieces(w: &mut impl io::Write, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let cut = match bytes.len() <= PIPE_PIECE {
            true => bytes.len(),
            false => match bytes[..PIPE_PIECE].iter().rposition(|&b| b == b'\n') {
                Some(at) => at + 1,
                None => bytes
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |at| at + 1),
            },
        };
        w.write_all(&bytes[..cut])?;
        bytes = &bytes[cut..];
    }
    Ok(())
}

fn write_batches() {
    let Some(log) = ACCESS_LOG.get() else {
        return;
    };
    loop {
        thread::sleep(FLUSH_INTERVAL);
        if super::signals::take_reopen() {
            log.reopen();
        }
        if log.drain() == 0 {
            log.wait_for_line();
        }
    }
}

impl AccessLog {
    /// Write the lines waiting, in batches of up to 1 MiB. Returns how
    /// many lines were written.
    fn drain(&self) -> usize {
        // Recovered when poisoned: a receiver has no state of ours.
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        self.write_waiting(&lines, None)
    }

    /// Quiet: sleep until a line comes (its sender wakes us, once) or
    /// `IDLE_WAIT` passes, and write what came. The queue stays locked
    /// meanwhile, so a `flush` at exit waits for this and loses nothing.
    fn wait_for_line(&self) {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(first) = lines.recv_timeout(IDLE_WAIT) {
            self.write_waiting(&lines, Some(first));
        }
    }

    /// Write `first` and the lines waiting on `lines`.
    fn write_waiting(&self, lines: &Receiver<String>, first: Option<String>) -> usize {
        let mut batch = Vec::with_capacity(1 << 16);
        let mut count = 0;
        let mut first = first;
        loop {
            let next = first.take().map(Ok).unwrap_or_else(|| lines.try_recv());
            let more = match next {
                Ok(line) => {
                    batch.extend_from_slice(line.as_bytes());
                    count += 1;
                    true
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => false,
            };
            if !batch.is_empty() && (!more || batch.len() >= 1 << 20) {
                self.write(&batch);
                batch.clear();
            }
            if !more {
                return count;
            }
        }
    }
}

/// Write what waits in the queue now: called before the process exits,
/// which would otherwise lose the lines of the last interval.
pub fn flush() {
    if let Some(log) = ACCESS_LOG.get() {
        log.drain();
    }
}

/// Record one request: a line queued for the access log's writer, or, if
/// none was started, at `info` on the access target of the log.
pub fn access(entry: &Entry<'_>) {
    if let Some(log) = ACCESS_LOG.get() {
        let mut line = format_entry(entry, SystemTime::now());
        line.push('\n');
        if let Err(TrySendError::Full(line) | TrySendError::Disconnected(line)) =
            log.queue.try_send(line)
        {
            log.write(line.as_bytes());
        }
    } else if log::log_enabled!(target: TARGET, log::Level::Info) {
        log::info!(target: TARGET, "{}", format_entry(entry, SystemTime::now()));
    }
}

/// The line itself (pure, for tests). Built with `push_str` into one
/// buffer: this runs for every request.
pub fn format_entry(e: &Entry<'_>, now: SystemTime) -> String {
    let mut out = String::with_capacity(160);
    match e.peer.ip() {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_num(&mut out, u64::from(*octet));
            }
        }
        ip => {
            let _ = write!(out, "{ip}");
        }
    }
    out.push_str(" - - [");
    out.push_str(std::str::from_utf8(&clf_date_bytes(unix_secs(now))).unwrap_or("-"));
    out.push_str("] \"");
    match e.request_line {
        Some(line) => escape_into(&mut out, line.as_bytes()),
        None => out.push('-'),
    }
    out.push_str("\" ");
    push_num(&mut out, u64::from(e.status));
    out.push(' ');
    push_num(&mut out, e.bytes);
    out.push_str(" \"");
    escape_into(&mut out, e.referer.unwrap_or(b"-"));
    out.push_str("\" \"");
    escape_into(&mut out, e.user_agent.unwrap_or(b"-"));
    // Seconds with six decimals, from whole microseconds.
    let micros = e.duration.as_micros();
    out.push_str("\" ");
    push_num(&mut out, (micros / 1_000_000) as u64);
    out.push('.');
    let frac = (micros % 1_000_000) as u64;
    for div in [100_000, 10_000, 1_000, 100, 10, 1] {
        out.push((b'0' + (frac / div % 10) as u8) as char);
    }
    if let Some(id) = e.id {
        out.push_str(" id=");
        escape_into(&mut out, id.as_bytes());
    }
    out.push_str(" rank=");
    push_num(&mut out, e.rank as u64);
    out
}

fn push_num(out: &mut String, n: u64) {
    let (digits, at) = crate::http::response::decimal(n);
    out.extend(digits[at..].iter().map(|&d| d as char));
}

/// Append quote-safe, control-free text: `"`, `\` and non-printable bytes
/// as `\xHH`.
/// Bytes of one logged field (target, Referer, User-Agent) kept; the rest
/// is marked `...`, so a line stays small whatever the client sends.
const MAX_FIELD_BYTES: usize = 1024;

fn escape_into(out: &mut String, v: &[u8]) {
    let (v, cut) = match v.get(..MAX_FIELD_BYTES) {
        Some(head) if v.len() > MAX_FIELD_BYTES => (head, true),
        _ => (v, false),
    };
    for &b in v {
        match b {
            b'"' | b'\\' | ..=0x1f | 0x7f.. => {
                let _ = write!(out, "\\x{b:02x}");
            }
            _ => out.push(b as char),
        }
    }
    if cut {
        out.push_str("...");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn batches_go_to_a_pipe_in_whole_lines_of_at_most_4_kib() {
        let line = |i: usize| format!("{}\n", "x".repeat(100 + i % 300));
        let batch: String = (0..200).map(line).collect();
        let mut out = Vec::new();
        struct Writes<'a>(&'a mut Vec<Vec<u8>>);
        impl io::Write for Writes<'_> {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.push(b.to_vec());
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        write_pieces(&mut Writes(&mut out), batch.as_bytes()).unwrap();
        assert!(out.len() > 1);
        for piece in &out {
            assert!(piece.len() <= PIPE_PIECE && piece.ends_with(b"\n"));
        }
        assert_eq!(out.concat(), batch.as_bytes());
        // A line longer than a piece goes alone, whole.
        let long = format!("{}\nshort\n", "y".repeat(5000));
        let mut out = Vec::new();
        write_pieces(&mut Writes(&mut out), long.as_bytes()).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), 5001);
    }

    #[test]
    fn long_fields_are_cut() {
        let ua = vec![b'"'; 5000];
        let e = Entry {
            peer: "127.0.0.1:5000".parse().unwrap(),
            request_line: None,
            status: 400,
            bytes: 0,
            referer: None,
            user_agent: Some(&ua),
            duration: Duration::ZERO,
            id: None,
            rank: 0,
        };
        let line = format_entry(&e, UNIX_EPOCH);
        assert!(line.len() < 4 * MAX_FIELD_BYTES + 200, "{}", line.len());
        assert!(line.contains("\\x22...\""));
    }

    #[test]
    fn combined_format_with_rank() {
        let e = Entry {
            peer: "127.0.0.1:5000".parse().unwrap(),
            request_line: Some("GET /a\"b HTTP/1.1"),
            status: 200,
            bytes: 12,
            referer: None,
            user_agent: Some(b"curl/8\x01"),
            duration: Duration::from_micros(1500),
            id: Some("r-1"),
            rank: 0,
        };
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            format_entry(&e, now),
            "127.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"GET /a\\x22b HTTP/1.1\" 200 12 \"-\" \"curl/8\\x01\" 0.001500 id=r-1 rank=0"
        );
    }
}
