//! Benchmark harness: measures mpiweb against nginx on loopback in one run and prints a comparison table.
//!
//! Run it as `make bench` (which raises `ulimit -n` first), or by hand:
//! `ulimit -n 20000; cargo build --release && cargo bench --bench compare`.
//! `cargo test --bench compare` runs only this file's unit tests (cargo passes
//! `--bench` to the binary under `cargo bench` alone).
//!
//! Environment:
//! - `BENCH_SECS` (default 10): length of each timed run (rows 1, 2, the proxy
//!   rows and the pool's first row; the failover run is always 20 s).
//! - `BENCH_ONLY`: words separated by commas or spaces. `nginx` or `mpiweb`
//!   measures one server only (the other column shows `-`); a row name runs
//!   only the rows named: `static` (rows 1-2), `many` (row 3), `proxy-small`,
//!   `proxy-solo`, `proxy-big`, `proxy-idle`, `proxy` (those four), `pool`
//!   (the pool rows), `store` (the document store rows) or `hosts` (the
//!   rows across two hosts, see hosts_rows.rs). Example:
//!   `BENCH_ONLY=proxy-small,mpiweb`. Without a row name every row runs.
//! - `MPIWEB_BENCH_SOLO=1`: start the mpiweb binary alone instead of `mpirun -np 3`
//!   (every row but `proxy-solo`, which always runs it alone, and `store`,
//!   which always runs under `mpirun -np 4`).
//! - `MPIWEB_BIN`: path of the mpiweb binary (default `<crate>/target/release/mpiweb`).
//!
//! Rows: (1) 512-byte file, wrk, 50 keep-alive connections, req/s; (2) 1 GiB
//! file over 4 connections, MiB/s, from this file's own download client (the
//! target row) and from wrk for reference; (3) 10,000 connections held open at
//! once, then one GET on each: how many got a full 200, and peak RSS.
//!
//! Proxy rows (issue 3): one origin nginx (1 worker, no access log) serves the
//! same docroot on another loopback port, and each server proxies `/` to it:
//! nginx with `proxy_pass` to an `upstream` block with `keepalive 32`, mpiweb
//! with `--route /=http://127.0.0.1:ORIGIN`. (`proxy-small`) the 512-byte file
//! through the proxy, wrk, 50 connections, req/s, then wrk at one connection
//! for the median latency, read against the same median straight to the
//! origin (measured once, before the proxies) to show what the hop adds; (`proxy-solo`) the same
//! against mpiweb started without mpirun, read against the same nginx figure;
//! (`proxy-big`) full downloads of the 1 GiB file through the proxy, MiB/s,
//! and the peak RSS of the process that faces the client (nginx's worker,
//! mpiweb's rank 0); (`proxy-idle`) CPU used by the idle server processes
//! over 10 s, in percent of one core.
//!
//! The servers run one at a time, never side by side, so that one server's
//! idle processes (MPI ranks may spin while they wait) cannot slow the other
//! down on a small machine. Rows 1-2 share one server lifetime; row 3 and
//! each proxy row get a fresh start so that a peak RSS is the row's own. The
//! origin runs for all the proxy rows, and only for them.
//!
//! Pool rows (`pool`): three origin nginx, A, B and C (the origin's config,
//! but `master_process off`, so that one pid is the whole server and B can be
//! killed by it), each on its own free port, behind one pool. nginx proxies
//! to `upstream pool { server A max_fails=1 fail_timeout=10s; ... B ...;
//! ... C ...; keepalive 32; }` with the proxy rows' settings (open-source
//! nginx has passive checks only); mpiweb to `--route '/ A B C
//! health=/small.html interval=1s timeout=1s'` (round-robin, active checks
//! every second, passive max-fails=1 fail-timeout=10s). (1) The small file
//! through the pool, wrk, 50 connections, BENCH_SECS, req/s. (2) Failover: wrk
//! for 20 s at 50 connections; 5 s after wrk starts B is killed (SIGKILL, by
//! pid), 12 s after it B is started again on its port (polled until it
//! answers). Reported: req/s over the run, wrk's errors (non-2xx responses
//! plus socket errors), and whether B got proxied requests again: wrk sends
//! `X-Bench: failover`, and the restarted B (alone of the three) has an
//! access log of `$msec $http_x_bench`, so the proxies' health checks and the
//! readiness probe do not count. Both proxies' pool runs come first, then
//! both failover runs; before each of those B is started afresh, unlogged.
//!
//! Store rows (`store`, issue 5): 4 KiB documents at STORE_DOCS paths,
//! `/store/doc-0` to `/store/doc-999`. nginx serves them with `dav_methods PUT
//! DELETE; create_full_put_path on;` from a directory of the temp dir (one
//! copy, written to a temp file and renamed, never fsync'd); mpiweb runs under
//! `mpirun -np 4` (3 worker ranks) with `--store /store/ --data DIR
//! --replicas 2`, and acknowledges a PUT once 2 ranks each wrote it to a temp
//! file, fsync'd and renamed it (the report's notes say so beside the
//! figures). Each server in a fresh start: a PUT then GET of one document
//! must give back the same 4 KiB; the STORE_DOCS documents are then written
//! one at a time (pre-fill); then wrk with a Lua script (written to the temp
//! dir) that PUTs the 4 KiB body to the paths in turn, 50 connections,
//! BENCH_SECS, req/s, and at one connection for the median latency; then the
//! same with GETs of those paths. Last, the document files on disk are
//! counted (every copy: 2 per document for mpiweb). wrk's errors (non-2xx
//! responses, socket errors) go to the errors cells.

use std::collections::{BTreeMap, HashMap};
use std::env;
use std::error::Error;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

mod hosts_rows;
/// Network namespaces as two hosts, shared with tests/hosts.rs.
#[path = "../../tests/common/netns.rs"]
#[allow(dead_code)]
mod netns;
mod pool_rows;
mod proxy_rows;
mod report;
mod rows_static;
mod store_rows;

use hosts_rows::*;
use pool_rows::*;
use proxy_rows::*;
use rows_static::*;
use store_rows::*;

type BoxError = Box<dyn Error + Send + Sync>;
type BoxResult<T> = Result<T, BoxError>;

/// Size of the small file of row 1 and row 3.
const SMALL_SIZE: usize = 512;
/// Size of the big file of row 2: 1 GiB.
const BIG_SIZE: u64 = 1 << 30;
/// The big file is written in chunks of this size.
const CHUNK: usize = 1 << 20;
/// wrk connections for row 1 and row 2.
const SMALL_CONNS: u32 = 50;
const BIG_CONNS: u32 = 4;
/// Row 3: connections held open at once, and client threads that hold them.
const MANY_CONNS: usize = 10_000;
const MANY_WORKERS: usize = 100;
/// Row 3 needs this many descriptors: its sockets plus some slack for the rest.
const MANY_FDS: u64 = 10_100;
/// Row 3 budget: connecting must be done by the first mark, answers by the second.
const MANY_CONNECT_BUDGET: Duration = Duration::from_secs(25);
const MANY_ANSWER_BUDGET: Duration = Duration::from_secs(55);
/// One connect attempt in row 3; a dropped SYN is retried by the kernel after 1 s, 3 s.
const MANY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server may take to start answering, and to stop after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Poll interval while waiting for a process or a port.
const POLL: Duration = Duration::from_millis(20);
/// Number of MPI ranks mpiweb runs with.
const RANKS: &str = "3";
/// Row proxy-idle: how long idle CPU is counted, after a short wait for startup work to end.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
const IDLE_SETTLE: Duration = Duration::from_secs(1);
/// Row proxy-big runs past BENCH_SECS until one download is whole, but never past this.
const PROXY_BIG_LIMIT: Duration = Duration::from_secs(120);
/// Pool failover run: its length, and when origin B is killed and started again (from wrk's start).
const FAILOVER_RUN: Duration = Duration::from_secs(20);
const FAILOVER_KILL_AT: Duration = Duration::from_secs(5);
const FAILOVER_RESTART_AT: Duration = Duration::from_secs(12);
/// The value of the `X-Bench` header wrk sends in the failover run, which the restarted B logs.
const FAILOVER_MARK: &str = "failover";
/// Store rows: the size of a document, how many paths the PUTs and GETs go over, wrk connections.
const STORE_DOC_SIZE: usize = 4096;
const STORE_DOCS: usize = 1000;
const STORE_CONNS: u32 = SMALL_CONNS;
/// Store rows: where both servers keep documents, and mpiweb's ranks and copies per document.
const STORE_PREFIX: &str = "/store/";
const STORE_RANKS: &str = "4";
const STORE_REPLICAS: u32 = 2;
/// Store rows: how long the first store request may take (mpiweb's store waits up to
/// 30 s for its replicas to report), and the whole pre-fill of STORE_DOCS documents.
const STORE_READY_TIMEOUT: Duration = Duration::from_secs(40);
const STORE_PREFILL_LIMIT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    // `cargo bench` passes --bench. Without it (`cargo test --bench compare`) only the
    // unit tests below run, as criterion does: no benchmark of a debug build.
    if !env::args().skip(1).any(|a| a == "--bench") {
        return tests::run_all();
    }
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> BoxResult<ExitCode> {
    let cfg = Config::from_env()?;
    let site = Site::create()?;
    let many_skip = many_skip_reason();
    let mut report = Report::default();
    // Servers that failed to start: the run then exits non-zero.
    let mut failed: Vec<Kind> = Vec::new();

    // Rows 1-2: each server in turn, back to back, in one lifetime each.
    for kind in cfg.kinds().into_iter().filter(|_| cfg.runs(Row::Static)) {
        match measure_rows12(&cfg, &site, kind, &mut report) {
            Ok(figures) => *report.figures_mut(kind) = figures,
            Err(e) => {
                report.note(kind, format!("failed to start: {e}"));
                failed.push(kind);
            }
        }
    }

    // Row 3: a fresh start of each server that came up above.
    match &many_skip {
        _ if !cfg.runs(Row::Many) => {}
        Some(reason) => {
            eprintln!("bench: row 3 skipped: {reason}");
            report.notes.push(format!("row 3 skipped: {reason}"));
        }
        None => {
            let started: Vec<Kind> = cfg
                .kinds()
                .into_iter()
                .filter(|k| !failed.contains(k))
                .collect();
            for kind in started {
                if let Err(e) = measure_row3(&cfg, &site, kind, &mut report) {
                    report.note(kind, format!("row 3: failed to start: {e}"));
                    failed.push(kind);
                }
            }
        }
    }

    // Proxy rows: one origin for all of them, each server in turn in front of it.
    let mut origin_failed = false;
    if cfg.runs_proxy() {
        if let Err(e) = measure_proxy_rows(&cfg, &site, &mut report, &mut failed) {
            eprintln!("bench: proxy rows skipped: {e}");
            report.notes.push(format!("proxy rows skipped: {e}"));
            origin_failed = true;
        }
    }

    // Pool rows: three origins for all of them, each server in turn in front of the pool.
    if cfg.runs(Row::Pool) {
        if let Err(e) = measure_pool_rows(&cfg, &site, &mut report, &mut failed) {
            eprintln!("bench: pool rows: {e}");
            report.notes.push(format!("pool rows: {e}"));
            origin_failed = true;
        }
    }

    // Store rows: each server in turn, in a fresh start, with the same scripts.
    let mut store_failed = false;
    if cfg.runs(Row::Store) {
        if let Err(e) = measure_store_rows(&cfg, &site, &mut report, &mut failed) {
            eprintln!("bench: store rows: {e}");
            report.notes.push(format!("store rows: {e}"));
            store_failed = true;
        }
    }

    // Across-host rows: mpiweb alone, across two network namespaces and on one host.
    let mut hosts_failed = false;
    if cfg.runs(Row::Hosts) && cfg.wants(Kind::Mpiweb) {
        if let Err(e) = measure_hosts_rows(&cfg, &site, &mut report) {
            eprintln!("bench: hosts rows: {e}");
            report.notes.push(format!("hosts rows: {e}"));
            hosts_failed = true;
        }
    }

    report.print(&cfg);
    Ok(
        if !failed.is_empty() || origin_failed || store_failed || hosts_failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Nginx,
    Mpiweb,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Mpiweb => "mpiweb",
        }
    }
}

