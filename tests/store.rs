//! The replicated document store (issue 5) under `mpirun -np 4` (rank 0
//! and three worker replicas): PUT/GET/DELETE/list round trips, concurrent
//! writers to one path, a replica stalled with SIGSTOP during a stream of
//! PUTs, a whole-cluster restart, a wiped replica rebuilt, traversal
//! attempts, the token rule, and one process alone. Besides HTTP, the tests
//! read the replicas' files (`DIR/rank-N/docs/*.doc`) to see where each
//! document is kept.

mod common;

use common::{descendants, eventually, mpiweb_pids, read_to_close, wait_for, Resp, Server, BIN};
use mpiweb::hash::rendezvous_score;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Ranks of a 4-process job that keep replicas.
const WORKERS: [usize; 3] = [1, 2, 3];
/// Copies of each document (the default of `--replicas`).
const REPLICAS: usize = 2;
/// How long a settled state (repairs, rebuilds) may take to be reached:
/// generous, as a copy a pass could not finish waits for the periodic pass
/// (every 30 s); settling normally takes a second or two.
const SETTLE: Duration = Duration::from_secs(90);

/// One store cluster at a time: four ranks per test on a two-core machine
/// are plenty, and a heartbeat missed under load would move documents.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary directory holding a docroot (`root/`) and the store's data
/// directory, both of which the tests inspect.
struct Place {
    dir: tempfile::TempDir,
    data_rel: &'static str,
}

impl Place {
    fn new() -> Place {
        Place::with_data("data")
    }

    /// `data_rel` is where `--data` points, relative to the temp dir.
    fn with_data(data_rel: &'static str) -> Place {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("hello.txt"), b"hello world\n").unwrap();
        fs::create_dir_all(dir.path().join(data_rel)).unwrap();
        Place { dir, data_rel }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join(self.data_rel)
    }

    fn data_arg(&self) -> String {
        self.data().to_string_lossy().into_owned()
    }

    /// `mpirun -np 4 mpiweb --store /store/ --data DIR EXTRA... root`, once
    /// the store says it is ready.
    fn cluster(&self, extra: &[&str]) -> Server {
        let data = self.data_arg();
        let mut args = vec!["--store", "/store/", "--data", data.as_str()];
        args.extend_from_slice(extra);
        let srv = Server::start_mpi(4, &self.root(), &args);
        wait_ready(&srv);
        srv
    }
}

/// Wait for rank 0's `store: ready` line.
fn wait_ready(srv: &Server) -> String {
    let mut line = None;
    let found = eventually(Duration::from_secs(60), || {
        line = srv
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("store: ready"))
            .cloned();
        line.is_some()
    });
    assert!(found, "no `store: ready` line:\n{}", srv.log_text());
    line.unwrap()
}

/// Log lines from index `from` on that satisfy `pred`, polled up to `limit`.
fn wait_log_since(srv: &Server, from: usize, limit: Duration, pred: impl Fn(&str) -> bool) -> bool {
    eventually(limit, || {
        srv.log.lock().unwrap().iter().skip(from).any(|l| pred(l))
    })
}

fn log_len(srv: &Server) -> usize {
    srv.log.lock().unwrap().len()
}

/// The PID of each replica rank, from `store replica rank N (pid P) ...`.
fn replica_pids(srv: &Server) -> BTreeMap<usize, u32> {
    let mut pids = BTreeMap::new();
    let found = eventually(Duration::from_secs(60), || {
        for line in srv.log.lock().unwrap().iter() {
            let Some(rest) = line.split("store replica rank ").nth(1) else {
                continue;
            };
            let rank = rest.split_whitespace().next().and_then(|r| r.parse().ok());
            let pid = rest
                .split("(pid ")
                .nth(1)
                .and_then(|s| s.split(')').next())
                .and_then(|p| p.parse().ok());
            if let (Some(rank), Some(pid)) = (rank, pid) {
                pids.insert(rank, pid);
            }
        }
        pids.len() == WORKERS.len()
    });
    assert!(
        found,
        "replica lines for {pids:?} only:\n{}",
        srv.log_text()
    );
    pids
}

// ---------------------------------------------------------------- requests

/// One request on its own connection (`Connection: close`); `body` adds a
/// Content-Length.
fn send(srv: &Server, method: &str, path: &str, headers: &str, body: Option<&[u8]>) -> Resp {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{headers}");
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut req = head.into_bytes();
    if let Some(b) = body {
        req.extend_from_slice(b);
    }
    srv.one(&req)
}

fn put(srv: &Server, path: &str, ctype: Option<&str>, body: &[u8]) -> Resp {
    let headers = ctype.map_or(String::new(), |t| format!("Content-Type: {t}\r\n"));
    send(srv, "PUT", path, &headers, Some(body))
}

fn get(srv: &Server, path: &str) -> Resp {
    send(srv, "GET", path, "", None)
}

fn delete(srv: &Server, path: &str) -> Resp {
    send(srv, "DELETE", path, "", None)
}

/// The version in a response's `ETag: "<hex>"`.
fn version(r: &Resp) -> u64 {
    let etag = r.header("etag").unwrap_or_else(|| panic!("no ETag: {r:?}"));
    let hex = etag
        .strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .unwrap_or_else(|| panic!("ETag {etag} is not a quoted strong tag"));
    u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("ETag {etag} is not hex"))
}

/// A PUT that must create: 201, Location, ETag. Returns the version.
fn create(srv: &Server, path: &str, ctype: Option<&str>, body: &[u8]) -> u64 {
    let r = put(srv, path, ctype, body);
    assert_eq!(r.status, 201, "PUT {path}: {}", r.text());
    assert_eq!(r.header("location"), Some(path), "PUT {path}");
    version(&r)
}

/// A GET that must find `body`; returns the response.
fn read_back(srv: &Server, path: &str, body: &[u8]) -> Resp {
    let r = get(srv, path);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    assert!(
        r.body == body,
        "GET {path}: {} bytes, not the {} stored ({:?}...)",
        r.body.len(),
        body.len(),
        String::from_utf8_lossy(&r.body[..r.body.len().min(60)])
    );
    r
}

/// Send a request head and `body_len` more bytes of body (framed by
/// `chunked` or not) from another thread, while this one reads the answer:
/// a server that refuses early must not deadlock the test.
fn oversized(srv: &Server, head: String, body_len: usize, chunked: bool) -> Resp {
    let mut s = srv.connect();
    let mut w = s.try_clone().expect("clone socket");
    w.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = thread::spawn(move || {
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        let piece = vec![b'z'; 64 * 1024];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(piece.len());
            let sent = if chunked {
                w.write_all(format!("{n:x}\r\n").as_bytes())
                    .and_then(|_| w.write_all(&piece[..n]))
                    .and_then(|_| w.write_all(b"\r\n"))
            } else {
                w.write_all(&piece[..n])
            };
            if sent.is_err() {
                return;
            }
            left -= n;
        }
        if chunked {
            let _ = w.write_all(b"0\r\n\r\n");
        }
    });
    let out = read_to_close(&mut s);
    let _ = writer.join();
    Resp::parse(&out, false)
        .unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&out)))
        .0
}

