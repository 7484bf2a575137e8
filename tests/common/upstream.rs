//! Test upstreams for the proxy: a configurable HTTP/1.1 origin server whose
//! behaviour is picked by the request path, and a raw TCP echo server for
//! CONNECT tests, both on std only.
//!
//! Routes of [`Upstream`] (query ignored except where noted; every response
//! carries `X-Upstream: PORT`):
//!
//! | path                  | answer |
//! |-----------------------|--------|
//! | `/echo...`            | 200 text: `METHOD TARGET\n`, `name: value\n` per header, `\n`, then the body |
//! | `/big?n=N`            | 200, Content-Length N, [`pattern_fill`] bytes 0..N in 64 KiB writes |
//! | `/big-chunked?n=N`    | same bytes, chunked in 64 KiB chunks |
//! | `/big-close?n=N`      | same bytes, close-delimited (`Connection: close`, socket closed after) |
//! | `/upload`             | 200 `len=N fnv=HEX` (HEX = `{:016x}` of FNV-1a 64 of the body) |
//! | `/slow?ms=N`          | sleeps N ms, then 200 `slow` |
//! | `/silent`             | reads the request, never answers (holds the socket up to 120 s) |
//! | `/status/CODE`        | CODE with body `status CODE` (none for 1xx/204/304; 304 has `ETag: "v1"`) |
//! | `/broken`             | writes `garbage\r\n\r\n` and closes |
//! | `/truncated`          | Content-Length 100, 10 bytes, close |
//! | `/hop`                | 200 `hop` with hop-by-hop response headers |
//! | `/continue[?early]`   | 100 Continue if asked, reads the body, 103 Early Hints if `?early`, then like `/upload` |
//! | anything else         | 200 `ok METHOD PATH` |
//!
//! HEAD gets the same head as GET (Content-Length included) and no body.
//! HTTP/1.0 requests and `Connection: close` close the connection after the
//! response; otherwise it is kept alive. An `/echo` body over 1 MiB is
//! spooled to a temporary file and sent back once fully read (so a client
//! that writes the whole request before reading cannot deadlock). A
//! `/status/1xx` answer is followed by closing the connection, as no final
//! response will come.
#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Largest request head accepted (request line + headers + blank line).
const MAX_HEAD: u64 = 64 * 1024;
/// Echo bodies above this size are spooled to a temporary file, not memory.
const ECHO_MEM_LIMIT: u64 = 1024 * 1024;
/// Piece size for big bodies (writes and chunks).
const PIECE: usize = 64 * 1024;
/// How long `/silent` (and an idle keep-alive connection) holds the socket.
const HOLD: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------- FNV-1a 64

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Incremental FNV-1a 64.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(FNV_OFFSET)
    }
    pub fn update(&mut self, data: &[u8]) {
        let mut h = self.0;
        for &b in data {
            h ^= b as u64;
            h = h.wrapping_mul(FNV_PRIME);
        }
        self.0 = h;
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv::new()
    }
}

/// FNV-1a 64 of `data`.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut f = Fnv::new();
    f.update(data);
    f.finish()
}

// ---------------------------------------------------------------- pattern

/// The pattern repeats with this period: `i * 7` mod 256 has period 256 and
/// `i / 251` mod 256 has period 251 * 256, a multiple of 256.
const PATTERN_PERIOD: usize = 251 * 256;

/// Byte `i` of the big-body pattern: `(i * 7 + i / 251) as u8` (wrapping).
pub fn pattern_byte(i: u64) -> u8 {
    i.wrapping_mul(7).wrapping_add(i / 251) as u8
}

fn pattern_table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| (0..PATTERN_PERIOD as u64).map(pattern_byte).collect())
}