/// The rows (or groups of rows sharing a server lifetime) that BENCH_ONLY can pick.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Row {
    /// Rows 1-2: the small file and the 1 GiB file, served from the docroot.
    Static,
    /// Row 3: 10,000 connections at once.
    Many,
    ProxySmall,
    ProxySolo,
    ProxyBig,
    ProxyIdle,
    /// The pool rows: a pool of three origins, and failover when one dies and comes back.
    Pool,
    /// The store rows: PUT and GET of 4 KiB documents, nginx's WebDAV against mpiweb's store.
    Store,
    /// The across-host rows: ranks in two network namespaces, against one host.
    Hosts,
}

impl Row {
    const ALL: [Row; 9] = [
        Row::Static,
        Row::Many,
        Row::ProxySmall,
        Row::ProxySolo,
        Row::ProxyBig,
        Row::ProxyIdle,
        Row::Pool,
        Row::Store,
        Row::Hosts,
    ];
    const PROXY: [Row; 4] = [
        Row::ProxySmall,
        Row::ProxySolo,
        Row::ProxyBig,
        Row::ProxyIdle,
    ];

    fn name(self) -> &'static str {
        match self {
            Row::Static => "static",
            Row::Many => "many",
            Row::ProxySmall => "proxy-small",
            Row::ProxySolo => "proxy-solo",
            Row::ProxyBig => "proxy-big",
            Row::ProxyIdle => "proxy-idle",
            Row::Pool => "pool",
            Row::Store => "store",
            Row::Hosts => "hosts",
        }
    }

    /// Whether mpiweb runs under mpirun for this row (unless MPIWEB_BENCH_SOLO=1).
    fn uses_mpirun(self) -> bool {
        match self {
            Row::Static
            | Row::Many
            | Row::ProxySmall
            | Row::ProxyBig
            | Row::ProxyIdle
            | Row::Pool
            | Row::Store
            | Row::Hosts => true,
            Row::ProxySolo => false,
        }
    }

    /// Whether mpiweb runs under mpirun for this row even with MPIWEB_BENCH_SOLO=1:
    /// the store rows measure replicas on worker ranks, which a world of one has not.
    fn needs_mpirun(self) -> bool {
        matches!(self, Row::Store | Row::Hosts)
    }
}

/// BENCH_ONLY: the server (None: both) and the rows (all when it names none).
fn parse_only(text: &str) -> BoxResult<(Option<Kind>, Vec<Row>)> {
    let mut kinds = Vec::new();
    let mut rows = Vec::new();
    for word in text.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
        match word {
            "nginx" => kinds.push(Kind::Nginx),
            "mpiweb" => kinds.push(Kind::Mpiweb),
            "proxy" => rows.extend(Row::PROXY),
            _ => match Row::ALL.into_iter().find(|r| r.name() == word) {
                Some(row) => rows.push(row),
                None => {
                    let names: Vec<&str> = Row::ALL.iter().map(|r| r.name()).collect();
                    return Err(format!(
                        "BENCH_ONLY: unknown word {word:?}: expected nginx, mpiweb, proxy or {}",
                        names.join(", ")
                    )
                    .into());
                }
            },
        }
    }
    let only = match kinds.as_slice() {
        [kind] => Some(*kind),
        [first, rest @ ..] if rest.iter().all(|k| k == first) => Some(*first),
        _ => None,
    };
    if rows.is_empty() {
        rows.extend(Row::ALL);
    }
    Ok((only, rows))
}

struct Config {
    secs: u64,
    only: Option<Kind>,
    rows: Vec<Row>,
    solo: bool,
    nginx: Option<PathBuf>,
    nginx_has_e: bool,
    wrk: PathBuf,
    /// `perf`, for context switches system-wide (Debian's linux-perf);
    /// without it that column shows `-`.
    perf: Option<PathBuf>,
    mpiweb: PathBuf,
}

impl Config {
    /// Reads the environment and finds the tools; fails when a needed one is missing.
    fn from_env() -> BoxResult<Config> {
        let secs = match env::var("BENCH_SECS") {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("BENCH_SECS={s:?} is not a positive whole number"))?,
            Err(_) => 10,
        };
        let (only, rows) = parse_only(&env::var("BENCH_ONLY").unwrap_or_default())?;
        let solo = env::var("MPIWEB_BENCH_SOLO").is_ok_and(|v| v.trim() == "1");
        let wrk =
            find_program("wrk").ok_or("wrk is not installed (Debian: apt-get install -y wrk)")?;
        let mut cfg = Config {
            secs,
            only,
            rows,
            solo,
            nginx: None,
            nginx_has_e: false,
            wrk,
            perf: find_program("perf"),
            mpiweb: env::var_os("MPIWEB_BIN").map_or_else(default_mpiweb_bin, PathBuf::from),
        };
        // The proxy and pool rows need nginx as their origins even for mpiweb alone.
        if cfg.wants(Kind::Nginx) || cfg.runs_proxy() || cfg.runs(Row::Pool) || cfg.runs(Row::Hosts)
        {
            let nginx = find_program("nginx").ok_or(
                "nginx is not installed (Debian: apt-get install -y nginx-light), \
                 or set BENCH_ONLY=mpiweb,static,many",
            )?;
            cfg.nginx_has_e = nginx_supports_e(&nginx);
            cfg.nginx = Some(nginx);
        }
        if cfg.wants(Kind::Mpiweb) {
            cfg.check_mpiweb()?;
        }
        Ok(cfg)
    }

    fn wants(&self, kind: Kind) -> bool {
        self.only.is_none_or(|k| k == kind)
    }

    fn runs(&self, row: Row) -> bool {
        self.rows.contains(&row)
    }

    fn runs_proxy(&self) -> bool {
        Row::PROXY.into_iter().any(|r| self.runs(r))
    }

    /// The servers to measure, nginx first so mpiweb's figures are read against it.
    fn kinds(&self) -> Vec<Kind> {
        [Kind::Nginx, Kind::Mpiweb]
            .into_iter()
            .filter(|&k| self.wants(k))
            .collect()
    }

    /// Fails early, before the 1 GiB file is written, when mpiweb cannot be started.
    fn check_mpiweb(&self) -> BoxResult<()> {
        if !self.mpiweb.is_file() {
            return Err(format!(
                "mpiweb binary not found at {} (run `cargo build --release` first, \
                 or set BENCH_ONLY=nginx)",
                self.mpiweb.display()
            )
            .into());
        }
        let mpirun = self
            .rows
            .iter()
            .any(|r| r.needs_mpirun() || (r.uses_mpirun() && !self.solo));
        if mpirun && find_program("mpirun").is_none() {
            let hint = if self.runs(Row::Store) {
                "the store rows always need it"
            } else {
                "or set MPIWEB_BENCH_SOLO=1"
            };
            return Err(
                format!("mpirun not found (Debian: apt-get install -y mpich), {hint}").into(),
            );
        }
        Ok(())
    }
}

fn default_mpiweb_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/mpiweb")
}

/// Looks a program up in PATH, then in the sbin directories a non-root PATH may lack.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// nginx gained `-e` (error log path) in 1.19.5; without it, startup messages go to /var/log.
fn nginx_supports_e(nginx: &Path) -> bool {
    Command::new(nginx)
        .arg("-h")
        .stdin(Stdio::null())
        .output()
        .map(|out| {
            let text = [out.stdout, out.stderr].concat();
            String::from_utf8_lossy(&text).contains("-e filename")
        })
        .unwrap_or(false)
}

/// Why row 3 cannot run, if it cannot: this process needs one descriptor per connection.
fn many_skip_reason() -> Option<String> {
    match open_files_soft_limit() {
        Some(n) if n >= MANY_FDS => None,
        Some(n) => Some(format!(
            "open-file soft limit is {n}, row 3 needs {MANY_FDS}; run `ulimit -n 20000` first \
             (`make bench` does)"
        )),
        None => Some("cannot read the open-file limit from /proc/self/limits".to_string()),
    }
}

/// The soft limit from the "Max open files" line of /proc/self/limits ("unlimited" is u64::MAX).
fn open_files_soft_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

// ---------------------------------------------------------------------------
// The site both servers serve
// ---------------------------------------------------------------------------

/// A temp dir holding the docroot, nginx's config and logs; removed on drop.
struct Site {
    dir: TempDir,
    docroot: PathBuf,
}

impl Site {
    fn create() -> BoxResult<Site> {
        let dir = tempfile::Builder::new().prefix("mpiweb-bench-").tempdir()?;
        let docroot = dir.path().join("www");
        fs::create_dir(&docroot)?;
        // nginx started as root serves from workers running as nobody: they must
        // be able to walk into the temp dir (created 0700) and read the files.
        for d in [dir.path(), docroot.as_path()] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
        }
        fs::write(docroot.join("small.html"), small_html())?;
        eprintln!(
            "bench: writing the 1 GiB test file under {}",
            dir.path().display()
        );
        write_big_file(&docroot.join("big.bin"))?;
        Ok(Site { dir, docroot })
    }

    fn tmp(&self) -> &Path {
        self.dir.path()
    }
}

/// Exactly SMALL_SIZE bytes of HTML.
fn small_html() -> Vec<u8> {
    let head = "<!DOCTYPE html>\n<html><head><title>mpiweb bench</title></head><body>\n<p>";
    let tail = "</p>\n</body></html>\n";
    let filler = "The quick brown fox jumps over the lazy dog. ";
    let mut page = String::from(head);
    let fill_len = SMALL_SIZE - head.len() - tail.len();
    page.extend(filler.chars().cycle().take(fill_len));
    page.push_str(tail);
    debug_assert_eq!(page.len(), SMALL_SIZE);
    page.into_bytes()
}

/// Writes BIG_SIZE bytes of non-zero data (no holes: a sparse file would be served from zero pages).
fn write_big_file(path: &Path) -> BoxResult<()> {
    let mut file = File::create(path)?;
    // Bytes 1..=251: never zero, and the pattern does not line up with pages.
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8 + 1).collect();
    for _ in 0..BIG_SIZE / CHUNK as u64 {
        file.write_all(&chunk)?;
    }
    // Flush to disk now so writeback does not run during the first measurements.
    file.sync_all()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

/// A server we started; stopped (with everything it spawned) when dropped.
struct Server {
    kind: Kind,
    /// What it is called in messages: "nginx", "origin nginx", "mpiweb proxy", ...
    label: String,
    child: Child,
    port: u16,
    /// mpiweb's rank 0 as it reports itself; nginx's master is `child` itself.
    rank0_pid: Option<u32>,
    /// Last bytes of mpiweb's output, for error messages.
    output_tail: Option<Arc<Mutex<Vec<u8>>>>,
    /// nginx's error log.
    error_log: Option<PathBuf>,
    stopped: bool,
}

impl Server {
    /// Starts a server for rows 1-3: serving the docroot.
    fn start(cfg: &Config, site: &Site, kind: Kind) -> BoxResult<Server> {
        match kind {
            Kind::Nginx => start_nginx(cfg, site, NginxRole::Static),
            Kind::Mpiweb => start_mpiweb(cfg, site, &MpiwebLaunch::static_files(cfg)),
        }
    }

    /// Starts a server for a proxy row: everything goes to the origin on `origin_port`.
    /// `solo` starts mpiweb without mpirun (MPIWEB_BENCH_SOLO=1 makes every start solo).
    fn start_proxy(
        cfg: &Config,
        site: &Site,
        kind: Kind,
        solo: bool,
        origin_port: u16,
    ) -> BoxResult<Server> {
        match kind {
            Kind::Nginx => start_nginx(
                cfg,
                site,
                NginxRole::Proxy {
                    upstream: origin_port,
                },
            ),
            Kind::Mpiweb => {
                let launch = MpiwebLaunch {
                    solo: solo || cfg.solo,
                    route: Some(format!("/=http://127.0.0.1:{origin_port}")),
                    store: None,
                    store_cache_off: false,
                };
                start_mpiweb(cfg, site, &launch)
            }
        }
    }