/// The number after `"count":` in a JSON listing.
fn json_count(listing: &str) -> Option<u64> {
    let rest = listing.split("\"count\"").nth(1)?;
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Deterministic bytes of every value (xorshift).
fn binary(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

// ----------------------------------------------------------------- on disk

/// One `.doc` file of one replica.
#[derive(Debug, Clone)]
struct DocFile {
    rank: usize,
    file: PathBuf,
    path: String,
    version: u64,
    ctype: String,
    deleted: bool,
    body: Vec<u8>,
}

/// Parse `file`; `None` if it vanished meanwhile (a repair may drop it).
fn read_doc(rank: usize, file: &Path) -> Option<DocFile> {
    let bytes = match fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{}: {e}", file.display()),
    };
    let shown = file.display();
    let end = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or_else(|| panic!("{shown}: no empty line after the header"));
    let head = std::str::from_utf8(&bytes[..end])
        .unwrap_or_else(|_| panic!("{shown}: header is not UTF-8"));
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("mpiweb-doc 1"), "{shown}");
    let mut fields = BTreeMap::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("{shown}: header line {line:?}"));
        fields.insert(k.to_string(), v.trim_start().to_string());
    }
    let field = |k: &str| {
        fields
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{shown}: no `{k}:` in {head:?}"))
    };
    let number = |k: &str| -> u64 {
        field(k)
            .parse()
            .unwrap_or_else(|_| panic!("{shown}: `{k}: {}` is not a number", field(k)))
    };
    let length = number("length") as usize;
    let body = bytes[end + 2..].to_vec();
    assert_eq!(body.len(), length, "{shown}: length: {length}");
    number("time");
    let deleted = match field("deleted").as_str() {
        "0" => false,
        "1" => true,
        other => panic!("{shown}: deleted: {other}"),
    };
    if deleted {
        assert_eq!(length, 0, "{shown}: a tombstone with a body");
    }
    Some(DocFile {
        rank,
        file: file.to_path_buf(),
        path: field("path"),
        version: number("version"),
        ctype: field("type"),
        deleted,
        body,
    })
}

/// Every `.doc` file under `data/rank-N/docs/`, all ranks.
fn disk(data: &Path) -> Vec<DocFile> {
    let mut out = Vec::new();
    let Ok(ranks) = fs::read_dir(data) else {
        return out;
    };
    for entry in ranks.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rank) = name.strip_prefix("rank-").and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(files) = fs::read_dir(entry.path().join("docs")) else {
            continue;
        };
        for f in files.flatten() {
            let fname = f.file_name().to_string_lossy().into_owned();
            let stem = fname.strip_suffix(".doc");
            assert!(
                stem.is_some_and(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())),
                "{}: not <32 hex digits>.doc",
                f.path().display()
            );
            if let Some(doc) = read_doc(rank, &f.path()) {
                out.push(doc);
            }
        }
    }
    out
}

/// Live (not deleted) copies by document path.
type Copies = BTreeMap<String, Vec<DocFile>>;

fn live_copies(data: &Path) -> Copies {
    let mut map = Copies::new();
    for d in disk(data).into_iter().filter(|d| !d.deleted) {
        map.entry(d.path.clone()).or_default().push(d);
    }
    for copies in map.values_mut() {
        copies.sort_by_key(|d| d.rank);
    }
    map
}