/// Fill `buf` with pattern bytes `offset .. offset + buf.len()`, where byte
/// `i` is `(i * 7 + i / 251) as u8` (see [`pattern_byte`]).
pub fn pattern_fill(offset: u64, buf: &mut [u8]) {
    let table = pattern_table();
    let mut pos = (offset % PATTERN_PERIOD as u64) as usize;
    let mut done = 0;
    while done < buf.len() {
        let n = (buf.len() - done).min(PATTERN_PERIOD - pos);
        buf[done..done + n].copy_from_slice(&table[pos..pos + n]);
        done += n;
        pos = 0;
    }
}

/// Check `data` against pattern bytes `offset ..`; the index (relative to
/// `data`) of the first mismatch, if any.
pub fn pattern_mismatch(offset: u64, data: &[u8]) -> Option<usize> {
    let mut want = vec![0u8; data.len().min(PIECE)];
    let mut done = 0;
    while done < data.len() {
        let n = (data.len() - done).min(want.len());
        pattern_fill(offset + done as u64, &mut want[..n]);
        if let Some(i) = (0..n).find(|&i| data[done + i] != want[i]) {
            return Some(done + i);
        }
        done += n;
    }
    None
}

// ---------------------------------------------------------------- Seen

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// The request target exactly as sent (path and query).
    pub target: String,
    /// `HTTP/1.1`, `HTTP/1.0`, ...
    pub version: String,
    /// Header fields in arrival order, names as sent, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Decoded body length (after de-chunking).
    pub body_len: u64,
    /// FNV-1a 64 of the decoded body.
    pub body_fnv: u64,
    /// The body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// 0-based index of the TCP connection it arrived on (accept order).
    pub conn_id: usize,
}

impl Seen {
    /// Value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Values of every header called `name` (case-insensitive), in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// The target's path (no query; authority stripped from absolute form).
    pub fn path(&self) -> &str {
        split_target(&self.target).0
    }
}

// ---------------------------------------------------------------- Upstream