    /// Starts a server for the pool rows: everything goes to a pool of the origins on `ports`.
    fn start_pool(cfg: &Config, site: &Site, kind: Kind, ports: [u16; 3]) -> BoxResult<Server> {
        match kind {
            Kind::Nginx => start_nginx(cfg, site, NginxRole::PoolProxy { upstreams: ports }),
            Kind::Mpiweb => {
                let urls: Vec<String> = ports
                    .iter()
                    .map(|p| format!("http://127.0.0.1:{p}"))
                    .collect();
                let launch = MpiwebLaunch {
                    solo: cfg.solo,
                    route: Some(format!(
                        "/ {} health=/small.html interval=1s timeout=1s",
                        urls.join(" ")
                    )),
                    store: None,
                    store_cache_off: false,
                };
                start_mpiweb(cfg, site, &launch)
            }
        }
    }

    /// Starts a server for the store rows, on an empty store: nginx with WebDAV
    /// PUT and DELETE under STORE_PREFIX, mpiweb with `--store` under `mpirun -np 4`.
    fn start_store(cfg: &Config, site: &Site, kind: Kind) -> BoxResult<Server> {
        match kind {
            Kind::Nginx => {
                let root = store_nginx_root(site);
                if root.exists() {
                    fs::remove_dir_all(&root)?;
                }
                // Its worker runs as nobody when started as root: it creates the documents.
                let dir = root.join(STORE_PREFIX.trim_matches('/'));
                fs::create_dir_all(&dir)?;
                for (d, mode) in [
                    (NginxRole::Store.dir(site), 0o755),
                    (root, 0o755),
                    (dir, 0o777),
                ] {
                    fs::set_permissions(d, fs::Permissions::from_mode(mode))?;
                }
                start_nginx(cfg, site, NginxRole::Store)
            }
            Kind::Mpiweb => {
                let data = store_mpiweb_data(site);
                if data.exists() {
                    fs::remove_dir_all(&data)?;
                }
                let launch = MpiwebLaunch {
                    solo: false,
                    route: None,
                    store: Some(data),
                    store_cache_off: false,
                };
                start_mpiweb(cfg, site, &launch)
            }
        }
    }

    /// Polls until a GET of the small file is answered, failing if the process exits.
    fn wait_ready(&mut self) -> BoxResult<()> {
        self.wait_ready_at(loopback(self.port))
    }

    /// The same at `addr` (a call from another network namespace).
    fn wait_ready_at(&mut self, addr: SocketAddr) -> BoxResult<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("{} exited during startup ({status})", self.label).into());
            }
            if http_get_at(addr, "/small.html", true, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not answer at {addr} within {START_TIMEOUT:?}",
                    self.label
                )
                .into());
            }
            thread::sleep(POLL);
        }
    }

    /// Peak RSS in MiB: nginx's master plus its workers, or mpiweb's rank 0.
    fn peak_rss_mib(&self) -> Option<f64> {
        let pids = match self.kind {
            Kind::Nginx => {
                let master = self.child.id();
                let mut pids = children_of(master);
                pids.push(master);
                pids
            }
            Kind::Mpiweb => vec![self.rank0_pid.unwrap_or_else(|| self.child.id())],
        };
        let kib: Option<u64> = pids.iter().map(|&p| vm_hwm_kib(p)).sum();
        kib.map(|k| k as f64 / 1024.0)
    }

    /// Peak RSS in MiB of what faces the clients: nginx's worker, or mpiweb's rank 0.
    fn front_peak_rss_mib(&self) -> Option<f64> {
        let pids = match self.kind {
            Kind::Nginx => children_of(self.child.id()),
            Kind::Mpiweb => vec![self.rank0_pid.unwrap_or_else(|| self.child.id())],
        };
        let kib: Option<u64> = pids.iter().map(|&p| vm_hwm_kib(p)).sum();
        kib.filter(|_| !pids.is_empty()).map(|k| k as f64 / 1024.0)
    }

    /// Peak RSS in MiB of each mpiweb rank but rank 0 (none for nginx or a world of one).
    fn other_ranks_peak_rss_mib(&self) -> Vec<f64> {
        let Some(rank0) = self.rank0_pid.filter(|_| self.kind == Kind::Mpiweb) else {
            return Vec::new();
        };
        let comm = proc_stat(rank0).map(|s| s.comm).unwrap_or_default();
        let mut ranks: Vec<u32> = descendants(self.child.id())
            .into_iter()
            .map(|(pid, _)| pid)
            .filter(|&pid| pid != rank0 && proc_stat(pid).is_some_and(|s| s.comm == comm))
            .collect();
        ranks.sort_unstable();
        ranks
            .into_iter()
            .filter_map(|pid| Some(vm_hwm_kib(pid)? as f64 / 1024.0))
            .collect()
    }

    /// What the server complained about: nginx's error log lines at level error
    /// or worse, mpiweb's warn and error lines (from the last 4 KiB of its output).
    fn complaints(&self) -> Option<String> {
        let (text, source) = match &self.error_log {
            Some(path) => (fs::read_to_string(path).unwrap_or_default(), "error.log"),
            None => (self.output_tail(), "output"),
        };
        let marks = ["[error]", "[crit]", "[alert]", "[emerg]", " WARN", " ERROR"];
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| marks.iter().any(|m| l.contains(m)))
            .collect();
        let last = lines.last()?;
        Some(format!(
            "{} complaint line(s) in its {source}, the last: {}",
            lines.len(),
            last.trim()
        ))
    }

    fn output_tail(&self) -> String {
        let Some(tail) = &self.output_tail else {
            return String::new();
        };
        let bytes = tail.lock().map(|t| t.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// SIGTERM, a grace period, then SIGKILL; then reaps whatever it had spawned.
    ///
    /// nginx's master and mpirun both stop their children on SIGTERM, but a
    /// hard kill would orphan them (still holding the port, or spinning), so
    /// the process tree is noted first and leftovers are killed by pid.
    fn stop(&mut self) {
        self.stop_timed();
    }

    /// `stop`, timed: how long the launched process took to exit after
    /// SIGTERM, and its status (None: killed after STOP_GRACE). None when
    /// it was stopped before.
    fn stop_timed(&mut self) -> Option<(Duration, Option<ExitStatus>)> {
        if self.stopped {
            return None;
        }
        self.stopped = true;
        let pid = self.child.id();
        let tree = descendants(pid);
        signal(pid, "TERM");
        let t0 = Instant::now();
        let exited = wait_child(&mut self.child, STOP_GRACE);
        let took = t0.elapsed();
        let status = self.child.try_wait().ok().flatten().filter(|_| exited);
        if !exited {
            eprintln!(
                "bench: {} ignored SIGTERM for {STOP_GRACE:?}; killing it",
                self.label
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        kill_leftovers(&tree);
        Some((took, status))
    }

    /// SIGKILL to the server's own pid, with no grace, then reaps it.
    ///
    /// Only for a server that is one process (the pool origins run with
    /// `master_process off`): a killed nginx master would orphan its workers.
    fn kill(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // Child::kill sends SIGKILL to this child's pid, still ours as it is not
        // reaped yet; `stopped` keeps stop() from signalling the pid once it is.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reserves a free loopback port: bind port 0, read it, let it go.
fn free_port() -> BoxResult<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// What an nginx instance is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum NginxRole {
    /// Rows 1-3: serves the docroot.
    Static,
    /// The upstream of the proxy rows: serves the docroot, without an access log.
    Origin,
    /// A proxy rows' server: passes every request to the origin on `upstream`.
    Proxy { upstream: u16 },
    /// One of the pool rows' three origins: the origin's config in one process;
    /// `logged`: with an access log of the failover run's requests (B after its restart).
    PoolOrigin { member: Member, logged: bool },
    /// The pool rows' nginx: passes every request to the pool of the origins on `upstreams`.
    PoolProxy { upstreams: [u16; 3] },
    /// The store rows' nginx: WebDAV PUT and DELETE under STORE_PREFIX, in its own root.
    Store,
}

/// The three origins of the pool rows; B is the one killed and started again.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Member {
    A,
    B,
    C,
}

impl Member {
    fn letter(self) -> &'static str {
        match self {
            Member::A => "a",
            Member::B => "b",
            Member::C => "c",
        }
    }
}

impl NginxRole {
    fn label(self) -> &'static str {
        match self {
            NginxRole::Static => "nginx",
            NginxRole::Origin => "origin nginx",
            NginxRole::Proxy { .. } => "nginx proxy",
            NginxRole::PoolOrigin { member, .. } => match member {
                Member::A => "origin nginx A",
                Member::B => "origin nginx B",
                Member::C => "origin nginx C",
            },
            NginxRole::PoolProxy { .. } => "nginx pool proxy",
            NginxRole::Store => "nginx dav",
        }
    }

    /// Where its config, pid file and logs go: rows 1-3 keep the top of the temp dir.
    fn dir(self, site: &Site) -> PathBuf {
        match self {
            NginxRole::Static => site.tmp().to_path_buf(),
            NginxRole::Origin => site.tmp().join("origin"),
            NginxRole::Proxy { .. } => site.tmp().join("proxy"),
            NginxRole::PoolOrigin { member, .. } => {
                site.tmp().join(format!("pool-{}", member.letter()))
            }
            NginxRole::PoolProxy { .. } => site.tmp().join("pool-proxy"),
            NginxRole::Store => site.tmp().join("store-nginx"),
        }
    }
}

fn nginx_conf(site: &Site, role: NginxRole, dir: &Path, port: u16) -> String {
    let tmp = dir.display();
    let root = site.docroot.display();
    // The origin logs nothing: its log would cost both proxies' rows the same,
    // and only the proxies' own logging is compared (mpiweb's stderr).
    let access_log = match role {
        NginxRole::Static
        | NginxRole::Proxy { .. }
        | NginxRole::PoolProxy { .. }
        | NginxRole::Store => format!("access_log {tmp}/access.log;"),
        NginxRole::Origin | NginxRole::PoolOrigin { logged: false, .. } => {
            "access_log off;".to_string()
        }
        // Only what the failover run's wrk sent counts, by its header: not the
        // readiness probe, not mpiweb's health checks. See parse_failover_log.
        NginxRole::PoolOrigin { logged: true, .. } => format!(
            "log_format failover '$msec $http_x_bench';\n\
             \x20   access_log {tmp}/access.log failover;"
        ),
    };
    // A pool origin is one process, so that killing its pid kills the whole server.
    let master_process = match role {
        NginxRole::PoolOrigin { .. } => "off",
        NginxRole::Static
        | NginxRole::Origin
        | NginxRole::Proxy { .. }
        | NginxRole::PoolProxy { .. }
        | NginxRole::Store => "on",
    };
    let server = match role {
        NginxRole::Static | NginxRole::Origin | NginxRole::PoolOrigin { .. } => {
            format!("server {{ listen 127.0.0.1:{port}; root {root}; }}")
        }
        // Connections to the origin are kept alive (HTTP/1.1, no "Connection:
        // close"), as mpiweb's pool does. proxy_max_temp_file_size 0: a 1 GiB
        // response is passed on as it arrives instead of being spooled to a
        // temp file on disk; every other proxy setting is nginx's default
        // (proxy_buffering on, proxy_buffers 8 4k|8k).
        NginxRole::Proxy { upstream } => format!(
            "proxy_temp_path {tmp}/proxy_temp;\n\
             \x20   upstream up {{ server 127.0.0.1:{upstream}; keepalive 32; }}\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port};\n\
             \x20       location / {{\n\
             \x20           proxy_pass http://up;\n\
             \x20           proxy_http_version 1.1;\n\
             \x20           proxy_set_header Connection \"\";\n\
             \x20           proxy_max_temp_file_size 0;\n\
             \x20       }}\n\
             \x20   }}"
        ),
        // The proxy row's settings, to a pool of three with nginx's passive
        // checks set as mpiweb's defaults are (max-fails=1 fail-timeout=10s).
        NginxRole::PoolProxy {
            upstreams: [a, b, c],
        } => format!(
            "proxy_temp_path {tmp}/proxy_temp;\n\
             \x20   upstream pool {{\n\
             \x20       server 127.0.0.1:{a} max_fails=1 fail_timeout=10s;\n\
             \x20       server 127.0.0.1:{b} max_fails=1 fail_timeout=10s;\n\
             \x20       server 127.0.0.1:{c} max_fails=1 fail_timeout=10s;\n\
             \x20       keepalive 32;\n\
             \x20   }}\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port};\n\
             \x20       location / {{\n\
             \x20           proxy_pass http://pool;\n\
             \x20           proxy_http_version 1.1;\n\
             \x20           proxy_set_header Connection \"\";\n\
             \x20           proxy_max_temp_file_size 0;\n\
             \x20       }}\n\
             \x20   }}"
        ),
        // WebDAV's PUT writes the body to a file under client_body_temp_path (on
        // the same file system), then renames it into place: no fsync anywhere.
        // The docroot elsewhere, so that the readiness probe finds the small file.
        NginxRole::Store => format!(
            "server {{\n\
             \x20       listen 127.0.0.1:{port};\n\
             \x20       root {root};\n\
             \x20       location {STORE_PREFIX} {{\n\
             \x20           root {store_root};\n\
             \x20           dav_methods PUT DELETE;\n\
             \x20           create_full_put_path on;\n\
             \x20           client_max_body_size 1m;\n\
             \x20       }}\n\
             \x20   }}",
            store_root = store_nginx_root(site).display()
        ),
    };
    format!(
        "daemon off;\n\
         master_process {master_process};\n\
         worker_processes 1;\n\
         worker_rlimit_nofile 20000;\n\
         pid {tmp}/nginx.pid;\n\
         error_log {tmp}/error.log;\n\
         events {{ worker_connections 20000; }}\n\
         http {{\n\
         \x20   types {{ text/html html; }}\n\
         \x20   default_type application/octet-stream;\n\
         \x20   {access_log}\n\
         \x20   client_body_temp_path {tmp}/client_body;\n\
         \x20   sendfile on;\n\
         \x20   tcp_nopush on;\n\
         \x20   keepalive_requests 100000;\n\
         \x20   keepalive_timeout 65;\n\
         \x20   {server}\n\
         }}\n"
    )
}

fn start_nginx(cfg: &Config, site: &Site, role: NginxRole) -> BoxResult<Server> {
    start_nginx_on(cfg, site, role, free_port()?)
}

/// Starts nginx on a given port: a free one, or the port of a pool origin started again.
fn start_nginx_on(cfg: &Config, site: &Site, role: NginxRole, port: u16) -> BoxResult<Server> {
    eprintln!("bench: starting {}", role.label());
    let nginx = cfg.nginx.as_ref().ok_or("nginx was not looked up")?;
    let dir = role.dir(site);
    fs::create_dir_all(&dir)?;
    // Workers run as nobody when started as root: they create the temp dirs below.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    if role != NginxRole::Static {
        // A fresh log per start, so that its complaints are this row's.
        let _ = fs::remove_file(dir.join("error.log"));
    }
    if let NginxRole::PoolOrigin { logged: true, .. } = role {
        // The same for B's access log: what it holds is this failover run's.
        let _ = fs::remove_file(dir.join("access.log"));
    }
    let conf = dir.join("nginx.conf");
    fs::write(&conf, nginx_conf(site, role, &dir, port))?;
    // Its output goes to a file: nothing reads it unless startup fails.
    let out_path = dir.join("nginx.out");
    let out = File::create(&out_path)?;
    let mut cmd = Command::new(nginx);
    cmd.arg("-c").arg(&conf).arg("-p").arg(&dir);
    if cfg.nginx_has_e {
        cmd.arg("-e").arg(dir.join("error.log"));
    }
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let child = cmd.spawn()?;
    let mut server = Server {
        kind: Kind::Nginx,
        label: role.label().to_string(),
        child,
        port,
        rank0_pid: None,
        output_tail: None,
        error_log: Some(dir.join("error.log")),
        stopped: false,
    };
    server.wait_ready().map_err(|e| {
        let out = fs::read_to_string(&out_path).unwrap_or_default();
        let log = fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        format!("{e}\nnginx output:\n{out}\nnginx error.log:\n{log}")
    })?;
    Ok(server)
}

