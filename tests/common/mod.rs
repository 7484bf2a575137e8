//! Test support: start the real mpiweb (alone or under `mpirun`) on port 0,
//! read its port from the start-up line, talk raw HTTP to it, stop it by PID.
#![allow(dead_code)]

pub mod netns;
pub mod upstream;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mpiweb");

/// How long a server may take to come up (mpirun on a loaded machine is slow).
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running mpiweb and everything it printed on stderr.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    /// PID of rank 0 (the server process itself when alone).
    pub rank0_pid: u32,
    pub banner: String,
    pub log: Arc<Mutex<Vec<String>>>,
    under_mpirun: bool,
}

impl Server {
    /// Start `mpiweb ARGS DOCROOT` alone, listening on 127.0.0.1:0.
    pub fn start(docroot: &Path, args: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(["--listen", "127.0.0.1:0", "--grace", "3"])
            .args(args)
            .arg(docroot);
        Server::spawn(cmd, false)
    }

    /// Start `mpirun -np NP mpiweb ARGS DOCROOT`.
    pub fn start_mpi(np: usize, docroot: &Path, args: &[&str]) -> Server {
        let mut cmd = Command::new("mpirun");
        cmd.args([
            "-np",
            &np.to_string(),
            BIN,
            "--listen",
            "127.0.0.1:0",
            "--grace",
            "3",
        ])
        .args(args)
        .arg(docroot);
        Server::spawn(cmd, true)
    }