fn describe(copies: &Copies) -> String {
    copies
        .iter()
        .map(|(p, c)| {
            let at: Vec<String> = c
                .iter()
                .map(|d| format!("rank {} v{} {}B", d.rank, d.version, d.body.len()))
                .collect();
            format!("  {p}: {}", at.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The worker ranks that keep `path` in a settled cluster: the `REPLICAS`
/// best rendezvous scores of its path (the placement of src/store/, on the
/// crate's one stable placement hash).
fn home(path: &str) -> BTreeSet<usize> {
    let mut scored: Vec<(f64, usize)> = WORKERS
        .iter()
        .map(|&r| (rendezvous_score(path.as_bytes(), r as u64, 1), r))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(REPLICAS).map(|(_, r)| r).collect()
}

/// Why `copies` is not `expected` kept on exactly its `REPLICAS` home
/// ranks, each copy with the same version and the expected body; `None` if
/// it is.
fn misplaced(copies: &Copies, expected: &BTreeMap<String, Vec<u8>>) -> Option<String> {
    for path in copies.keys() {
        if !expected.contains_key(path) {
            return Some(format!("{path} is on disk but should not be"));
        }
    }
    for (path, body) in expected {
        let Some(c) = copies.get(path) else {
            return Some(format!("{path} is on no rank"));
        };
        let ranks: BTreeSet<usize> = c.iter().map(|d| d.rank).collect();
        if c.len() != REPLICAS || ranks.len() != REPLICAS {
            return Some(format!("{path} is on ranks {ranks:?} ({} files)", c.len()));
        }
        if ranks != home(path) {
            return Some(format!(
                "{path} is on ranks {ranks:?}, its home is {:?}",
                home(path)
            ));
        }
        if c.iter().any(|d| d.version != c[0].version) {
            return Some(format!("{path}: copies of different versions"));
        }
        if let Some(d) = c.iter().find(|d| &d.body != body) {
            return Some(format!(
                "{path}: rank {} holds {} bytes, not the {} written",
                d.rank,
                d.body.len(),
                body.len()
            ));
        }
    }
    None
}

/// Poll until the replicas hold exactly `expected` (see `misplaced`) and
/// `also` holds; the copies found then.
fn wait_placed(
    data: &Path,
    expected: &BTreeMap<String, Vec<u8>>,
    limit: Duration,
    also: impl Fn(&Copies) -> Result<(), String>,
) -> Copies {
    let mut last = (Copies::new(), String::new());
    let ok = eventually(limit, || {
        let copies = live_copies(data);
        let why = misplaced(&copies, expected)
            .map_or_else(|| also(&copies).err(), Some)
            .unwrap_or_default();
        let done = why.is_empty();
        last = (copies, why);
        done
    });
    assert!(
        ok,
        "not settled after {limit:?}: {}\n{}",
        last.1,
        describe(&last.0)
    );
    last.0
}

/// Paths with a live copy on `rank`.
fn on_rank(copies: &Copies, rank: usize) -> BTreeSet<String> {
    copies
        .iter()
        .filter(|(_, c)| c.iter().any(|d| d.rank == rank))
        .map(|(p, _)| p.clone())
        .collect()
}

fn no_docs_on_rank_0(data: &Path) {
    let on_0: Vec<DocFile> = disk(data).into_iter().filter(|d| d.rank == 0).collect();
    assert!(
        on_0.is_empty(),
        "rank 0 keeps documents under mpirun: {on_0:?}"
    );
}

// ------------------------------------------------------------------- tests

#[test]
fn round_trips_listing_and_refusals() {
    let _one = serial();
    let place = Place::new();
    let srv = place.cluster(&["--store-max-size", "4194304"]);
    // What the store should hold, path -> body.
    let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();

    // Create, then read in every way a static file can be read.
    let body = b"hello store\n".to_vec();
    let v1 = create(
        &srv,
        "/store/a/b.txt",
        Some("text/plain; charset=utf-8"),
        &body,
    );
    model.insert("/store/a/b.txt".into(), body.clone());
    let r = read_back(&srv, "/store/a/b.txt", &body);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(version(&r), v1);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let etag = r.header("etag").unwrap().to_string();
    let modified = r
        .header("last-modified")
        .expect("Last-Modified")
        .to_string();
    assert!(modified.ends_with(" GMT"), "{modified}");

    let h = send(&srv, "HEAD", "/store/a/b.txt", "", None);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("12"));
    assert_eq!(h.header("etag"), Some(etag.as_str()));
    assert_eq!(h.header("content-type"), Some("text/plain; charset=utf-8"));

    let cond = |headers: String| send(&srv, "GET", "/store/a/b.txt", &headers, None);
    let r = cond(format!("If-None-Match: {etag}\r\n"));
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(cond("If-None-Match: \"0\"\r\n".into()).status, 200);
    assert_eq!(
        cond(format!("If-Modified-Since: {modified}\r\n")).status,
        304
    );
    assert_eq!(cond("If-Match: \"0\"\r\n".into()).status, 412);
    assert_eq!(cond(format!("If-Match: {etag}\r\n")).status, 200);

    let r = cond("Range: bytes=0-3\r\n".into());
    assert_eq!((r.status, r.body.as_slice()), (206, &b"hell"[..]));
    assert_eq!(r.header("content-range"), Some("bytes 0-3/12"));
    let r = cond("Range: bytes=-3\r\n".into());
    assert_eq!((r.status, r.body.as_slice()), (206, &b"re\n"[..]));
    let r = cond("Range: bytes=100-200\r\n".into());
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */12"));

    // Replace: 204, a larger version, the new body and type.
    let body = b"hello again, a longer body\n".to_vec();
    let r = put(&srv, "/store/a/b.txt", Some("text/markdown"), &body);
    assert_eq!(r.status, 204, "{}", r.text());
    let v2 = version(&r);
    assert!(v2 > v1, "replaced: version {v2:x} after {v1:x}");
    model.insert("/store/a/b.txt".into(), body.clone());
    let r = read_back(&srv, "/store/a/b.txt", &body);
    assert_eq!(
        (version(&r), r.header("content-type")),
        (v2, Some("text/markdown"))
    );
    // The old ETag no longer matches.
    assert_eq!(cond(format!("If-None-Match: {etag}\r\n")).status, 200);

    // No Content-Type: application/octet-stream. No body at all: empty.
    create(&srv, "/store/a/untyped", None, b"xyz");
    model.insert("/store/a/untyped".into(), b"xyz".to_vec());
    let r = read_back(&srv, "/store/a/untyped", b"xyz");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let r = send(&srv, "PUT", "/store/empty", "", None);
    assert_eq!(r.status, 201, "{}", r.text());
    model.insert("/store/empty".into(), Vec::new());
    let r = read_back(&srv, "/store/empty", b"");
    assert_eq!(r.header("content-length"), Some("0"));

    // A chunked PUT, the chunks in separate writes.
    let mut s = srv.connect();
    s.write_all(
        b"PUT /store/chunked.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
          Content-Type: text/plain\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut chunked = Vec::new();
    for piece in [&b"first chunk\n"[..], b"second, longer chunk\n", b"3\n"] {
        s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .unwrap();
        s.write_all(piece).unwrap();
        s.write_all(b"\r\n").unwrap();
        s.flush().unwrap();
        chunked.extend_from_slice(piece);
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let out = read_to_close(&mut s);
    let (r, _) = Resp::parse(&out, false).expect("an answer to the chunked PUT");
    assert_eq!(r.status, 201, "{}", r.text());
    model.insert("/store/chunked.txt".into(), chunked.clone());
    read_back(&srv, "/store/chunked.txt", &chunked);

    // 3 MiB of every byte value, byte for byte.
    let big = binary(3 << 20, 0x5eed);
    create(&srv, "/store/big.bin", Some("application/x-test"), &big);
    model.insert("/store/big.bin".into(), big.clone());
    read_back(&srv, "/store/big.bin", &big);
    let r = send(
        &srv,
        "GET",
        "/store/big.bin",
        "Range: bytes=1048576-1048591\r\n",
        None,
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &big[1048576..1048592]));

    // Delete: 204, then 404 for GET, HEAD and a second DELETE.
    create(
        &srv,
        "/store/a/gone.txt",
        Some("text/plain"),
        b"short-lived\n",
    );
    let r = delete(&srv, "/store/a/gone.txt");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(get(&srv, "/store/a/gone.txt").status, 404);
    assert_eq!(
        send(&srv, "HEAD", "/store/a/gone.txt", "", None).status,
        404
    );
    assert_eq!(delete(&srv, "/store/a/gone.txt").status, 404);
    assert_eq!(delete(&srv, "/store/never-was").status, 404);
    assert_eq!(get(&srv, "/store/never-was").status, 404);

    // The listing: JSON by default, sorted by path, without the deleted one.
    let r = get(&srv, "/store/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        r.header("content-type")
    );
    let list = r.text();
    assert_eq!(json_count(&list), Some(model.len() as u64), "{list}");
    assert!(list.contains("\"/store/\""), "the prefix: {list}");
    let at: Vec<usize> = model
        .keys()
        .map(|p| {
            list.find(&format!("\"{p}\""))
                .unwrap_or_else(|| panic!("{p} not listed: {list}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "not sorted: {list}");
    assert!(!list.contains("gone.txt"), "{list}");
    assert!(list.contains("application/x-test"), "{list}");
    let size = format!("{}", 3 << 20);
    assert!(list.contains(&size), "the size of big.bin: {list}");
    // Under a sub-path: only what is under it.
    let r = get(&srv, "/store/a/");
    assert_eq!(r.status, 200);
    let sub = r.text();
    assert!(
        sub.contains("\"/store/a/b.txt\"") && sub.contains("\"/store/a/untyped\""),
        "{sub}"
    );
    assert!(
        !sub.contains("big.bin") && !sub.contains("chunked.txt"),
        "{sub}"
    );
    assert_eq!(json_count(&sub), Some(2), "{sub}");
    // HTML for a browser.
    let r = send(
        &srv,
        "GET",
        "/store/",
        "Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n",
        None,
    );
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        r.header("content-type")
    );
    let html = r.text();
    assert!(html.contains("<a ") && html.contains("href="), "{html}");
    for p in model.keys() {
        let name = p.rsplit('/').next().unwrap();
        assert!(html.contains(name), "{name} not in {html}");
    }

    // Refusals.
    let r = send(&srv, "POST", "/store/a/b.txt", "", Some(b"x"));
    assert_eq!(r.status, 405);
    let allow = r.header("allow").unwrap_or_default().to_string();
    for m in ["GET", "HEAD", "PUT", "DELETE"] {
        assert!(allow.contains(m), "Allow: {allow}");
    }
    assert_eq!(
        send(&srv, "PATCH", "/store/a/b.txt", "", Some(b"x")).status,
        405
    );
    for method in ["PUT", "DELETE"] {
        let body: Option<&[u8]> = (method == "PUT").then_some(b"x");
        let r = send(&srv, method, "/store/dir/", "", body);
        assert_eq!(r.status, 405, "{method} /store/dir/");
        let allow = r.header("allow").unwrap_or_default();
        assert!(
            allow.contains("GET") && !allow.contains("PUT") && !allow.contains("DELETE"),
            "{method} /store/dir/: Allow: {allow}"
        );
    }
    let r = oversized(
        &srv,
        format!(
            "PUT /store/too-big HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            (4 << 20) + 1
        ),
        (4 << 20) + 1,
        false,
    );
    assert_eq!(r.status, 413);
    let r = oversized(
        &srv,
        "PUT /store/too-big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
            .into(),
        (4 << 20) + 1,
        true,
    );
    assert_eq!(r.status, 413);
    assert_eq!(get(&srv, "/store/too-big").status, 404);
    // The server still answers, and nothing refused was stored.
    read_back(&srv, "/store/a/b.txt", &model["/store/a/b.txt"]);

    // On disk: each document on exactly two of the three workers, with the
    // version of its ETag and the type it was given.
    let copies = wait_placed(&place.data(), &model, SETTLE, |_| Ok(()));
    no_docs_on_rank_0(&place.data());
    let b = &copies["/store/a/b.txt"];
    assert!(
        b.iter()
            .all(|d| d.version == v2 && d.ctype == "text/markdown"),
        "{b:?}"
    );
    assert!(copies["/store/a/untyped"]
        .iter()
        .all(|d| d.ctype == "application/octet-stream"));
    // Together the workers hold two copies of each document, no more.
    let held: usize = WORKERS.iter().map(|&w| on_rank(&copies, w).len()).sum();
    assert_eq!(held, REPLICAS * model.len());
}

#[test]
fn concurrent_puts_to_one_path_the_largest_version_wins() {
    let _one = serial();
    let place = Place::new();
    let srv = place.cluster(&[]);
    let path = "/store/contended.txt";
    const THREADS: usize = 8;
    const EACH: usize = 10;

    // (status, version, body) of every PUT.
    let results: Vec<(u16, u64, Vec<u8>)> = thread::scope(|s| {
        let writers: Vec<_> = (0..THREADS)
            .map(|t| {
                let srv = &srv;
                s.spawn(move || {
                    (0..EACH)
                        .map(|n| {
                            let body =
                                format!("writer {t} put {n}\n").repeat(1 + (t * EACH + n) % 7);
                            let r = put(srv, path, Some("text/plain"), body.as_bytes());
                            assert!(
                                r.status == 201 || r.status == 204,
                                "writer {t} put {n}: {} {}",
                                r.status,
                                r.text()
                            );
                            (r.status, version(&r), body.into_bytes())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        writers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    assert_eq!(results.len(), THREADS * EACH);
    let created = results.iter().filter(|r| r.0 == 201).count();
    assert_eq!(created, 1, "one PUT creates, the others replace");
    let versions: BTreeSet<u64> = results.iter().map(|r| r.1).collect();
    assert_eq!(
        versions.len(),
        results.len(),
        "each write has its own version"
    );
    let winner = results.iter().max_by_key(|r| r.1).unwrap();

    for _ in 0..10 {
        let r = read_back(&srv, path, &winner.2);
        assert_eq!(version(&r), winner.1);
    }
    let expected = BTreeMap::from([(path.to_string(), winner.2.clone())]);
    let copies = wait_placed(&place.data(), &expected, SETTLE, |_| Ok(()));
    assert!(
        copies[path].iter().all(|d| d.version == winner.1),
        "replicas at {:?}, the last acknowledged version is {}",
        copies[path].iter().map(|d| d.version).collect::<Vec<_>>(),
        winner.1
    );
    // Rank 0 orders the writes to a path, by version: the one that created
    // the document is the first in that order, every later one replaced it.
    let created_v = results.iter().find(|r| r.0 == 201).unwrap().1;
    let replaced_earlier = results
        .iter()
        .filter(|r| r.0 == 204 && r.1 < created_v)
        .count();
    assert_eq!(
        replaced_earlier,
        0,
        "{replaced_earlier} PUTs answered 204 (replaced) with a version below the 201's \
         {created_v:x}, the smallest being {:x}",
        versions.first().unwrap()
    );
}

/// SIGSTOP now, SIGCONT when dropped (also when a test panics).
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let ok = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -STOP {pid}");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// Sets the flag when dropped: stops the writer thread on any way out.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// An acknowledged PUT of the stream.
#[derive(Clone)]
struct Acked {
    path: String,
    body: Vec<u8>,
    began: Instant,
    acked: Instant,
}

#[test]
fn a_stalled_replica_loses_no_write_and_gets_its_copies_back() {
    let _one = serial();
    let place = Place::new();
    let srv = place.cluster(&[]);
    let pids = replica_pids(&srv);
    let ranks = mpiweb_pids(&descendants(srv.pid()));
    let stalled_rank = 2;
    let stalled_pid = pids[&stalled_rank];
    assert!(
        ranks.contains(&stalled_pid) && stalled_pid != srv.rank0_pid,
        "pid {stalled_pid} of rank {stalled_rank} is not one of our ranks {ranks:?}"
    );

    let stop = AtomicBool::new(false);
    let acked: Mutex<Vec<Acked>> = Mutex::new(Vec::new());
    let mislabeled: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let t0 = Instant::now();
    let count_since = |t: Instant| {
        acked
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.began >= t)
            .count()
    };
    let (stop_at, cont_at) = thread::scope(|s| {
        // One client writes distinct documents, one after another, all along.
        let writer = s.spawn(|| {
            let until = Instant::now() + Duration::from_secs(180);
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                let path = format!("/store/stream/doc-{i:04}");
                let body = format!("stream document {i}\n")
                    .repeat(1 + i % 40)
                    .into_bytes();
                let began = Instant::now();
                let r = put(&srv, &path, Some("text/plain"), &body);
                assert!(
                    r.status == 201 || r.status == 204,
                    "PUT {path} ({:?} after it began): {} {}",
                    began.elapsed(),
                    r.status,
                    r.text()
                );
                if r.status == 204 {
                    // Acknowledged, but not as a creation: noted, and
                    // failed at the end, after the checks of durability.
                    mislabeled.lock().unwrap().push(format!(
                        "{path}: 204 for a new document, {:?} after the test began",
                        began - t0
                    ));
                }
                acked.lock().unwrap().push(Acked {
                    path,
                    body,
                    began,
                    acked: Instant::now(),
                });
                i += 1;
            }
        });
        let _end_writer = SetOnDrop(&stop);
        let start = Instant::now();

        // About a second of writes with every replica up.
        assert!(
            eventually(Duration::from_secs(30), || start.elapsed()
                >= Duration::from_secs(1)
                && count_since(start) >= 5),
            "too few writes before the stall"
        );

        // Stall one replica: writes go on (to stand-ins), reads find every
        // acknowledged document.
        let log_at = log_len(&srv);
        let stalled = Stopped::new(stalled_pid);
        let stop_at = Instant::now();
        assert!(
            wait_log_since(&srv, log_at, Duration::from_secs(30), |l| l
                .contains(&format!("worker rank {stalled_rank} silent for"))),
            "the stalled rank never left the rotation:\n{}",
            srv.log_text()
        );
        assert!(
            eventually(Duration::from_secs(40), || stop_at.elapsed()
                >= Duration::from_millis(1500)
                && count_since(stop_at) >= 8),
            "only {} writes acknowledged during the stall",
            count_since(stop_at)
        );
        eprintln!(
            "stalled {:?} after the test began, {:?} for the writes",
            stop_at - t0,
            t0.elapsed()
        );
        let so_far = acked.lock().unwrap().clone();
        for a in &so_far {
            read_back(&srv, &a.path, &a.body);
        }
        // Acknowledged means on disk on every live replica: two copies of
        // each (the stopped rank's own files still count; nothing is
        // dropped while it is away).
        let on_disk = live_copies(&place.data());
        for a in &so_far {
            let n = on_disk
                .get(&a.path)
                .map_or(0, |c| c.iter().filter(|d| d.body == a.body).count());
            assert!(
                n >= REPLICAS,
                "{} acknowledged, but on {n} disks during the stall",
                a.path
            );
        }
        eprintln!(
            "during the stall: {} documents read back, {} written",
            so_far.len(),
            count_since(stop_at)
        );

        eprintln!(
            "reads during the stall done {:?} after the test began",
            t0.elapsed()
        );
        // Resume it: writes go on a little longer.
        let log_at = log_len(&srv);
        drop(stalled);
        let cont_at = Instant::now();
        assert!(
            wait_log_since(&srv, log_at, Duration::from_secs(30), |l| l
                .contains(&format!("worker rank {stalled_rank} answers again"))),
            "the resumed rank was not seen again:\n{}",
            srv.log_text()
        );
        assert!(
            eventually(Duration::from_secs(30), || cont_at.elapsed()
                >= Duration::from_millis(700)
                && count_since(cont_at) >= 3),
            "too few writes after the stall"
        );
        stop.store(true, Ordering::SeqCst);
        if let Err(e) = writer.join() {
            std::panic::resume_unwind(e);
        }
        (stop_at, cont_at)
    });

    let acked = acked.into_inner().unwrap();
    // Written entirely while the rank was stopped: it cannot have them
    // unless they were handed back.
    let during: BTreeSet<String> = acked
        .iter()
        .filter(|a| a.began >= stop_at && a.acked <= cont_at)
        .map(|a| a.path.clone())
        .collect();
    eprintln!(
        "{} documents written, {} while rank {stalled_rank} was stopped",
        acked.len(),
        during.len()
    );
    assert!(!during.is_empty());
    for a in &acked {
        read_back(&srv, &a.path, &a.body);
    }
    let expected: BTreeMap<String, Vec<u8>> = acked
        .iter()
        .map(|a| (a.path.clone(), a.body.clone()))
        .collect();
    let copies = wait_placed(&place.data(), &expected, SETTLE, |c| {
        let back = on_rank(c, stalled_rank).intersection(&during).count();
        match back {
            0 => Err(format!(
                "rank {stalled_rank} holds none of the {} documents written while it was stopped",
                during.len()
            )),
            _ => Ok(()),
        }
    });
    no_docs_on_rank_0(&place.data());
    // Settled means on their home ranks: those of the stalled rank are back.
    let homed: BTreeSet<String> = during
        .iter()
        .filter(|p| home(p).contains(&stalled_rank))
        .cloned()
        .collect();
    assert_eq!(
        on_rank(&copies, stalled_rank)
            .intersection(&during)
            .cloned()
            .collect::<BTreeSet<_>>(),
        homed
    );
    eprintln!(
        "rank {stalled_rank} got back {} of the {} documents written while it was stopped",
        on_rank(&copies, stalled_rank).intersection(&during).count(),
        during.len()
    );
    assert!(
        srv.wait_log(|l| l.contains("store: repair done:")),
        "no repair logged:\n{}",
        srv.log_text()
    );
    // Every document still reads back once the cluster has settled.
    for a in &acked {
        read_back(&srv, &a.path, &a.body);
    }
    eprintln!(
        "settled and read back {:?} after the test began",
        t0.elapsed()
    );
    let mislabeled = mislabeled.into_inner().unwrap();
    assert!(
        mislabeled.is_empty(),
        "{} new documents were acknowledged as replaced:\n{}\nlog:\n{}",
        mislabeled.len(),
        mislabeled.join("\n"),
        store_log(&srv)
    );
}

/// The log lines about the store and the workers' membership.
fn store_log(srv: &Server) -> String {
    srv.log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("store") || l.contains("worker rank"))
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// PUT `n` documents `/store/docs/NN` of various sizes and types; returns
/// path -> (body, content type, version).
fn fill(srv: &Server, n: usize) -> BTreeMap<String, (Vec<u8>, String, u64)> {
    let types = ["text/plain", "application/json", "image/png", "text/html"];
    (0..n)
        .map(|i| {
            let path = format!("/store/docs/{i:02}");
            let body = match i % 5 {
                0 => Vec::new(),
                1 => binary(100_000 + i, i as u64),
                _ => format!("document {i}\n").repeat(i).into_bytes(),
            };
            let ctype = types[i % types.len()].to_string();
            let v = create(srv, &path, Some(&ctype), &body);
            (path, (body, ctype, v))
        })
        .collect()
}

#[test]
fn a_restarted_cluster_keeps_every_acknowledged_document() {
    let _one = serial();
    let place = Place::new();
    let mut srv = place.cluster(&[]);
    let mut docs = fill(&srv, 40);
    // A replaced one and two deleted ones.
    let replaced = "/store/docs/03".to_string();
    let r = put(
        &srv,
        &replaced,
        Some("text/x-new"),
        b"replaced before the restart\n",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    docs.insert(
        replaced.clone(),
        (
            b"replaced before the restart\n".to_vec(),
            "text/x-new".into(),
            version(&r),
        ),
    );
    let deleted = ["/store/docs/07".to_string(), "/store/docs/13".to_string()];
    let mut deleted_v = Vec::new();
    for p in &deleted {
        deleted_v.push(docs.remove(p).unwrap().2);
        assert_eq!(delete(&srv, p).status, 204);
    }
    let expected: BTreeMap<String, Vec<u8>> =
        docs.iter().map(|(p, d)| (p.clone(), d.0.clone())).collect();
    wait_placed(&place.data(), &expected, SETTLE, |_| Ok(()));
    srv.stop();
    drop(srv);

    let srv = place.cluster(&[]);
    let ready = wait_ready(&srv);
    assert!(ready.contains("from 3 ranks"), "{ready}");
    for (path, (body, ctype, v)) in &docs {
        let r = read_back(&srv, path, body);
        assert_eq!(version(&r), *v, "{path}: the same ETag after the restart");
        assert_eq!(r.header("content-type"), Some(ctype.as_str()), "{path}");
    }
    for p in &deleted {
        assert_eq!(get(&srv, p).status, 404, "{p} came back");
    }
    let list = get(&srv, "/store/").text();
    assert_eq!(json_count(&list), Some(docs.len() as u64), "{list}");
    wait_placed(&place.data(), &expected, SETTLE, |_| Ok(()));

    // Versions keep growing across the restart: a new write wins.
    let r = put(&srv, &replaced, Some("text/plain"), b"after the restart\n");
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(
        version(&r) > docs[&replaced].2,
        "version went back after the restart"
    );
    let r = put(&srv, &deleted[0], Some("text/plain"), b"recreated\n");
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        version(&r) > deleted_v[0],
        "a recreated document has an older version than before its deletion"
    );
    read_back(&srv, &deleted[0], b"recreated\n");
    read_back(&srv, &replaced, b"after the restart\n");
}

#[test]
fn a_wiped_replica_is_rebuilt_after_a_restart() {
    let _one = serial();
    let place = Place::new();
    let mut srv = place.cluster(&[]);
    let docs = fill(&srv, 40);
    let expected: BTreeMap<String, Vec<u8>> =
        docs.iter().map(|(p, d)| (p.clone(), d.0.clone())).collect();
    let before = wait_placed(&place.data(), &expected, SETTLE, |_| Ok(()));
    let had = on_rank(&before, 2);
    assert!(!had.is_empty(), "rank 2 kept none of 40 documents");
    srv.stop();
    drop(srv);

    fs::remove_dir_all(place.data().join("rank-2")).unwrap();
    let srv = place.cluster(&[]);
    for (path, (body, ctype, v)) in &docs {
        let r = read_back(&srv, path, body);
        assert_eq!(version(&r), *v, "{path}");
        assert_eq!(r.header("content-type"), Some(ctype.as_str()), "{path}");
    }
    // Every document on its two home ranks again: rank 2 holds again
    // exactly what it held before it was wiped.
    let after = wait_placed(&place.data(), &expected, SETTLE, |_| Ok(()));
    assert_eq!(on_rank(&after, 2), had);
    for (path, (body, _, v)) in &docs {
        let r = read_back(&srv, path, body);
        assert_eq!(version(&r), *v, "{path}");
    }
    assert!(
        srv.wait_log(|l| l.contains("store: repair done:")),
        "no repair logged:\n{}",
        srv.log_text()
    );
}

/// Every file under `dir` (symlinks not followed), relative to it.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let t = e.file_type().unwrap();
            let p = e.path();
            if t.is_dir() {
                todo.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

#[test]
fn traversal_attempts_are_refused_and_create_nothing_outside() {
    let _one = serial();
    // The data directory is three levels down, so even a climb of three
    // `..` would land inside the temp dir, where the walk below sees it.
    let place = Place::with_data("t1/t2/data");
    let top = place.dir.path().to_path_buf();
    let outside = top.parent().unwrap().to_path_buf();
    let outside_before: BTreeSet<PathBuf> = ["x", "etc", "b"]
        .iter()
        .map(|n| outside.join(n))
        .filter(|p| p.exists())
        .collect();
    let tree_before = walk(&top);
    let srv = place.cluster(&[]);

    let dotdot = [400, 403];
    let cases: [(&str, &[u16]); 9] = [
        ("/store/../../x", &dotdot),
        ("/store/%2e%2e/%2e%2e/x", &dotdot),
        ("/store/a/%2E%2E/%2e%2e/../x", &dotdot),
        ("/store/a/../../../../x", &dotdot),
        ("/store/%2e%2e%2f%2e%2e%2fetc", &dotdot),
        ("/store/..%2f..%2f..%2fx", &dotdot),
        ("/store/a%00b", &[400]),
        ("/store/a%5cb", &[403]),
        ("/store/a%5c..%5c..%5cx", &[403]),
    ];
    for (path, allowed) in cases {
        let r = put(&srv, path, Some("text/plain"), b"pwned\n");
        assert!(
            allowed.contains(&r.status),
            "PUT {path}: {} (wanted one of {allowed:?})",
            r.status
        );
        let r = get(&srv, path);
        assert!(
            allowed.contains(&r.status),
            "GET {path}: {} (wanted one of {allowed:?})",
            r.status
        );
        assert!(!r.text().contains("pwned"), "GET {path}");
        let r = delete(&srv, path);
        assert!(
            (400..500).contains(&r.status),
            "DELETE {path}: {}",
            r.status
        );
    }
    // Raw backslashes are not even a request.
    assert!([400, 403].contains(&get(&srv, "/store/a\\..\\..\\x").status));
    // Dot segments that stay inside the root are removed first (RFC 3986
    // §5.2.4): the request is answered as its clean path would be.
    for (path, clean) in [
        ("/store/../x", "/x"),
        ("/store/%2e%2e/x", "/x"),
        ("/store/%2E%2E/x", "/x"),
        ("/store/a/%2e%2e", "/store/"),
        ("/store/a/./../b/../", "/store/"),
    ] {
        assert_eq!(
            put(&srv, path, Some("text/plain"), b"pwned\n").status,
            put(&srv, clean, Some("text/plain"), b"pwned\n").status,
            "PUT {path}"
        );
        assert_eq!(
            get(&srv, path).status,
            get(&srv, clean).status,
            "GET {path}"
        );
        assert!(!get(&srv, path).text().contains("pwned"), "GET {path}");
    }
    // Dots inside a name are just a name.
    create(&srv, "/store/a..b", Some("text/plain"), b"dots\n");
    read_back(&srv, "/store/a..b", b"dots\n");
    assert_eq!(get(&srv, "/x").status, 404);
    assert_eq!(get(&srv, "/etc").status, 404);

    let expected = BTreeMap::from([("/store/a..b".to_string(), b"dots\n".to_vec())]);
    wait_placed(&place.data(), &expected, SETTLE, |_| Ok(()));
    drop(srv);

    // Nothing new outside DATA/rank-N/{docs,tmp}, nor next to the temp dir.
    let data_rel = place.data().strip_prefix(&top).unwrap().to_path_buf();
    let tree_after = walk(&top);
    for p in &tree_after {
        if tree_before.contains(p) {
            continue;
        }
        let Ok(inside) = p.strip_prefix(&data_rel) else {
            panic!("{} appeared outside the data directory", p.display());
        };
        let parts: Vec<String> = inside
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let rank_dir = parts.first().is_some_and(|r| {
            r.strip_prefix("rank-")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
        let ok = rank_dir
            && match parts.len() {
                1 => true,
                2 | 3 => parts[1] == "docs" || parts[1] == "tmp",
                _ => false,
            };
        assert!(ok, "{} is outside DATA/rank-N/docs and tmp", p.display());
    }
    for n in ["x", "etc", "b"] {
        let p = outside.join(n);
        assert!(
            !p.exists() || outside_before.contains(&p),
            "{} appeared next to the temp dir",
            p.display()
        );
    }
    let docroot_after = walk(&place.root());
    assert_eq!(
        docroot_after,
        vec![PathBuf::from("hello.txt")],
        "the docroot changed"
    );
}

#[test]
fn writes_need_the_token_and_an_open_address_needs_one() {
    let _one = serial();
    let place = Place::new();
    let srv = place.cluster(&["--store-token", "s3cret"]);
    let path = "/store/guarded.txt";
    for (auth, what) in [
        ("", "no token"),
        ("Authorization: Bearer wrong\r\n", "a wrong token"),
        ("Authorization: Bearer s3cret2\r\n", "a longer token"),
        ("Authorization: Basic czNjcmV0\r\n", "another scheme"),
    ] {
        let r = send(&srv, "PUT", path, auth, Some(b"guarded\n"));
        assert_eq!(r.status, 401, "PUT with {what}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"mpiweb-store\""),
            "PUT with {what}"
        );
    }
    assert_eq!(get(&srv, path).status, 404, "a refused PUT stored nothing");
    let good = "Authorization: Bearer s3cret\r\n";
    let r = send(&srv, "PUT", path, good, Some(b"guarded\n"));
    assert_eq!(r.status, 201, "{}", r.text());
    // Reads need no token.
    read_back(&srv, path, b"guarded\n");
    assert_eq!(send(&srv, "HEAD", path, "", None).status, 200);
    assert_eq!(get(&srv, "/store/").status, 200);
    let r = delete(&srv, path);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    read_back(&srv, path, b"guarded\n");
    assert_eq!(send(&srv, "DELETE", path, good, None).status, 204);
    assert_eq!(get(&srv, path).status, 404);
    drop(srv);

    // No token on a non-loopback address: exit 2 at start, saying why. The
    // process is ended if it starts serving instead.
    let refused = |mpi: bool| {
        let data = place.data_arg();
        let mut cmd = if mpi {
            let mut c = Command::new("mpirun");
            c.args(["-np", "3", BIN]);
            c
        } else {
            Command::new(BIN)
        };
        cmd.args([
            "--listen",
            "0.0.0.0:0",
            "--store",
            "/store/",
            "--data",
            &data,
        ])
        .arg(place.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start");
        let status = wait_for(&mut child, Duration::from_secs(60));
        if status.is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            status.is_some(),
            "still running on 0.0.0.0 without a token: {err}"
        );
        (status.unwrap(), err)
    };
    let (status, err) = refused(false);
    assert_eq!(status.code(), Some(2), "{status:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--store-token"), "{err}");
    // Every rank exits 2, and mpirun says so (ranks finish MPI's start-up
    // first: exiting before it once made MPICH's launcher die of SIGPIPE).
    let (status, err) = refused(true);
    assert_eq!(status.code(), Some(2), "under mpirun: {status:?}: {err}");
    assert!(err.contains("--store-token"), "under mpirun: {err}");
}

#[test]
fn one_process_alone_keeps_documents_under_rank_0() {
    let _one = serial();
    let place = Place::new();
    let data = place.data_arg();
    // Alone, store requests wait for the store to be ready by themselves.
    let srv = Server::start(&place.root(), &["--store", "/store/", "--data", &data]);
    let path = "/store/solo/doc.txt";
    let v1 = create(&srv, path, Some("text/plain"), b"alone\n");
    let r = read_back(&srv, path, b"alone\n");
    assert_eq!(version(&r), v1);
    let on_disk = disk(&place.data());
    assert_eq!(on_disk.len(), 1, "{on_disk:?}");
    assert_eq!(
        (
            on_disk[0].rank,
            on_disk[0].path.as_str(),
            on_disk[0].body.as_slice()
        ),
        (0, path, &b"alone\n"[..])
    );
    assert!(on_disk[0]
        .file
        .starts_with(place.data().join("rank-0").join("docs")));
    assert_eq!(on_disk[0].version, v1);
    let r = put(&srv, path, Some("text/plain"), b"alone, again\n");
    assert_eq!(r.status, 204);
    assert!(version(&r) > v1);
    read_back(&srv, path, b"alone, again\n");
    let list = get(&srv, "/store/").text();
    assert!(
        list.contains(path) && json_count(&list) == Some(1),
        "{list}"
    );
    assert_eq!(delete(&srv, path).status, 204);
    assert_eq!(get(&srv, path).status, 404);
    assert_eq!(delete(&srv, path).status, 404);
    assert!(
        disk(&place.data()).iter().all(|d| d.deleted),
        "a live copy after DELETE"
    );
    assert!(!place.data().join("rank-1").exists());
}

#[test]
fn the_store_prefix_owns_its_names_whatever_else_would_match() {
    let _one = serial();
    let place = Place::new();
    fs::create_dir_all(place.root().join("store")).unwrap();
    fs::write(place.root().join("store/file.txt"), b"a docroot file\n").unwrap();
    let up = common::upstream::Upstream::start();
    let route = format!("/={}", up.url());
    let data = place.data_arg();
    for np in [4, 1] {
        let args = ["--store", "/store/", "--data", &data, "--route", &route];
        let srv = match np {
            1 => Server::start(&place.root(), &args),
            _ => Server::start_mpi(np, &place.root(), &args),
        };
        wait_ready(&srv);
        let before = up.requests().len();
        // Missing documents are the store's 404: never the route's
        // upstream, never a DOCROOT file of the same name.
        for path in [
            "/store/missing.txt",
            "/store/file.txt",
            "/store/sub/",
            "/store/a/b",
        ] {
            let r = get(&srv, path);
            assert_eq!(r.status, 404, "{np} ranks, GET {path}: {}", r.text());
            assert!(!r.text().contains("docroot file"));
        }
        assert_eq!(delete(&srv, "/store/missing.txt").status, 404);
        // Percent-encoded, the prefix is the store's all the same.
        let r = get(&srv, "/%73tore/file.txt");
        assert_eq!(r.status, 404, "{}", r.text());
        assert_eq!(
            up.requests().len(),
            before,
            "a store path reached the upstream"
        );
        // Outside the prefix the route answers.
        let r = get(&srv, "/storefront");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-upstream"), Some(up.port().to_string().as_str()));
        // Once stored, the document is found.
        create(&srv, "/store/file.txt", Some("text/plain"), b"stored\n");
        read_back(&srv, "/store/file.txt", b"stored\n");
        assert_eq!(delete(&srv, "/store/file.txt").status, 204);
        assert_eq!(get(&srv, "/store/file.txt").status, 404);
    }
}

#[test]
fn a_store_at_the_root_owns_every_name_but_the_status_pages() {
    let _one = serial();
    let place = Place::new();
    let data = place.data_arg();
    let srv = Server::start(&place.root(), &["--store", "/", "--data", &data]);
    wait_ready(&srv);
    // The DOCROOT file of that name is not the store's.
    assert_eq!(get(&srv, "/hello.txt").status, 404);
    assert_eq!(get(&srv, "/nothing").status, 404);
    let r = put(&srv, "/hello.txt", Some("text/plain"), b"stored instead\n");
    assert_eq!(r.status, 201, "{}", r.text());
    read_back(&srv, "/hello.txt", b"stored instead\n");
    assert_eq!(delete(&srv, "/hello.txt").status, 204);
    assert_eq!(get(&srv, "/hello.txt").status, 404);
    assert_eq!(
        fs::read(place.root().join("hello.txt")).unwrap(),
        b"hello world\n",
        "the docroot file was written"
    );
    assert_eq!(get(&srv, "/-/status.json").status, 200);
}

/// A tmpfs of `size` mounted on `dir` for as long as it lives.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` where this process may not mount (not root, no
    /// CAP_SYS_ADMIN).
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        out.status.success().then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Files left in any `rank-N/tmp/`.
fn temporary_files(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for rank in fs::read_dir(data).into_iter().flatten().flatten() {
        for f in fs::read_dir(rank.path().join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(f.path());
        }
    }
    out
}

#[test]
fn a_full_disk_is_507_and_nothing_half_written_is_acknowledged() {
    let _one = serial();
    let place = Place::new();
    let Some(_fs) = Tmpfs::mount(&place.data(), "8m") else {
        eprintln!("skipped: cannot mount a tmpfs for --data here (needs root)");
        return;
    };
    let srv = place.cluster(&[]);
    let mb = |seed| binary(1 << 20, seed);
    // 1 MiB documents, two copies each, until the 8 MiB are full.
    let mut stored = BTreeMap::new();
    let mut refused = None;
    for i in 0..20u64 {
        let path = format!("/store/d{i}");
        let r = put(&srv, &path, Some("application/octet-stream"), &mb(i));
        match r.status {
            201 => {
                stored.insert(path, mb(i));
            }
            507 => {
                refused = Some(path);
                break;
            }
            other => panic!("PUT {path}: {other} {}", r.text()),
        }
    }
    let refused = refused.expect("8 MiB never filled up");
    assert!(stored.len() >= 2, "only {} documents fitted", stored.len());
    assert!(
        srv.wait_log(|l| l.contains("is out of space")),
        "{}",
        store_log(&srv)
    );
    // What was refused was not kept anywhere, not even half; what was
    // acknowledged has both copies.
    assert_eq!(get(&srv, &refused).status, 404);
    assert!(eventually(Duration::from_secs(10), || {
        let copies = live_copies(&place.data());
        !copies.contains_key(&refused)
            && temporary_files(&place.data()).is_empty()
            && stored
                .keys()
                .all(|p| copies.get(p).is_some_and(|c| c.len() == REPLICAS))
    }));
    for (path, body) in &stored {
        read_back(&srv, path, body);
    }
    // A bigger version of a stored document does not fit: 507, and the
    // version before stays.
    let first = stored.keys().next().unwrap().clone();
    let r = put(&srv, &first, None, &binary(3 << 20, 99));
    assert_eq!(r.status, 507, "{}", r.text());
    read_back(&srv, &first, &stored[&first]);
    // Fill what is left to the brim: smaller and smaller documents, each
    // until one is refused (those acknowledged are kept whole).
    for size in [256 << 10, 16 << 10, 1 << 10, 1] {
        for i in 0..400u64 {
            let path = format!("/store/fill-{size}-{i}");
            let body = binary(size, i);
            match put(&srv, &path, None, &body).status {
                201 => {
                    stored.insert(path, body);
                }
                507 => break,
                other => panic!("PUT {path}: {other}"),
            }
        }
    }
    // Deleting works on the full disk (each replica frees the body before
    // it writes the tombstone), and frees the bodies' space.
    let gone: Vec<String> = stored.keys().take(2).cloned().collect();
    for path in &gone {
        assert_eq!(delete(&srv, path).status, 204, "DELETE {path}");
        assert_eq!(get(&srv, path).status, 404);
    }
    assert!(eventually(Duration::from_secs(10), || {
        let copies = live_copies(&place.data());
        gone.iter().all(|p| !copies.contains_key(p))
    }));
    let r = put(&srv, "/store/after", None, &mb(1000));
    assert_eq!(r.status, 201, "{}", r.text());
    read_back(&srv, "/store/after", &mb(1000));
    assert!(temporary_files(&place.data()).is_empty());
}