/// Spawns mpiweb (under mpirun unless solo) with stdout and stderr on one pipe.
///
/// mpiweb logs to stderr; mpirun reports a rank's failure on stdout: one pipe
/// keeps both, in order, for the error message if startup fails.
fn spawn_mpiweb(
    cfg: &Config,
    site: &Site,
    launch: &MpiwebLaunch,
) -> BoxResult<(Child, io::PipeReader)> {
    let mut cmd = if launch.solo {
        Command::new(&cfg.mpiweb)
    } else {
        let ranks = if launch.store.is_some() {
            STORE_RANKS
        } else {
            RANKS
        };
        let mut c = Command::new("mpirun");
        c.arg("-np").arg(ranks).arg(&cfg.mpiweb);
        c
    };
    // As users start it: access lines on stderr (in batches), which under
    // mpirun pass through the launcher's processes; nginx writes its
    // access file.
    cmd.arg("-l").arg("127.0.0.1:0");
    if let Some(route) = &launch.route {
        cmd.arg("--route").arg(route);
    }
    // On loopback, so writes need no --store-token.
    if let Some(data) = &launch.store {
        cmd.arg("--store")
            .arg(STORE_PREFIX)
            .arg("--data")
            .arg(data)
            .arg("--replicas")
            .arg(STORE_REPLICAS.to_string());
        if launch.store_cache_off {
            cmd.args(["--store-cache", "0"]);
        }
    }
    cmd.arg(&site.docroot);
    spawn_piped(cmd)
}

/// Spawns `cmd` with stdout and stderr on one pipe, and no stdin.
fn spawn_piped(mut cmd: Command) -> BoxResult<(Child, io::PipeReader)> {
    let (reader, writer) = io::pipe()?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let child = cmd.spawn()?;
    // `cmd` holds the pipe's write end: drop it, or the reader never sees EOF.
    drop(cmd);
    Ok((child, reader))
}

/// How mpiweb is started.
struct MpiwebLaunch {
    /// Without mpirun: a world of one rank.
    solo: bool,
    /// A `--route` value; None serves the docroot only.
    route: Option<String>,
    /// The store rows: `--store STORE_PREFIX --data DIR --replicas STORE_REPLICAS`
    /// with this DIR, under `mpirun -np STORE_RANKS`.
    store: Option<PathBuf>,
    /// `--store-cache 0`: every read of a document goes to a replica.
    store_cache_off: bool,
}

impl MpiwebLaunch {
    fn static_files(cfg: &Config) -> MpiwebLaunch {
        MpiwebLaunch {
            solo: cfg.solo,
            route: None,
            store: None,
            store_cache_off: false,
        }
    }

    fn label(&self) -> String {
        if self.store.is_some() {
            return "mpiweb store".to_string();
        }
        match (&self.route, self.solo) {
            (None, _) => "mpiweb".to_string(),
            (Some(_), false) => "mpiweb proxy".to_string(),
            (Some(_), true) => "mpiweb proxy (alone)".to_string(),
        }
    }
}

fn start_mpiweb(cfg: &Config, site: &Site, launch: &MpiwebLaunch) -> BoxResult<Server> {
    let label = launch.label();
    eprintln!("bench: starting {label}");
    let (child, output) = spawn_mpiweb(cfg, site, launch)?;
    let mut server = listening_mpiweb(label, child, output)?;
    if let Err(e) = server.wait_ready() {
        return Err(format!("{e}\nmpiweb output (last lines):\n{}", server.output_tail()).into());
    }
    if server.rank0_pid.is_none() {
        eprintln!("bench: mpiweb did not print its pid; RSS will be that of the launcher");
    }
    eprintln!(
        "bench: {} on port {} (rank 0 pid {:?})",
        server.label, server.port, server.rank0_pid
    );
    Ok(server)
}

/// A spawned mpiweb (or its launcher) as a Server, once it printed its
/// `listening on` line; its output is drained from here on.
fn listening_mpiweb(label: String, child: Child, output: io::PipeReader) -> BoxResult<Server> {
    let tail = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let tail2 = Arc::clone(&tail);
    thread::spawn(move || drain_mpiweb_output(output, tx, tail2));
    let mut server = Server {
        kind: Kind::Mpiweb,
        label,
        child,
        port: 0,
        rank0_pid: None,
        output_tail: Some(tail),
        error_log: None,
        stopped: false,
    };
    match wait_listening(&mut server, &rx) {
        Ok((port, pid)) => {
            server.port = port;
            server.rank0_pid = pid;
            Ok(server)
        }
        Err(e) => Err(format!("{e}\nmpiweb output (last lines):\n{}", server.output_tail()).into()),
    }
}

/// Waits for the drain thread to report the "listening on" line.
fn wait_listening(
    server: &mut Server,
    rx: &mpsc::Receiver<(u16, Option<u32>)>,
) -> BoxResult<(u16, Option<u32>)> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(found) => return Ok(found),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Its output ended: it is exiting, so its status says why.
                wait_child(&mut server.child, Duration::from_secs(5));
                let status = server.child.try_wait()?.map(|s| s.to_string());
                let status = status.unwrap_or_else(|| "still running".to_string());
                return Err(format!(
                    "mpiweb closed its output without printing `listening on` ({status})"
                )
                .into());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(status) = server.child.try_wait()? {
            return Err(format!("mpiweb exited during startup ({status})").into());
        }
        if Instant::now() >= deadline {
            return Err(
                format!("mpiweb printed no `listening on` line within {START_TIMEOUT:?}").into(),
            );
        }
    }
}

/// Reads mpiweb's output for the whole run so the pipe never fills.
///
/// Lines are parsed only until the `listening on` line; after that (one access
/// log line per request) the bytes are read in big blocks and only the last
/// few KiB are kept, so the drain costs little CPU during measurements.
fn drain_mpiweb_output(
    output: impl Read,
    tx: mpsc::Sender<(u16, Option<u32>)>,
    tail: Arc<Mutex<Vec<u8>>>,
) {
    const KEEP: usize = 4096;
    let keep = |bytes: &[u8]| {
        if let Ok(mut t) = tail.lock() {
            t.extend_from_slice(bytes);
            if t.len() > KEEP {
                let cut = t.len() - KEEP;
                t.drain(..cut);
            }
        }
    };
    let mut reader = BufReader::with_capacity(1 << 16, output);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => keep(&line),
        }
        if let Some(found) = parse_listening(&String::from_utf8_lossy(&line)) {
            let _ = tx.send(found);
            break;
        }
    }
    drop(tx);
    let mut block = vec![0u8; 1 << 16];
    loop {
        match reader.read(&mut block) {
            Ok(0) | Err(_) => return,
            Ok(n) => keep(&block[..n]),
        }
    }
}

/// Parses `... listening on http://127.0.0.1:PORT/ (pid N, ...)` into (PORT, N).
fn parse_listening(line: &str) -> Option<(u16, Option<u32>)> {
    const MARK: &str = "listening on http://";
    let rest = &line[line.find(MARK)? + MARK.len()..];
    let authority = rest.split(|c: char| c == '/' || c.is_whitespace()).next()?;
    let port = authority.rsplit(':').next()?.parse().ok()?;
    Some((port, parse_pid(line)))
}

/// The number after a standalone word `pid` (as in `pid 123`, `pid=123`, `pid: 123`).
fn parse_pid(line: &str) -> Option<u32> {
    line.match_indices("pid").find_map(|(at, _)| {
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        let after = line[at + 3..].trim_start_matches([' ', ':', '=']);
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

// ---------------------------------------------------------------------------
// Processes: signals, trees, memory
// ---------------------------------------------------------------------------

/// Sends a signal by running kill(1): std has no signal API.
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits for the child to exit; false if it is still running at the end.
fn wait_child(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            _ => return false,
        }
    }
}

/// A process identity that survives pid reuse: (pid, start time in clock ticks).
type ProcId = (u32, u64);

/// What /proc/PID/stat says about a process.
struct Stat {
    /// The command name (at most 15 bytes), e.g. "mpiweb", "nginx", "hydra_pmi_proxy".
    comm: String,
    ppid: u32,
    /// Start time in clock ticks since boot: with the pid, names the process for good.
    start: u64,
    /// Exited and waiting to be reaped: nothing left to stop.
    zombie: bool,
    /// CPU time used so far, user plus system, in clock ticks (all threads).
    cpu_ticks: u64,
}

fn proc_stat(pid: u32) -> Option<Stat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let close = stat.rfind(')')?;
    let comm = stat[stat.find('(')? + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) ... starttime(19).
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Stat {
        comm,
        cpu_ticks: ticks(11)? + ticks(12)?,
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
        zombie: matches!(*fields.first()?, "Z" | "X"),
    })
}