/// A configurable HTTP/1.1 origin server on 127.0.0.1, port chosen by the OS.
pub struct Upstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Seen>>>,
    conns: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    /// Every accepted connection, to cut them all in `kill`.
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Upstream {
    /// Bind 127.0.0.1:0, serve on a background thread (one thread per
    /// connection), keep-alive HTTP/1.1.
    pub fn start() -> Upstream {
        Upstream::start_on(0)
    }

    /// The same on a given port (0: any), to bring a killed one back.
    pub fn start_on(port: u16) -> Upstream {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind upstream");
        let addr = listener.local_addr().expect("upstream local_addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let acceptor = {
            let (requests, conns, stopping) = (requests.clone(), conns.clone(), stopping.clone());
            let open = open.clone();
            thread::Builder::new()
                .name(format!("upstream-{}", addr.port()))
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stopping.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        if let Ok(clone) = stream.try_clone() {
                            lock(&open).push(clone);
                        }
                        let conn_id = conns.fetch_add(1, Ordering::SeqCst);
                        let requests = requests.clone();
                        let port = addr.port();
                        let _ = thread::Builder::new()
                            .name(format!("upstream-{port}-c{conn_id}"))
                            .spawn(move || serve_conn(stream, port, conn_id, &requests));
                    }
                    // The listener is dropped (closed) here.
                })
                .expect("spawn upstream acceptor")
        };
        Upstream {
            addr,
            requests,
            conns,
            stopping,
            acceptor: Some(acceptor),
            open,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:PORT`
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far (head and body fully read), in arrival
    /// order. A request is recorded before its response is written.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.requests).clone()
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Stop accepting and close the listener (drop also does this);
    /// connections in progress may finish.
    pub fn stop(self) {
        drop(self)
    }

    /// Die as a crashed server would: stop accepting and cut every open
    /// connection, whatever it was doing.
    pub fn kill(self) {
        for conn in lock(&self.open).drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
        drop(self)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocked accept() so the acceptor sees the flag and exits.
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).is_ok() {
            if let Some(t) = self.acceptor.take() {
                let _ = t.join();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------- request head

struct Head {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Does any header `name` carry comma-separated `token`?
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// HTTP/1.0 always closes; otherwise `Connection: close` does.
    fn wants_close(&self) -> bool {
        !self.version.eq_ignore_ascii_case("HTTP/1.1") || self.has_token("connection", "close")
    }

    fn framing(&self) -> Result<Framing, ()> {
        let te: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(last) = te.last() {
            return if last.eq_ignore_ascii_case("chunked") {
                Ok(Framing::Chunked)
            } else {
                Err(())
            };
        }
        let mut len = None;
        for (_, v) in self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            for part in v.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(());
                }
                let n: u64 = part.parse().map_err(|_| ())?;
                if len.is_some_and(|l| l != n) {
                    return Err(());
                }
                len = Some(n);
            }
        }
        Ok(Framing::Length(len.unwrap_or(0)))
    }
}

enum HeadError {
    /// Connection closed or failed mid-head: just drop it.
    Io,
    /// Malformed: answer 400.
    Bad,
    /// Over [`MAX_HEAD`]: answer 431.
    TooLarge,
}

/// Read one line (through `\n`) of at most `limit` bytes; `Ok(None)` on EOF
/// before any byte. The line is returned without its CRLF (or bare LF).
fn read_line<R: BufRead>(r: &mut R, limit: u64) -> Result<Option<Vec<u8>>, HeadError> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(limit)
        .read_until(b'\n', &mut line)
        .map_err(|_| HeadError::Io)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if n as u64 >= limit {
            HeadError::TooLarge
        } else {
            HeadError::Io
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// Read a request head; `Ok(None)` when the peer closed between requests.
fn read_head<R: BufRead>(r: &mut R) -> Result<Option<Head>, HeadError> {
    let mut budget = MAX_HEAD;
    fn take<R: BufRead>(r: &mut R, budget: &mut u64) -> Result<Option<Vec<u8>>, HeadError> {
        if *budget == 0 {
            return Err(HeadError::TooLarge);
        }
        let line = read_line(r, *budget)?;
        if let Some(l) = &line {
            *budget = budget.saturating_sub(l.len() as u64 + 2);
        }
        Ok(line)
    }
    // Skip empty lines before the request line (RFC 9112 section 2.2).
    let request_line = loop {
        match take(r, &mut budget)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => break String::from_utf8_lossy(&l).into_owned(),
        }
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Bad);
    };
    if method.is_empty() || target.is_empty() || !version.starts_with("HTTP/") {
        return Err(HeadError::Bad);
    }
    let mut headers = Vec::new();
    loop {
        let Some(line) = take(r, &mut budget)? else {
            return Err(HeadError::Io);
        };
        if line.is_empty() {
            break;
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let Some((name, value)) = line.split_once(':') else {
            return Err(HeadError::Bad);
        };
        if name.is_empty() || name.bytes().any(|b| b == b' ' || b == b'\t') {
            return Err(HeadError::Bad); // also rejects obs-fold continuation lines
        }
        headers.push((
            name.to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    Ok(Some(Head {
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
    }))
}

/// `(path, query)` of a request target; absolute form loses scheme and
/// authority.
fn split_target(target: &str) -> (&str, &str) {
    let mut t = target;
    if let Some(rest) = t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
    {
        t = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    match t.split_once('?') {
        Some((p, q)) => (p, q),
        None => (t, ""),
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| match kv.split_once('=') {
        Some((k, v)) if k == key => Some(v),
        _ => None,
    })
}

// ---------------------------------------------------------------- request body

#[derive(Clone, Copy)]
enum Framing {
    Length(u64),
    Chunked,
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Read exactly `n` body bytes, handing them to `sink` piece by piece.
fn read_exact_to<R: Read>(
    r: &mut R,
    mut n: u64,
    buf: &mut [u8],
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    while n > 0 {
        let want = (buf.len() as u64).min(n) as usize;
        let got = r.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        sink(&buf[..got])?;
        n -= got as u64;
    }
    Ok(())
}

/// Read a whole request body, streaming the decoded bytes into `sink`.
fn read_body<R: BufRead>(
    r: &mut R,
    framing: Framing,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; PIECE];
    match framing {
        Framing::Length(n) => read_exact_to(r, n, &mut buf, sink),
        Framing::Chunked => {
            let line = |r: &mut R| -> io::Result<Vec<u8>> {
                match read_line(r, 4096) {
                    Ok(Some(l)) => Ok(l),
                    Ok(None) => Err(io::ErrorKind::UnexpectedEof.into()),
                    Err(_) => Err(invalid("bad chunk line")),
                }
            };
            loop {
                let size_line = line(r)?;
                let size_line = String::from_utf8_lossy(&size_line);
                let size = size_line
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim_matches([' ', '\t']);
                if size.is_empty() || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid("bad chunk size"));
                }
                let size =
                    u64::from_str_radix(size, 16).map_err(|_| invalid("chunk size overflow"))?;
                if size == 0 {
                    // Trailer section: skip fields up to the empty line.
                    let mut budget = MAX_HEAD;
                    loop {
                        let l = line(r)?;
                        if l.is_empty() {
                            return Ok(());
                        }
                        budget = budget
                            .checked_sub(l.len() as u64 + 2)
                            .ok_or_else(|| invalid("trailers too big"))?;
                    }
                }
                read_exact_to(r, size, &mut buf, sink)?;
                if !line(r)?.is_empty() {
                    return Err(invalid("missing CRLF after chunk data"));
                }
            }
        }
    }
}

/// Where `/echo` keeps the request body: memory up to [`ECHO_MEM_LIMIT`],
/// then a temporary file (removed on drop), so the reply can carry a
/// Content-Length and is only sent once the request is fully read.
struct Spool {
    mem: Vec<u8>,
    file: Option<(File, PathBuf)>,
    len: u64,
    port: u16,
}

impl Spool {
    fn new(framing: Framing, port: u16) -> io::Result<Spool> {
        let mut s = Spool {
            mem: Vec::new(),
            file: None,
            len: 0,
            port,
        };
        if let Framing::Length(n) = framing {
            if n > ECHO_MEM_LIMIT {
                s.spill_to_file()?;
            }
        }
        Ok(s)
    }

    fn spill_to_file(&mut self) -> io::Result<()> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "mpiweb-upstream-{}-{}-{}.body",
            std::process::id(),
            self.port,
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mem = std::mem::take(&mut self.mem);
        let res = f.write_all(&mem);
        self.file = Some((f, path));
        res
    }

    fn push(&mut self, data: &[u8]) -> io::Result<()> {
        self.len += data.len() as u64;
        if self.file.is_none() && self.mem.len() + data.len() > ECHO_MEM_LIMIT as usize {
            self.spill_to_file()?;
        }
        match &mut self.file {
            Some((f, _)) => f.write_all(data),
            None => {
                self.mem.extend_from_slice(data);
                Ok(())
            }
        }
    }

    fn send(&mut self, w: &mut TcpStream) -> io::Result<()> {
        match &mut self.file {
            None => w.write_all(&self.mem),
            Some((f, _)) => {
                f.seek(SeekFrom::Start(0))?;
                let sent = io::copy(&mut Read::take(&mut *f, self.len), w)?;
                if sent != self.len {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(())
            }
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some((_, path)) = self.file.take() {
            let _ = fs::remove_file(path);
        }
    }
}

// ---------------------------------------------------------------- routes

#[derive(Clone, Copy, PartialEq)]
enum BigMode {
    Length,
    Chunked,
    Close,
}

enum Route {
    Echo,
    Big(u64, BigMode),
    Upload,
    Slow(u64),
    Silent,
    Status(u16),
    Broken,
    Truncated,
    Hop,
    Continue { early: bool },
    BadQuery(&'static str),
    Default,
}

fn route(path: &str, query: &str) -> Route {
    let n = || query_param(query, "n").unwrap_or("0").parse::<u64>();
    let big = |mode| match n() {
        Ok(n) => Route::Big(n, mode),
        Err(_) => Route::BadQuery("bad n"),
    };
    match path {
        p if p.starts_with("/echo") => Route::Echo,
        "/big" => big(BigMode::Length),
        "/big-chunked" => big(BigMode::Chunked),
        "/big-close" => big(BigMode::Close),
        "/upload" => Route::Upload,
        "/slow" => match query_param(query, "ms").unwrap_or("0").parse() {
            Ok(ms) => Route::Slow(ms),
            Err(_) => Route::BadQuery("bad ms"),
        },
        "/silent" => Route::Silent,
        "/broken" => Route::Broken,
        "/truncated" => Route::Truncated,
        "/hop" => Route::Hop,
        "/continue" => Route::Continue {
            early: query == "early",
        },
        p => match p.strip_prefix("/status/") {
            Some(code) => match code.parse::<u16>() {
                Ok(c) if (100..=999).contains(&c) && code.len() == 3 => Route::Status(c),
                _ => Route::BadQuery("bad status code"),
            },
            None => Route::Default,
        },
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Whatever",
    }
}

/// Response body kinds.
enum Body {
    /// No body and no Content-Length (1xx, 204, 304).
    None,
    /// Content-Length framed bytes.
    Bytes(Vec<u8>),
    /// `/echo`: text prefix then the spooled request body, Content-Length framed.
    Echo(Vec<u8>, Spool),
    /// Pattern bytes 0..n.
    Pattern(u64, BigMode),
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl Reply {
    fn text(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", "text/plain".to_string())],
            body: Body::Bytes(body.into()),
        }
    }
}

fn head_bytes(status: u16, port: u16, headers: &[(&str, String)], close: bool) -> Vec<u8> {
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nX-Upstream: {port}\r\n",
        reason(status)
    );
    for (n, v) in headers {
        h.push_str(&format!("{n}: {v}\r\n"));
    }
    if close {
        h.push_str("Connection: close\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

/// Write `reply`; the body is skipped for HEAD. `close` adds
/// `Connection: close`.
fn write_reply(
    w: &mut TcpStream,
    port: u16,
    mut reply: Reply,
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    match &reply.body {
        Body::None => {}
        Body::Bytes(b) => reply.headers.push(("Content-Length", b.len().to_string())),
        Body::Echo(prefix, spool) => reply.headers.push((
            "Content-Length",
            (prefix.len() as u64 + spool.len).to_string(),
        )),
        Body::Pattern(n, mode) => {
            reply
                .headers
                .push(("Content-Type", "application/octet-stream".to_string()));
            match mode {
                BigMode::Length => reply.headers.push(("Content-Length", n.to_string())),
                BigMode::Chunked => reply
                    .headers
                    .push(("Transfer-Encoding", "chunked".to_string())),
                BigMode::Close => {}
            }
        }
    }
    let mut out = head_bytes(reply.status, port, &reply.headers, close);
    if head_only {
        return w.write_all(&out);
    }
    match &mut reply.body {
        Body::None => w.write_all(&out),
        Body::Bytes(b) => {
            out.extend_from_slice(b);
            w.write_all(&out)
        }
        Body::Echo(prefix, spool) => {
            out.extend_from_slice(prefix);
            w.write_all(&out)?;
            spool.send(w)
        }
        Body::Pattern(n, mode) => {
            w.write_all(&out)?;
            let chunked = *mode == BigMode::Chunked;
            let mut buf = vec![0u8; PIECE + 16];
            let mut off = 0u64;
            while off < *n {
                let len = (*n - off).min(PIECE as u64) as usize;
                let piece = if chunked {
                    let size = format!("{len:x}\r\n");
                    let s = size.len();
                    buf[..s].copy_from_slice(size.as_bytes());
                    pattern_fill(off, &mut buf[s..s + len]);
                    buf[s + len..s + len + 2].copy_from_slice(b"\r\n");
                    &buf[..s + len + 2]
                } else {
                    pattern_fill(off, &mut buf[..len]);
                    &buf[..len]
                };
                w.write_all(piece)?;
                off += len as u64;
            }
            if chunked {
                w.write_all(b"0\r\n\r\n")?;
            }
            Ok(())
        }
    }
}

/// Close politely: send FIN first, so data already written is not lost to
/// a reset.
fn finish(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
}

// ---------------------------------------------------------------- connection

fn serve_conn(stream: TcpStream, port: u16, conn_id: usize, requests: &Mutex<Vec<Seen>>) {
    let _ = stream.set_nodelay(true);
    // An idle or stuck peer cannot pin the thread forever.
    let _ = stream.set_read_timeout(Some(HOLD));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(PIECE, read_half);
    let mut w = stream;

    loop {
        let head = match read_head(&mut reader) {
            Ok(Some(h)) => h,
            Ok(None) | Err(HeadError::Io) => return,
            Err(HeadError::Bad) => {
                let _ = write_reply(
                    &mut w,
                    port,
                    Reply::text(400, "bad request head"),
                    false,
                    true,
                );
                return finish(&w);
            }
            Err(HeadError::TooLarge) => {
                let _ = write_reply(
                    &mut w,
                    port,
                    Reply::text(431, "request head too large"),
                    false,
                    true,
                );
                return finish(&w);
            }
        };
        let close = head.wants_close();
        let head_only = head.method.eq_ignore_ascii_case("HEAD");
        let Ok(framing) = head.framing() else {
            let _ = write_reply(
                &mut w,
                port,
                Reply::text(400, "bad body framing"),
                false,
                true,
            );
            return finish(&w);
        };
        let (path, query) = split_target(&head.target);
        let route = route(path, query);

        if let Route::Continue { .. } = route {
            if head.has_token("expect", "100-continue")
                && w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
            {
                return;
            }
        }

        // Body: length and FNV always; bytes kept only for /echo.
        let mut spool = match route {
            Route::Echo => match Spool::new(framing, port) {
                Ok(s) => Some(s),
                Err(_) => return,
            },
            _ => None,
        };
        let mut fnv = Fnv::new();
        let mut body_len = 0u64;
        let read = read_body(&mut reader, framing, &mut |d| {
            fnv.update(d);
            body_len += d.len() as u64;
            match spool.as_mut() {
                Some(s) => s.push(d),
                None => Ok(()),
            }
        });
        if read.is_err() {
            return finish(&w);
        }
        let (body_fnv, chunked) = (fnv.finish(), matches!(framing, Framing::Chunked));
        let path = path.to_string();

        let reply = match route {
            Route::Echo => {
                let mut prefix = format!("{} {}\n", head.method, head.target);
                for (n, v) in &head.headers {
                    prefix.push_str(&format!("{n}: {v}\n"));
                }
                prefix.push('\n');
                let Some(spool) = spool.take() else { return };
                Some(Reply {
                    status: 200,
                    headers: vec![("Content-Type", "text/plain".to_string())],
                    body: Body::Echo(prefix.into_bytes(), spool),
                })
            }
            Route::Big(n, mode) => Some(Reply {
                status: 200,
                headers: Vec::new(),
                body: Body::Pattern(n, mode),
            }),
            Route::Upload => Some(Reply::text(
                200,
                format!("len={body_len} fnv={body_fnv:016x}"),
            )),
            Route::Slow(ms) => {
                thread::sleep(Duration::from_millis(ms));
                Some(Reply::text(200, "slow"))
            }
            Route::Status(code) => Some(match code {
                100..=199 | 204 => Reply {
                    status: code,
                    headers: Vec::new(),
                    body: Body::None,
                },
                304 => Reply {
                    status: 304,
                    headers: vec![("ETag", "\"v1\"".to_string())],
                    body: Body::None,
                },
                _ => Reply::text(code, format!("status {code}")),
            }),
            Route::Hop => {
                let mut r = Reply::text(200, "hop");
                r.headers.extend([
                    ("Connection", "X-Private, keep-alive".to_string()),
                    ("X-Private", "secret".to_string()),
                    ("Keep-Alive", "timeout=5".to_string()),
                    ("Proxy-Authenticate", "Basic".to_string()),
                    ("Trailer", "X-T".to_string()),
                    ("Upgrade", "h2c".to_string()),
                ]);
                Some(r)
            }
            Route::Continue { .. } => Some(Reply::text(
                200,
                format!("len={body_len} fnv={body_fnv:016x}"),
            )),
            Route::BadQuery(why) => Some(Reply::text(400, why)),
            Route::Default => Some(Reply::text(200, format!("ok {} {}", head.method, path))),
            Route::Silent | Route::Broken | Route::Truncated => None,
        };

        lock(requests).push(Seen {
            method: head.method,
            target: head.target,
            version: head.version,
            headers: head.headers,
            body_len,
            body_fnv,
            chunked,
            conn_id,
        });

        let Some(reply) = reply else {
            match route {
                Route::Silent => {
                    // Never answer; hold the socket until the peer closes or HOLD passes.
                    let deadline = Instant::now() + HOLD;
                    let mut sink = [0u8; 4096];
                    loop {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() || reader.get_ref().set_read_timeout(Some(left)).is_err()
                        {
                            break;
                        }
                        match reader.read(&mut sink) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                }
                Route::Broken => {
                    let _ = w.write_all(b"garbage\r\n\r\n");
                }
                Route::Truncated => {
                    let mut out =
                        head_bytes(200, port, &[("Content-Length", "100".to_string())], false);
                    out.extend_from_slice(b"0123456789");
                    let _ = w.write_all(&out);
                }
                _ => {}
            }
            return finish(&w);
        };

        let close = close
            || matches!(reply.body, Body::Pattern(_, BigMode::Close))
            || (100..200).contains(&reply.status);
        if let Route::Continue { early: true } = route {
            if w.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n")
                .is_err()
            {
                return;
            }
        }
        if write_reply(&mut w, port, reply, head_only, close).is_err() {
            return;
        }
        if close {
            return finish(&w);
        }
    }
}

// ---------------------------------------------------------------- EchoTcp

/// Raw TCP echo server for CONNECT tests: every connection gets back each
/// byte it sends; at EOF the write side is shut down.
pub struct EchoTcp {
    pub addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl EchoTcp {
    pub fn start() -> EchoTcp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo");
        let addr = listener.local_addr().expect("echo local_addr");
        let conns = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (conns, stopping) = (conns.clone(), stopping.clone());
            thread::Builder::new()
                .name(format!("echo-{}", addr.port()))
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stopping.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(mut w) = stream else { continue };
                        conns.fetch_add(1, Ordering::SeqCst);
                        let _ = thread::Builder::new()
                            .name("echo-conn".into())
                            .spawn(move || {
                                let _ = w.set_nodelay(true);
                                let Ok(mut r) = w.try_clone() else { return };
                                let _ = io::copy(&mut r, &mut w);
                                let _ = w.shutdown(Shutdown::Write);
                            });
                    }
                })
                .expect("spawn echo acceptor")
        };
        EchoTcp {
            addr,
            conns,
            stopping,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:PORT`
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

impl Drop for EchoTcp {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).is_ok() {
            if let Some(t) = self.acceptor.take() {
                let _ = t.join();
            }
        }
    }
}