    /// Start a prepared command (mpiweb, or a launcher or shell that runs
    /// it) and wait for its start-up line.
    pub fn spawn(mut cmd: Command, under_mpirun: bool) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start mpiweb");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        // Drain stderr for the server's whole life, so the pipe never fills.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening on http://") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let banner = match rx.recv_timeout(START_DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("mpiweb did not start: {:?}", log.lock().unwrap());
            }
        };
        let addr = banner
            .split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no address in {banner}")
            });
        let rank0_pid = banner
            .split("(pid ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no pid in {banner}")
            });
        Server {
            child,
            addr,
            rank0_pid,
            banner,
            log,
            under_mpirun,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Send raw bytes on a new connection and read until the server closes.
    pub fn raw(&self, request: &[u8]) -> Vec<u8> {
        let mut s = self.connect();
        s.write_all(request).expect("send");
        read_to_close(&mut s)
    }

    /// Send raw bytes and parse the first response.
    pub fn one(&self, request: &[u8]) -> Resp {
        let out = self.raw(request);
        let (resp, _) = Resp::parse(&out, request.starts_with(b"HEAD"))
            .unwrap_or_else(|| panic!("no response in {:?}", String::from_utf8_lossy(&out)));
        resp
    }

    /// A GET of `path` with Connection: close.
    pub fn get(&self, path: &str, extra: &str) -> Resp {
        self.one(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        )
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Poll the log until `pred` holds (the log line follows the response).
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool) -> bool {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.log.lock().unwrap().iter().any(|l| pred(l)) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop the server: SIGTERM (mpirun passes it on to every rank), then
    /// SIGKILL if it lingers. Returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        if let Some(status) = wait_for(&mut self.child, Duration::from_secs(15)) {
            return Some(status);
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// Wait up to `limit` for the server to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        wait_for(&mut self.child, limit)
    }

    pub fn is_mpi(&self) -> bool {
        self.under_mpirun
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start mpiweb under `mpirun -np 3` and then alone, with `args`, and run
/// `check` on each.
pub fn both(args: &[&str], check: impl Fn(&Server)) {
    let site = Site::new();
    for mpi in [true, false] {
        let srv = match mpi {
            true => Server::start_mpi(3, &site.root(), args),
            false => Server::start(&site.root(), args),
        };
        check(&srv);
    }
}

/// Poll `pred` until it holds, up to `limit`; whether it did. It is asked
/// once more at the deadline, so a slow machine is not failed early.
pub fn eventually(limit: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    loop {
        if pred() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Wait for a child to exit, polling, up to `limit`.
pub fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Read until EOF (or a reset, or the read timeout).
pub fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Read exactly one response from a kept-alive connection.
pub fn read_one(s: &mut TcpStream, head_only: bool) -> Resp {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some((resp, _)) = Resp::parse(&out, head_only) {
            return resp;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => panic!("connection ended: {:?}", String::from_utf8_lossy(&out)),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Decode a complete chunked body (no trailers expected); `None` if it is
/// incomplete.
pub fn decode_chunked(mut b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = b.len();
    let mut body = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&b[..line_end]).expect("chunk size line");
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).expect("hex size");
        b = &b[line_end + 2..];
        if size == 0 {
            // Trailer section: lines until an empty one.
            loop {
                let end = b.windows(2).position(|w| w == b"\r\n")?;
                b = &b[end + 2..];
                if end == 0 {
                    return Some((body, total - b.len()));
                }
            }
        }
        if b.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&b[..size]);
        assert_eq!(&b[size..size + 2], b"\r\n", "chunk data ends in CRLF");
        b = &b[size + 2..];
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// Parse one complete response from the front of `b`; also return the
    /// bytes it used. Every response must carry Date and Server.
    pub fn parse(b: &[u8], head_only: bool) -> Option<(Resp, usize)> {
        let end = b.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&b[..end]).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next()?;
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status: u16 = status_line[9..12].parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("header line");
                (n.to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if status >= 200 {
            assert!(resp.header("date").is_some(), "no Date: {head}");
            assert!(resp.header("server").is_some(), "no Server: {head}");
        }
        let start = end + 4;
        let bodiless = head_only || status == 304 || status == 204 || status < 200;
        if !bodiless && resp.header("transfer-encoding") == Some("chunked") {
            let (body, used) = decode_chunked(&b[start..])?;
            resp.body = body;
            return Some((resp, start + used));
        }
        if !bodiless
            && resp.header("content-length").is_none()
            && resp.header("connection") == Some("close")
        {
            // Delimited by the close: everything read is the body.
            resp.body = b[start..].to_vec();
            return Some((resp, b.len()));
        }
        let len: usize = match resp.header("content-length") {
            Some(v) => v.parse().ok()?,
            None => 0,
        };
        let body_len = if bodiless { 0 } else { len };
        if b.len() < start + body_len {
            return None;
        }
        resp.body = b[start..start + body_len].to_vec();
        Some((resp, start + body_len))
    }

    /// Parse every response in `b`, in order.
    pub fn parse_all(mut b: &[u8]) -> Vec<Resp> {
        let mut out = Vec::new();
        while let Some((r, used)) = Resp::parse(b, false) {
            out.push(r);
            b = &b[used..];
        }
        out
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A document root for tests, next to a secret that must never be served.
pub struct Site {
    pub dir: tempfile::TempDir,
}

impl Site {
    pub fn new() -> Site {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let w = |rel: &str, data: &[u8]| {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        };
        w("index.html", b"<!DOCTYPE html><title>home</title>home\n");
        w("hello.txt", b"hello world\n");
        w("style.css", b"body{}\n");
        w("data.json", b"{\"a\":1}\n");
        w("img/dot.png", b"\x89PNG\r\n\x1a\n");
        w("withindex/index.html", b"inner index\n");
        w("list/a&b <c>.txt", b"escaped\n");
        w("list/plain.txt", b"plain\n");
        w("list/.hidden", b"hidden\n");
        w("empty.txt", b"");
        fs::create_dir_all(root.join("list/subdir")).unwrap();
        fs::write(dir.path().join("secret.txt"), b"TOP SECRET\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("escape.txt")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("escape-dir")).unwrap();
        std::os::unix::fs::symlink(root.join("hello.txt"), root.join("inside-link.txt")).unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("secret.txt"),
            root.join("list/out-link.txt"),
        )
        .unwrap();
        std::os::unix::fs::symlink(root.join("hello.txt"), root.join("list/in-link.txt")).unwrap();
        Site { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

/// PIDs of the processes whose parent chain reaches `ancestor`.
pub fn descendants(ancestor: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let mut p = pid;
        for _ in 0..6 {
            match parent_of(p) {
                Some(pp) if pp == ancestor => {
                    out.push(pid);
                    break;
                }
                Some(pp) if pp > 1 => p = pp,
                _ => break,
            }
        }
    }
    out
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// The rank of process `pid`, as its launcher set it (MPICH's or Open
/// MPI's).
pub fn launcher_rank(pid: u32) -> Option<usize> {
    let env = fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0)
        .find_map(|v| {
            v.strip_prefix(b"PMI_RANK=")
                .or_else(|| v.strip_prefix(b"OMPI_COMM_WORLD_RANK="))
        })
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
}

/// Processes among `pids` that run the mpiweb binary.
pub fn mpiweb_pids(pids: &[u32]) -> Vec<u32> {
    running(pids, BIN)
}

/// Processes among `pids` that run the binary at `path`.
pub fn running(pids: &[u32], path: &str) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|p| {
            fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| c.split(|&b| b == 0).next() == Some(path.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// CPU time (user + system) of a process in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some(at) = stat.rfind(')') else { return 0 };
    let f: Vec<&str> = stat[at + 2..].split(' ').collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}