/// Every process that has not exited, by pid.
fn process_table() -> HashMap<u32, Stat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .filter(|(_, stat)| !stat.zombie)
        .collect()
}

fn children_of(pid: u32) -> Vec<u32> {
    process_table()
        .into_iter()
        .filter(|(_, stat)| stat.ppid == pid)
        .map(|(p, _)| p)
        .collect()
}

/// All processes below `root`, each with its start time.
fn descendants(root: u32) -> Vec<ProcId> {
    let table = process_table();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (&pid, stat) in &table {
            if stat.ppid == parent {
                found.push((pid, stat.start));
                frontier.push(pid);
            }
        }
    }
    found
}

/// Kills, by pid, processes of a stopped server that are still alive (and are still the same processes).
fn kill_leftovers(tree: &[ProcId]) {
    let alive = |&(pid, start): &ProcId| {
        proc_stat(pid).is_some_and(|stat| stat.start == start && !stat.zombie)
    };
    // Their parent's SIGTERM handling may still be finishing: give them a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while tree.iter().any(alive) && Instant::now() < deadline {
        thread::sleep(POLL);
    }
    for proc_id in tree.iter().filter(|p| alive(p)) {
        eprintln!("bench: killing leftover process {}", proc_id.0);
        signal(proc_id.0, "KILL");
    }
}

/// VmHWM (peak resident set) of a process in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line["VmHWM:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------
// A small HTTP client
// ---------------------------------------------------------------------------

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn get_request(port: u16, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: mpiweb-bench\r\n\r\n")
}

/// What the status line and headers of a response say.
struct Head {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    /// Bytes up to and including the blank line.
    len: usize,
}

/// Parses a response head once it is complete; a malformed one gets status 0.
fn parse_head(buf: &[u8]) -> Option<Head> {
    let len = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..len]);
    let mut lines = text.split("\r\n");
    let mut status_line = lines.next().unwrap_or("").split_whitespace();
    let status = match (status_line.next(), status_line.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code.parse().unwrap_or(0),
        _ => 0,
    };
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
        len,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    Some(head)
}

/// How one response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// 200 with the whole body of the expected length.
    Ok,
    /// A complete response with another status.
    BadStatus(u16),
    /// A complete 200 whose body length is not the file's.
    BadLength,
    /// The connection closed before the response was complete.
    Truncated,
    /// Reset or another socket error.
    Error,
    /// No complete response by the deadline.
    TimedOut,
}

/// Judges the bytes read so far; None while more are needed.
fn judge(buf: &[u8], eof: bool, expected: u64) -> Option<Outcome> {
    let Some(head) = parse_head(buf) else {
        return eof.then_some(Outcome::Truncated);
    };
    if head.status == 0 {
        // Not HTTP: no point waiting for a body.
        return Some(Outcome::BadStatus(0));
    }
    let body = (buf.len() - head.len) as u64;
    let verdict = |len_ok: bool| {
        if head.status != 200 {
            Outcome::BadStatus(head.status)
        } else if len_ok {
            Outcome::Ok
        } else {
            Outcome::BadLength
        }
    };
    if let Some(len) = head.content_length {
        return if body >= len {
            Some(verdict(len == expected))
        } else {
            eof.then_some(Outcome::Truncated)
        };
    }
    if head.chunked {
        // Not decoded: the last-chunk marker is enough to know it is complete.
        return if buf.ends_with(b"0\r\n\r\n") {
            Some(verdict(true))
        } else {
            eof.then_some(Outcome::Truncated)
        };
    }
    // Neither: the body runs to the end of the connection.
    eof.then(|| verdict(body == expected))
}

/// Result of a single GET, used to check a server before measuring it.
struct Reply {
    status: u16,
    content_length: Option<u64>,
    body_len: u64,
}

/// One GET on a fresh connection; with `want_body` false it returns once the head is in.
fn http_get(port: u16, path: &str, want_body: bool, timeout: Duration) -> BoxResult<Reply> {
    http_get_at(loopback(port), path, want_body, timeout)
}

/// The same at `addr`.
fn http_get_at(
    addr: SocketAddr,
    path: &str,
    want_body: bool,
    timeout: Duration,
) -> BoxResult<Reply> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(get_request(addr.port(), path).as_bytes())?;
    let mut buf = Vec::new();
    let mut block = [0u8; 16 * 1024];
    loop {
        if let Some(head) = parse_head(&buf) {
            let body_len = (buf.len() - head.len) as u64;
            let done = !want_body || head.content_length.is_some_and(|n| body_len >= n);
            if done {
                return Ok(Reply {
                    status: head.status,
                    content_length: head.content_length,
                    body_len,
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("GET {path}: no complete response within {timeout:?}").into());
        }
        let n = stream.read(&mut block)?;
        if n == 0 {
            return Err(format!("GET {path}: connection closed before a complete response").into());
        }
        buf.extend_from_slice(&block[..n]);
    }
}

/// A whole response of `http_request`.
struct FullReply {
    status: u16,
    /// Header fields in the order received, names as sent.
    headers: Vec<(String, String)>,
    /// The body, de-chunked.
    body: Vec<u8>,
}

impl FullReply {
    /// The first header field of that name (any case).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`), with a body by Content-Length
/// when given; reads the whole response, within `timeout`.
fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> BoxResult<FullReply> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&loopback(port), timeout)?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: mpiweb-bench\r\n\
         Connection: close\r\n"
    );
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&bytes)?;
    let mut buf = Vec::new();
    let mut block = [0u8; 16 * 1024];
    loop {
        if let Some(reply) = complete_reply(method, &buf, false) {
            return Ok(reply);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{method} {path}: no complete response within {timeout:?}").into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut block) {
            Ok(0) => {
                return complete_reply(method, &buf, true).ok_or_else(|| {
                    format!("{method} {path}: connection closed before a complete response").into()
                });
            }
            Ok(n) => buf.extend_from_slice(&block[..n]),
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{method} {path}: {e}").into()),
        }
    }
}

/// The response in `buf` once it is complete (`eof`: the connection has closed).
fn complete_reply(method: &str, buf: &[u8], eof: bool) -> Option<FullReply> {
    let head = parse_head(buf)?;
    let rest = &buf[head.len..];
    let no_body =
        method == "HEAD" || matches!(head.status, 100..=199 | 204 | 304) || head.status == 0;
    let body = if no_body {
        Vec::new()
    } else if let Some(len) = head.content_length {
        let len = usize::try_from(len).ok()?;
        rest.get(..len)?.to_vec()
    } else if head.chunked {
        dechunk(rest)?
    } else if eof {
        rest.to_vec()
    } else {
        return None;
    };
    let text = String::from_utf8_lossy(&buf[..head.len]);
    let headers = text
        .split("\r\n")
        .skip(1)
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_string(), value.trim().to_string()))
        })
        .collect();
    Some(FullReply {
        status: head.status,
        headers,
        body,
    })
}

/// The body of a chunked message once it is whole (None while more is needed, or malformed).
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = line.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            // The trailer section: empty, or fields up to a blank line.
            let done = data.starts_with(b"\r\n") || data.windows(4).any(|w| w == b"\r\n\r\n");
            return done.then_some(body);
        }
        if data.len() < size + 2 || &data[size..size + 2] != b"\r\n" {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Checks that the small file (and with `with_big` the head of the big one) is
/// served as expected; returns what is wrong, if anything.
fn sanity_check(port: u16, with_big: bool) -> Vec<String> {
    let timeout = Duration::from_secs(5);
    let mut problems = Vec::new();
    match http_get(port, "/small.html", true, timeout) {
        Ok(r) if r.status == 200 && r.body_len == SMALL_SIZE as u64 => {}
        Ok(r) => problems.push(format!(
            "GET /small.html gave status {} with a {}-byte body (expected 200, {SMALL_SIZE})",
            r.status, r.body_len
        )),
        Err(e) => problems.push(format!("GET /small.html failed: {e}")),
    }
    if !with_big {
        return problems;
    }
    match http_get(port, "/big.bin", false, timeout) {
        Ok(r) if r.status == 200 && r.content_length == Some(BIG_SIZE) => {}
        Ok(r) => problems.push(format!(
            "GET /big.bin gave status {} with Content-Length {:?} (expected 200, {BIG_SIZE})",
            r.status, r.content_length
        )),
        Err(e) => problems.push(format!("GET /big.bin failed: {e}")),
    }
    problems
}

// ---------------------------------------------------------------------------
// Rows 1-2: wrk
// ---------------------------------------------------------------------------

/// What one wrk run reported.
#[derive(Clone, Debug, Default)]
struct WrkFigures {
    req_per_sec: f64,
    mib_per_sec: f64,
    /// "Non-2xx or 3xx responses" and the nonzero "Socket errors", e.g. "non-2xx 3, read 2".
    errors: Vec<String>,
    /// The same as one number: non-2xx responses plus connect, read, write and timeout errors.
    error_count: u64,
    /// Median latency in microseconds: the "50%" line of "Latency Distribution" (`--latency`).
    p50_us: Option<f64>,
    /// Requests wrk completed ("N requests in ...").
    requests: u64,
    /// CPU time of the server's whole process tree per request, in µs (`run_wrk_costed`).
    cpu_us_per_req: Option<f64>,
    /// Context switches of the whole machine per request (`perf stat -a`).
    cs_per_req: Option<f64>,
}

impl WrkFigures {
    fn errors_cell(&self) -> String {
        if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors.join(", ")
        }
    }
}

fn run_wrk(
    cfg: &Config,
    port: u16,
    path: &str,
    conns: u32,
    timeout_secs: u64,
) -> BoxResult<WrkFigures> {
    run_wrk_with(cfg, port, path, conns, timeout_secs, &[])
}

/// One connection, one request at a time, for cfg.secs: the figures with the median latency.
/// Prints what a one-connection run measured, under `label`.
fn say_one_conn(label: &str, w: &WrkFigures) {
    eprintln!(
        "bench: {label}:   median {:.0} µs, {:.0} req/s, errors: {}",
        w.p50_us.unwrap_or_default(),
        w.req_per_sec,
        w.errors_cell()
    );
}

fn run_wrk_one_conn(cfg: &Config, port: u16, path: &str) -> BoxResult<WrkFigures> {
    run_wrk_one_conn_with(cfg, port, path, &[])
}

/// The same with more arguments for wrk (a Lua script).
fn run_wrk_one_conn_with(
    cfg: &Config,
    port: u16,
    path: &str,
    extra: &[&str],
) -> BoxResult<WrkFigures> {
    let mut args = extra.to_vec();
    args.push("--latency");
    let w = run_wrk_with(cfg, port, path, 1, 5, &args)?;
    if w.p50_us.is_none() {
        return Err("wrk --latency printed no median".into());
    }
    Ok(w)
}

fn run_wrk_with(
    cfg: &Config,
    port: u16,
    path: &str,
    conns: u32,
    timeout_secs: u64,
    extra: &[&str],
) -> BoxResult<WrkFigures> {
    run_wrk_for(cfg, port, path, conns, cfg.secs, timeout_secs, extra)
}

/// One wrk run of `secs` seconds (BENCH_SECS but for the failover run), bounded in time.
fn run_wrk_for(
    cfg: &Config,
    port: u16,
    path: &str,
    conns: u32,
    secs: u64,
    timeout_secs: u64,
    extra: &[&str],
) -> BoxResult<WrkFigures> {
    let url = format!("http://127.0.0.1:{port}{path}");
    run_wrk_cmd(
        Command::new(&cfg.wrk),
        &url,
        conns,
        secs,
        timeout_secs,
        extra,
    )
}

/// `cmd` (wrk, or a command that runs it) with wrk's arguments, bounded in time.
fn run_wrk_cmd(
    mut cmd: Command,
    url: &str,
    conns: u32,
    secs: u64,
    timeout_secs: u64,
    extra: &[&str],
) -> BoxResult<WrkFigures> {
    // One wrk thread: on a 2-core machine a second one would take the server's core.
    cmd.arg("-t1")
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg(format!("{timeout_secs}s"))
        .args(extra)
        .arg(url);
    let limit = Duration::from_secs(secs + timeout_secs + 30);
    let (status, out) = run_bounded(&mut cmd, limit)?;
    if !status.success() {
        return Err(format!("wrk failed ({status}): {}", out.trim()).into());
    }
    parse_wrk(&out).ok_or_else(|| format!("cannot read wrk's output:\n{out}").into())
}

/// CPU ticks used so far by `root` and every process below it (exited
/// threads included: a process's times count them).
fn tree_ticks(root: u32) -> u64 {
    let mut tree = descendants(root);
    tree.push((root, 0));
    tree.iter()
        .filter_map(|&(pid, _)| proc_stat(pid))
        .map(|s| s.cpu_ticks)
        .sum()
}

/// `run_wrk`, with what each request cost: the CPU time of the server's
/// whole process tree (`root` and below: mpirun, its proxies, every rank;
/// nginx's master and workers), and the context switches of the whole
/// machine (wrk and the origin included) counted by `perf stat -a` around
/// wrk. Both drift less with a noisy machine than req/s does.
fn run_wrk_costed(
    cfg: &Config,
    root: u32,
    port: u16,
    path: &str,
    conns: u32,
) -> BoxResult<WrkFigures> {
    let before = tree_ticks(root);
    let counts = env::temp_dir().join(format!("mpiweb-bench-perf-{}.txt", std::process::id()));
    let mut figures = match &cfg.perf {
        Some(perf) => {
            let mut cmd = Command::new(perf);
            cmd.args(["stat", "-e", "context-switches", "-a", "-x", ","])
                .arg("-o")
                .arg(&counts)
                .arg("--")
                .arg(&cfg.wrk)
                .arg("-t1")
                .arg(format!("-c{conns}"))
                .arg(format!("-d{}s", cfg.secs))
                .args(["--timeout", "5s"])
                .arg(format!("http://127.0.0.1:{port}{path}"));
            let (status, out) = run_bounded(&mut cmd, Duration::from_secs(cfg.secs + 35))?;
            if !status.success() {
                return Err(format!("perf stat wrk failed ({status}): {}", out.trim()).into());
            }
            parse_wrk(&out).ok_or_else(|| format!("cannot read wrk's output:\n{out}"))?
        }
        None => run_wrk(cfg, port, path, conns, 5)?,
    };
    let used = tree_ticks(root).saturating_sub(before);
    if figures.requests > 0 {
        let n = figures.requests as f64;
        figures.cpu_us_per_req = Some(used as f64 * 1e6 / clock_ticks_per_sec() as f64 / n);
        figures.cs_per_req = fs::read_to_string(&counts).ok().and_then(|text| {
            let line = text.lines().find(|l| l.contains("context-switches"))?;
            Some(line.split(',').next()?.trim().parse::<f64>().ok()? / n)
        });
    }
    let _ = fs::remove_file(&counts);
    Ok(figures)
}

/// Runs a command to completion, killing it after `limit`; returns stdout and stderr together.
fn run_bounded(cmd: &mut Command, limit: Duration) -> BoxResult<(ExitStatus, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let readers = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        thread::spawn(move || {
            let mut text = Vec::new();
            let _ = r.read_to_end(&mut text);
            text
        })
    })
    .collect::<Vec<_>>();
    if !wait_child(&mut child, limit) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{cmd:?} did not finish within {limit:?}").into());
    }
    let status = child.wait()?;
    let mut out = Vec::new();
    for r in readers {
        out.extend(r.join().unwrap_or_default());
    }
    Ok((status, String::from_utf8_lossy(&out).into_owned()))
}

fn parse_wrk(out: &str) -> Option<WrkFigures> {
    let mut figures = WrkFigures::default();
    let (mut have_reqs, mut have_transfer) = (false, false);
    // The "50%" line counts only under "Latency Distribution", which `--latency` adds.
    let mut in_distribution = false;
    for line in out.lines().map(str::trim) {
        if line == "Latency Distribution" {
            in_distribution = true;
        } else if let Some(v) = line.strip_prefix("50%").filter(|_| in_distribution) {
            figures.p50_us = Some(parse_wrk_time_us(v.trim())?);
        } else if let Some(n) = line
            .split_once(" requests in ")
            .and_then(|(n, _)| n.trim().parse::<u64>().ok())
        {
            figures.requests = n;
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            figures.req_per_sec = v.trim().parse().ok()?;
            have_reqs = true;
        } else if let Some(v) = line.strip_prefix("Transfer/sec:") {
            figures.mib_per_sec = parse_wrk_size(v.trim())? / (1024.0 * 1024.0);
            have_transfer = true;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            figures.error_count += v.trim().parse::<u64>().ok()?;
            figures.errors.push(format!("non-2xx {}", v.trim()));
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 12, write 0, timeout 3": keep the nonzero ones.
            for part in v.split(',') {
                let mut words = part.split_whitespace();
                if let (Some(what), Some(n)) = (words.next(), words.next()) {
                    figures.error_count += n.parse::<u64>().ok()?;
                    if n != "0" {
                        figures.errors.push(format!("{what} {n}"));
                    }
                }
            }
        }
    }
    (have_reqs && have_transfer).then_some(figures)
}

/// Microseconds in a wrk time such as "78.00us", "1.02ms", "2.00s", "1.50m" or "1.00h".
fn parse_wrk_time_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(number.trim().parse::<f64>().ok()? * scale)
}

/// Bytes in a wrk size such as "1.23GB", "456.78MB", "12.00KB", "512.00B" (wrk's units are binary).
fn parse_wrk_size(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number.trim().parse::<f64>().ok()? * scale)
}

// ---------------------------------------------------------------------------
// Row 2: repeated full downloads of the big file
// ---------------------------------------------------------------------------

/// What the download clients of row 2 saw, summed over connections.
#[derive(Clone, Debug, Default)]
struct DownloadFigures {
    mib_per_sec: f64,
    /// Downloads that finished with the whole body.
    full: u64,
    /// Failures, e.g. "non-200 2" or "socket error 1".
    errors: Vec<String>,
}

impl DownloadFigures {
    fn errors_cell(&self) -> String {
        if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors.join(", ")
        }
    }
}

/// Per-connection counts of one download client.
#[derive(Default)]
struct DownloadTally {
    bytes: u64,
    full: u64,
    bad_head: u64,
    socket_errors: u64,
}

/// When the download clients stop: at `soft`; when a whole download is needed
/// and none is whole by then, as soon as one is; never after `hard`.
struct Window {
    soft: Instant,
    hard: Instant,
    need_full: bool,
    /// Whole downloads so far, over all connections.
    full: AtomicU64,
}

impl Window {
    fn over(&self) -> bool {
        let now = Instant::now();
        now >= self.hard
            || (now >= self.soft && (!self.need_full || self.full.load(Ordering::SeqCst) > 0))
    }

    /// How long a read may block: until the next moment `over` may turn true.
    fn read_wait(&self) -> Duration {
        let now = Instant::now();
        let next = if now < self.soft {
            self.soft
        } else {
            self.hard.min(now + Duration::from_millis(200))
        };
        next.saturating_duration_since(now)
            .max(Duration::from_millis(1))
    }
}

/// Downloads the big file over and over on `conns` keep-alive connections for `secs`;
/// with `need_full`, on past `secs` until one download is whole (PROXY_BIG_LIMIT at most).
///
/// Why not wrk: it reads 8 KiB at a time and parses every body byte, so on
/// this machine one wrk thread tops out below what a server can send over
/// loopback, and the ratio would measure wrk. Reading 1 MiB at a time keeps
/// the client cheap, so the figure is the server's.
fn download_for(port: u16, conns: u32, secs: u64, need_full: bool) -> DownloadFigures {
    download_at(loopback(port), conns, secs, need_full)
}

/// `download_for` from the server at `addr`.
fn download_at(addr: SocketAddr, conns: u32, secs: u64, need_full: bool) -> DownloadFigures {
    let start = Instant::now();
    let soft = start + Duration::from_secs(secs);
    let window = Arc::new(Window {
        soft,
        hard: if need_full {
            soft.max(start + PROXY_BIG_LIMIT)
        } else {
            soft
        },
        need_full,
        full: AtomicU64::new(0),
    });
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let window = Arc::clone(&window);
            thread::spawn(move || download_worker(addr, &window))
        })
        .collect();
    let mut total = DownloadTally::default();
    for h in handles {
        match h.join() {
            Ok(t) => {
                total.bytes += t.bytes;
                total.full += t.full;
                total.bad_head += t.bad_head;
                total.socket_errors += t.socket_errors;
            }
            Err(_) => total.socket_errors += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let errors = [
        ("bad response", total.bad_head),
        ("socket error", total.socket_errors),
    ]
    .into_iter()
    .filter(|&(_, n)| n > 0)
    .map(|(what, n)| format!("{what} {n}"))
    .collect();
    DownloadFigures {
        mib_per_sec: total.bytes as f64 / elapsed / (1024.0 * 1024.0),
        full: total.full,
        errors,
    }
}

fn download_worker(addr: SocketAddr, window: &Window) -> DownloadTally {
    let mut tally = DownloadTally::default();
    let mut block = vec![0u8; 1 << 20];
    let mut stream: Option<TcpStream> = None;
    while !window.over() {
        let s = match stream.take() {
            Some(s) => s,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => s,
                Err(_) => {
                    tally.socket_errors += 1;
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        match download_once(s, addr.port(), &mut block, window, &mut tally) {
            // A complete download on a connection the server keeps open: reuse it.
            Ok(Some(s)) => stream = Some(s),
            Ok(None) => {}
            Err(_) if window.over() => {}
            Err(_) => tally.socket_errors += 1,
        }
    }
    tally
}

/// One GET of the big file; gives the stream back if it can carry the next request.
fn download_once(
    mut s: TcpStream,
    port: u16,
    block: &mut [u8],
    window: &Window,
    tally: &mut DownloadTally,
) -> io::Result<Option<TcpStream>> {
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(get_request(port, "/big.bin").as_bytes())?;
    let mut head_buf = Vec::new();
    let head = loop {
        if let Some(head) = parse_head(&head_buf) {
            break head;
        }
        let n = read_within(&mut s, block, window)?;
        if n == 0 {
            // Closed between requests: a server may end keep-alive; try again on a new one.
            return Ok(None);
        }
        head_buf.extend_from_slice(&block[..n]);
    };
    if head.status != 200 || head.content_length != Some(BIG_SIZE) {
        tally.bad_head += 1;
        return Ok(None);
    }
    let mut got = (head_buf.len() - head.len) as u64;
    tally.bytes += got;
    while got < BIG_SIZE {
        if window.over() {
            return Ok(None);
        }
        let want = block.len().min((BIG_SIZE - got) as usize);
        let n = read_within(&mut s, &mut block[..want], window)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n as u64;
        tally.bytes += n as u64;
    }
    tally.full += 1;
    window.full.fetch_add(1, Ordering::SeqCst);
    Ok(Some(s))
}

/// One read that gives up shortly after the window is over (a timeout before that reads again).
fn read_within(s: &mut TcpStream, block: &mut [u8], window: &Window) -> io::Result<usize> {
    loop {
        s.set_read_timeout(Some(window.read_wait()))?;
        match s.read(block) {
            Err(e) if is_timeout(&e) && !window.over() => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

// ---------------------------------------------------------------------------
// Row 3: many connections at once
// ---------------------------------------------------------------------------

/// Counts for row 3, summed over the client threads.
#[derive(Clone, Debug, Default)]
struct ManyFigures {
    /// Connections open at the moment the requests went out.
    held: usize,
    connect_failed: usize,
    ok: usize,
    /// Complete responses other than 200, by status.
    bad_status: BTreeMap<u16, usize>,
    bad_length: usize,
    truncated: usize,
    errors: usize,
    timed_out: usize,
    /// The first connect or socket error seen, to say why in the notes.
    first_error: Option<String>,
    /// From the start to the moment all connections were open.
    connect_secs: f64,
    /// From the first request sent to the last answer read.
    answer_secs: f64,
}

impl ManyFigures {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::BadStatus(code) => *self.bad_status.entry(code).or_default() += 1,
            Outcome::BadLength => self.bad_length += 1,
            Outcome::Truncated => self.truncated += 1,
            Outcome::Error => self.errors += 1,
            Outcome::TimedOut => self.timed_out += 1,
        }
    }

    fn merge(&mut self, other: &ManyFigures) {
        self.connect_failed += other.connect_failed;
        self.ok += other.ok;
        for (&code, &n) in &other.bad_status {
            *self.bad_status.entry(code).or_default() += n;
        }
        self.bad_length += other.bad_length;
        self.truncated += other.truncated;
        self.errors += other.errors;
        self.timed_out += other.timed_out;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    fn error(&mut self, what: &str, e: &dyn std::fmt::Display) {
        if self.first_error.is_none() {
            self.first_error = Some(format!("{what}: {e}"));
        }
    }

    /// Nonzero failure counts, e.g. "connect failed 12, status 503: 40, timed out 3".
    fn failures(&self) -> Vec<String> {
        let statuses = self
            .bad_status
            .iter()
            .map(|(code, &n)| (format!("status {code}:"), n));
        [("connect failed".to_string(), self.connect_failed)]
            .into_iter()
            .chain(statuses)
            .chain([
                ("wrong length".to_string(), self.bad_length),
                ("closed early".to_string(), self.truncated),
                ("socket error".to_string(), self.errors),
                ("timed out".to_string(), self.timed_out),
            ])
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{what} {n}"))
            .chain(self.first_error.iter().map(|e| format!("first error: {e}")))
            .collect()
    }
}

/// Lets the client threads go on together once every one holds its connections.
struct Gate {
    state: Mutex<(usize, bool)>,
    cv: Condvar,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            state: Mutex::new((0, false)),
            cv: Condvar::new(),
        }
    }

    /// A client thread is ready; returns when the gate opens (or at `deadline`, never later).
    fn arrive_and_wait(&self, deadline: Instant) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.0 += 1;
        self.cv.notify_all();
        while !state.1 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.cv.wait_timeout(state, left) {
                Ok((s, _)) => state = s,
                Err(_) => return,
            }
        }
    }

    /// Waits for `n` arrivals (or `deadline`), then opens the gate.
    fn open_when_all(&self, n: usize, deadline: Instant) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        while state.0 < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.cv.wait_timeout(state, left) {
                Ok((s, _)) => state = s,
                Err(_) => return,
            }
        }
        state.1 = true;
        self.cv.notify_all();
    }
}

/// Opens MANY_CONNS connections, holds them all, then sends one GET on each and reads the answers.
///
/// A hundred threads each own a hundred connections: connecting blocks a
/// thread, and reading the answers one socket after another costs nothing
/// while waiting, because all requests are already out and the server works
/// on them in parallel. Every wait is bounded by the row's deadlines.
fn many_connections(port: u16) -> ManyFigures {
    let start = Instant::now();
    let connect_deadline = start + MANY_CONNECT_BUDGET;
    let answer_deadline = start + MANY_ANSWER_BUDGET;
    let gate = Arc::new(Gate::new());
    let held = Arc::new(AtomicUsize::new(0));
    let request: Arc<[u8]> = get_request(port, "/small.html").into_bytes().into();
    let per_worker = MANY_CONNS / MANY_WORKERS;
    let mut handles = Vec::new();
    let mut total = ManyFigures::default();
    for _ in 0..MANY_WORKERS {
        let (gate, held, request) = (Arc::clone(&gate), Arc::clone(&held), Arc::clone(&request));
        let spawned = thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                many_worker(
                    port,
                    per_worker,
                    &request,
                    &gate,
                    &held,
                    connect_deadline,
                    answer_deadline,
                )
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                total.connect_failed += per_worker;
                total.error("spawning a client thread", &e);
            }
        }
    }
    gate.open_when_all(handles.len(), connect_deadline + Duration::from_secs(1));
    let sent_at = Instant::now();
    total.connect_secs = (sent_at - start).as_secs_f64();
    total.held = held.load(Ordering::SeqCst);
    eprintln!(
        "bench:   {} connections open at once after {:.1} s; sending the requests",
        total.held, total.connect_secs
    );
    for h in handles {
        match h.join() {
            Ok(part) => total.merge(&part),
            Err(_) => {
                total.errors += per_worker;
                total.error("client thread", &"panicked");
            }
        }
    }
    total.answer_secs = sent_at.elapsed().as_secs_f64();
    total
}

fn many_worker(
    port: u16,
    count: usize,
    request: &[u8],
    gate: &Gate,
    held: &AtomicUsize,
    connect_deadline: Instant,
    answer_deadline: Instant,
) -> ManyFigures {
    let mut figures = ManyFigures::default();
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let left = connect_deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            figures.connect_failed += 1;
            figures.error("connect", &"the row's connect budget ran out");
            continue;
        }
        match TcpStream::connect_timeout(&loopback(port), left.min(MANY_CONNECT_TIMEOUT)) {
            Ok(s) => streams.push(s),
            Err(e) => {
                figures.connect_failed += 1;
                figures.error("connect", &e);
            }
        }
    }
    held.fetch_add(streams.len(), Ordering::SeqCst);
    gate.arrive_and_wait(connect_deadline + Duration::from_secs(2));

    let mut sent = Vec::with_capacity(streams.len());
    for mut s in streams {
        let written = s
            .set_write_timeout(Some(Duration::from_secs(2)))
            .and_then(|()| s.write_all(request));
        match written {
            Ok(()) => sent.push(s),
            Err(e) => {
                figures.add(Outcome::Error);
                figures.error("write", &e);
            }
        }
    }
    let mut block = [0u8; 4096];
    for s in &mut sent {
        match read_answer(s, &mut block, answer_deadline) {
            Ok(outcome) => figures.add(outcome),
            Err(e) => {
                figures.add(Outcome::Error);
                figures.error("read", &e);
            }
        }
    }
    // The streams close here, after every answer of this thread is in.
    figures
}

/// Reads one response until it is complete, the peer closes, or the deadline passes.
fn read_answer(stream: &mut TcpStream, block: &mut [u8], deadline: Instant) -> io::Result<Outcome> {
    let expected = SMALL_SIZE as u64;
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Past the deadline, one short last look at what has already arrived.
        let last_look = left.is_zero();
        let wait = if last_look {
            Duration::from_millis(1)
        } else {
            left
        };
        stream.set_read_timeout(Some(wait))?;
        match stream.read(block) {
            Ok(0) => return Ok(judge(&buf, true, expected).unwrap_or(Outcome::Truncated)),
            Ok(n) => {
                buf.extend_from_slice(&block[..n]);
                if let Some(outcome) = judge(&buf, false, expected) {
                    return Ok(outcome);
                }
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if last_look {
            return Ok(Outcome::TimedOut);
        }
    }
}

/// A read timeout shows as WouldBlock or TimedOut depending on the platform.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

// ---------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------

/// Everything measured for one server.
#[derive(Clone, Debug, Default)]
struct Figures {
    small: Option<WrkFigures>,
    big: Option<DownloadFigures>,
    big_wrk: Option<WrkFigures>,
    rss_rows12: Option<f64>,
    many: Option<ManyFigures>,
    rss_row3: Option<f64>,
    proxy_small: Option<WrkFigures>,
    /// mpiweb only: proxy_small's run against mpiweb started without mpirun.
    proxy_solo: Option<WrkFigures>,
    /// Median latency at one connection through the proxy, in the lifetime of proxy_small
    /// and of proxy_solo (microseconds).
    proxy_small_p50_us: Option<f64>,
    proxy_solo_p50_us: Option<f64>,
    proxy_big: Option<DownloadFigures>,
    /// Peak RSS during proxy_big: nginx's worker, mpiweb's rank 0.
    proxy_big_rss: Option<f64>,
    /// Peak RSS during proxy_big of mpiweb's other ranks.
    proxy_big_rss_others: Vec<f64>,
    idle: Option<IdleFigures>,
    /// The small file through the pool of three origins.
    pool: Option<WrkFigures>,
    failover: Option<FailoverFigures>,
    /// The store rows: PUT, then GET, of 4 KiB documents, wrk at STORE_CONNS connections,
    /// and at one (with the median latency).
    store_put: Option<WrkFigures>,
    store_put_one: Option<WrkFigures>,
    store_get: Option<WrkFigures>,
    store_get_one: Option<WrkFigures>,
    /// GETs with rank 0's cache off, every one served by a replica.
    store_get_replica: Option<WrkFigures>,
    /// Document files on disk after the store rows, every copy counted.
    store_files: Option<String>,
}

// ---------------------------------------------------------------------------
// Proxy rows
// ---------------------------------------------------------------------------

/// The same for a run that is not a whole row (`what` names it in the note).
fn finish_run(server: &mut Server, kind: Kind, what: &str, report: &mut Report) {
    if let Some(complaints) = server.complaints() {
        report.note(kind, format!("{what}: {} {complaints}", server.label));
    }
    eprintln!("bench: stopping {}", server.label);
    server.stop();
}

/// CPU used by a server's processes while it has nothing to do.
#[derive(Clone, Debug, Default)]
struct IdleFigures {
    /// The server's own processes (nginx's master and worker, mpiweb's ranks), percent of one core.
    percent: f64,
    /// Clock ticks each of them used in the window, by pid.
    per_process: Vec<u64>,
    /// Everything else under the launched process (mpirun, hydra_pmi_proxy), percent of one core.
    launcher_percent: f64,
    /// Processes that exited during the window (their last ticks are lost).
    vanished: usize,
    /// A proxied request right after the window, on a keep-alive
    /// connection opened before it (ms): what a quiet spell costs the
    /// next request.
    first_after_ms: Option<f64>,
}

/// Clock ticks per second of /proc/PID/stat's times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

// ---------------------------------------------------------------------------
// Pool rows
// ---------------------------------------------------------------------------

/// The pool rows' three origins; B is killed and started again by each failover run.
struct PoolOrigins {
    a: Server,
    /// None from its kill to its restart, or when it failed to start again.
    b: Option<Server>,
    c: Server,
    /// B's port, which every restart takes again.
    b_port: u16,
    /// Whether the B that runs has its access log (it is started that way during a failover run).
    b_logged: bool,
}

impl PoolOrigins {
    fn start(cfg: &Config, site: &Site) -> BoxResult<PoolOrigins> {
        let plain = |member| NginxRole::PoolOrigin {
            member,
            logged: false,
        };
        let a = start_nginx(cfg, site, plain(Member::A))?;
        let b = start_nginx(cfg, site, plain(Member::B))?;
        let c = start_nginx(cfg, site, plain(Member::C))?;
        for server in [&a, &b, &c] {
            let problems = sanity_check(server.port, false);
            if !problems.is_empty() {
                return Err(format!("{}: {}", server.label, problems.join("; ")).into());
            }
        }
        eprintln!(
            "bench: pool origins A, B, C on ports {}, {}, {}",
            a.port, b.port, c.port
        );
        Ok(PoolOrigins {
            b_port: b.port,
            a,
            b: Some(b),
            c,
            b_logged: false,
        })
    }

    fn ports(&self) -> [u16; 3] {
        [self.a.port, self.b_port, self.c.port]
    }

    /// SIGKILL to B's pid: it dies as a crash would, with requests in flight.
    fn kill_b(&mut self) {
        if let Some(mut b) = self.b.take() {
            eprintln!("bench: killing origin nginx B (pid {})", b.child.id());
            b.kill();
        }
    }

    /// Starts B on its port (stopping the B that runs, if any) and polls until it answers.
    fn restart_b(&mut self, cfg: &Config, site: &Site, logged: bool) -> BoxResult<()> {
        if let Some(mut b) = self.b.take() {
            b.stop();
        }
        let role = NginxRole::PoolOrigin {
            member: Member::B,
            logged,
        };
        self.b = Some(start_nginx_on(cfg, site, role, self.b_port)?);
        self.b_logged = logged;
        Ok(())
    }

    /// Puts back a B without its access log, as the other rows expect, unless one runs.
    fn ensure_plain_b(&mut self, cfg: &Config, site: &Site) -> BoxResult<()> {
        if self.b.is_some() && !self.b_logged {
            return Ok(());
        }
        self.restart_b(cfg, site, false)
    }

    fn b_access_log(site: &Site) -> PathBuf {
        let role = NginxRole::PoolOrigin {
            member: Member::B,
            logged: true,
        };
        role.dir(site).join("access.log")
    }

    /// Notes what the origins complained about, then stops them.
    fn stop(mut self, report: &mut Report) {
        let b = self.b.as_mut();
        for server in [Some(&mut self.a), b, Some(&mut self.c)]
            .into_iter()
            .flatten()
        {
            if let Some(complaints) = server.complaints() {
                report
                    .notes
                    .push(format!("pool: {}: {complaints}", server.label));
            }
            eprintln!("bench: stopping {}", server.label);
            server.stop();
        }
    }
}

/// What one failover run saw.
#[derive(Clone, Debug, Default)]
struct FailoverFigures {
    wrk: Option<WrkFigures>,
    /// Proxied requests of the run that the restarted B logged; None when B did not start again.
    b_requests: Option<u64>,
    /// From B answering again to the first of them, in seconds.
    b_first_after_secs: Option<f64>,
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// ---------------------------------------------------------------------------
// Store rows
// ---------------------------------------------------------------------------

/// The store rows' wrk scripts, written to the temp dir with the body the PUTs send.
struct StoreScripts {
    put: String,
    get: String,
}

impl StoreScripts {
    fn write(site: &Site, body: &[u8]) -> BoxResult<StoreScripts> {
        let dir = site.tmp();
        let body_path = dir.join("store-body.bin");
        fs::write(&body_path, body)?;
        let mut paths = Vec::new();
        for (method, body) in [("PUT", Some(body_path.as_path())), ("GET", None)] {
            let path = dir.join(format!("store-{}.lua", method.to_ascii_lowercase()));
            fs::write(&path, store_script(method, body))?;
            let path = path
                .to_str()
                .ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
            paths.push(path.to_string());
        }
        let get = paths.pop().unwrap_or_default();
        let put = paths.pop().unwrap_or_default();
        Ok(StoreScripts { put, get })
    }
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Report {
    nginx: Figures,
    mpiweb: Figures,
    /// Median latency at one connection straight to the origin nginx (microseconds).
    origin_p50_us: Option<f64>,
    /// The across-host rows (mpiweb only), when they ran.
    hosts: Option<HostsFigures>,
    notes: Vec<String>,
}

// ---------------------------------------------------------------------------
// Unit tests
// ---------------------------------------------------------------------------

/// The parsers' tests. This bench has no libtest harness (`harness = false`), so
/// `cargo test --bench compare` reaches them through `main` and `run_all`.
mod tests {
    use super::*;

    /// Each test by name; a test fails by panicking.
    const ALL: &[(&str, fn())] = &[
        ("parse_wrk_time_us", parse_wrk_time_us_table),
        ("parse_wrk_with_latency", parse_wrk_with_latency),
        ("parse_wrk_without_latency", parse_wrk_without_latency),
        ("parse_wrk_error_count", parse_wrk_error_count),
        ("parse_failover_log", parse_failover_log_table),
        ("parse_only_pool", parse_only_pool),
        ("parse_only_store", parse_only_store),
        ("store_body_and_scripts", store_body_and_scripts),
        ("dechunk", dechunk_table),
        ("complete_reply", complete_reply_table),
        ("mount_fs_type", mount_fs_type_table),
    ];

    pub(super) fn run_all() -> ExitCode {
        let mut failed = 0;
        for (name, test) in ALL {
            let ok = std::panic::catch_unwind(test).is_ok();
            println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
            failed += usize::from(!ok);
        }
        println!(
            "test result: {} passed, {failed} failed",
            ALL.len() - failed
        );
        if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    fn parse_wrk_time_us_table() {
        let table: &[(&str, Option<f64>)] = &[
            ("78.00us", Some(78.0)),
            ("1.02ms", Some(1020.0)),
            ("2.00s", Some(2_000_000.0)),
            ("1.50m", Some(90_000_000.0)),
            ("1.00h", Some(3_600_000_000.0)),
            ("0.00us", Some(0.0)),
            ("78.00", None),
            ("78.00ns", None),
            ("us", None),
            ("", None),
        ];
        for &(text, want) in table {
            let got = parse_wrk_time_us(text);
            let close = match (got, want) {
                (Some(g), Some(w)) => (g - w).abs() < 1e-6 * w.max(1.0),
                (None, None) => true,
                _ => false,
            };
            assert!(close, "{text:?}: got {got:?}, want {want:?}");
        }
    }

    /// wrk 4.1.0's output with `--latency`, one connection.
    const WITH_LATENCY: &str = "\
Running 3s test @ http://127.0.0.1:8080/small.html
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    80.12us   25.40us   1.02ms   97.50%
    Req/Sec    12.10k   400.00    12.80k    70.00%
  Latency Distribution
     50%   78.00us
     75%   82.00us
     90%   90.00us
     99%    1.02ms
  36300 requests in 3.00s, 26.30MB read
Requests/sec:  12099.80
Transfer/sec:      8.77MB
";

    fn parse_wrk_with_latency() {
        let w = parse_wrk(WITH_LATENCY).expect("figures");
        assert_eq!(w.p50_us, Some(78.0));
        assert!((w.req_per_sec - 12099.8).abs() < 1e-9);
        assert!(w.errors.is_empty());
        // A median in milliseconds, and a bad unit that makes the output unreadable.
        let slow = WITH_LATENCY.replace("50%   78.00us", "50%    1.25ms");
        assert_eq!(parse_wrk(&slow).and_then(|w| w.p50_us), Some(1250.0));
        let bad = WITH_LATENCY.replace("50%   78.00us", "50%   78.00xs");
        assert!(parse_wrk(&bad).is_none());
    }

    fn parse_wrk_without_latency() {
        // No "Latency Distribution": no median, even though "+/- Stdev" has percents.
        let plain: String = WITH_LATENCY
            .lines()
            .filter(|l| !l.contains("Latency Distribution") && !l.trim_start().starts_with("50%"))
            .map(|l| format!("{l}\n"))
            .collect();
        let w = parse_wrk(&plain).expect("figures");
        assert_eq!(w.p50_us, None);
        // A "50%" line outside the section is not a median.
        let stray = format!("50%   1.00ms\n{plain}");
        assert_eq!(parse_wrk(&stray).and_then(|w| w.p50_us), None);
    }

    fn parse_wrk_error_count() {
        let w = parse_wrk(WITH_LATENCY).expect("figures");
        assert_eq!(w.error_count, 0);
        let with_errors = WITH_LATENCY.replace(
            "Requests/sec:",
            "  Socket errors: connect 2, read 12, write 0, timeout 3\n  \
             Non-2xx or 3xx responses: 5\nRequests/sec:",
        );
        let w = parse_wrk(&with_errors).expect("figures");
        assert_eq!(w.error_count, 22);
        assert_eq!(w.errors_cell(), "connect 2, read 12, timeout 3, non-2xx 5");
        // A count that is not a number makes the output unreadable rather than undercounted.
        let bad = WITH_LATENCY.replace(
            "Requests/sec:",
            "Non-2xx or 3xx responses: many\nRequests/sec:",
        );
        assert!(parse_wrk(&bad).is_none());
    }

    fn parse_failover_log_table() {
        let table: &[(&str, u64, Option<f64>)] = &[
            ("", 0, None),
            // The readiness probe and health checks send no X-Bench header.
            ("1700000012.100 -\n1700000012.900 -\n", 0, None),
            (
                "1700000012.100 -\n1700000013.250 failover\n1700000013.200 failover\n",
                2,
                Some(1_700_000_013.2),
            ),
            ("1700000013.250 failover-not\nfailover\n\n", 0, None),
            ("bad failover\n", 1, None),
        ];
        for &(text, want_count, want_first) in table {
            let (count, first) = parse_failover_log(text);
            assert_eq!(count, want_count, "{text:?}");
            let close = match (first, want_first) {
                (Some(g), Some(w)) => (g - w).abs() < 1e-3,
                (None, None) => true,
                _ => false,
            };
            assert!(close, "{text:?}: got {first:?}, want {want_first:?}");
        }
    }

    fn parse_only_pool() {
        let (only, rows) = parse_only("pool").expect("pool");
        assert_eq!((only, rows), (None, vec![Row::Pool]));
        let (only, rows) = parse_only("pool,mpiweb").expect("pool,mpiweb");
        assert_eq!((only, rows), (Some(Kind::Mpiweb), vec![Row::Pool]));
        let (_, rows) = parse_only("proxy").expect("proxy");
        assert!(!rows.contains(&Row::Pool));
        let (_, rows) = parse_only("").expect("all");
        assert!(rows.contains(&Row::Pool));
        assert!(parse_only("pools").is_err());
    }

    fn parse_only_store() {
        let (only, rows) = parse_only("store,nginx").expect("store,nginx");
        assert_eq!((only, rows), (Some(Kind::Nginx), vec![Row::Store]));
        let (_, rows) = parse_only("").expect("all");
        assert!(rows.contains(&Row::Store));
        assert!(Row::Store.needs_mpirun() && Row::Store.uses_mpirun());
        assert!(!Row::Pool.needs_mpirun());
    }

    fn store_body_and_scripts() {
        let body = store_body();
        assert_eq!(body.len(), STORE_DOC_SIZE);
        assert_eq!(&body[..3], b"abc");
        assert_eq!(body[63], b'\n');
        assert!(body.iter().all(|b| b.is_ascii_lowercase() || *b == b'\n'));
        let put = store_script("PUT", Some(Path::new("/tmp/x/store-body.bin")));
        assert!(put.contains("io.open([==[/tmp/x/store-body.bin]==], \"rb\")"));
        assert!(put.contains("wrk.format(\"PUT\", \"/store/doc-\" .. (i - 1), headers, body)"));
        assert!(put.contains("local docs = 1000\n"));
        assert!(put.contains("-- mpiweb bench, store rows: PUT /store/doc-0 to /store/doc-999"));
        let get = store_script("GET", None);
        assert!(get.contains("local body = nil\n") && !get.contains("io.open"));
        assert!(get.contains("wrk.format(\"GET\""));
    }

    fn dechunk_table() {
        let table: &[(&[u8], Option<&[u8]>)] = &[
            (b"0\r\n\r\n", Some(b"")),
            (b"3\r\nabc\r\n0\r\n\r\n", Some(b"abc")),
            (
                b"3;x=1\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n",
                Some(b"abc0123456789"),
            ),
            (b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", Some(b"abc")),
            (b"3\r\nabc\r\n0\r\n", None),
            (b"3\r\nab", None),
            (b"3\r\nabcd\r\n0\r\n\r\n", None),
            (b"zz\r\n", None),
            (b"", None),
        ];
        for &(data, want) in table {
            let got = dechunk(data);
            assert_eq!(got.as_deref(), want, "{:?}", String::from_utf8_lossy(data));
        }
    }

    fn complete_reply_table() {
        let ok = b"HTTP/1.1 200 OK\r\nETag: \"5f\"\r\nContent-Length: 3\r\n\r\nabc";
        let r = complete_reply("GET", ok, false).expect("complete");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
        assert_eq!(r.header("etag"), Some("\"5f\""));
        assert!(complete_reply("GET", &ok[..ok.len() - 1], false).is_none());
        // No body for 204, nor for HEAD whatever Content-Length says.
        let created = b"HTTP/1.1 204 No Content\r\nETag: \"60\"\r\n\r\n";
        let r = complete_reply("PUT", created, false).expect("204");
        assert_eq!((r.status, r.body.len()), (204, 0));
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
        assert!(complete_reply("HEAD", head, false).is_some());
        // A body to the end of the connection is complete only at EOF.
        let to_eof = b"HTTP/1.1 200 OK\r\n\r\nabc";
        assert!(complete_reply("GET", to_eof, false).is_none());
        assert_eq!(
            complete_reply("GET", to_eof, true).map(|r| r.body),
            Some(b"abc".to_vec())
        );
        let chunked =
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(
            complete_reply("PUT", chunked, false).map(|r| r.body),
            Some(b"ok".to_vec())
        );
    }

    fn mount_fs_type_table() {
        let mounts = "\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
tmpfs /tmp tmpfs rw 0 0
tmpfs /tmpx tmpfs rw 0 0
overlay /tmp overlay rw 0 0
";
        let table: &[(&str, Option<&str>)] = &[
            ("/work/main", Some("ext4")),
            ("/tmp/mpiweb-bench-1", Some("overlay")),
            ("/tmpfoo/a", Some("ext4")),
            ("/proc/1", Some("proc")),
            ("/", Some("ext4")),
        ];
        for &(path, want) in table {
            assert_eq!(
                mount_fs_type(mounts, Path::new(path)).as_deref(),
                want,
                "{path}"
            );
        }
        assert_eq!(mount_fs_type("", Path::new("/a")), None);
    }
}
