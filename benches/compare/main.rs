//! Benchmark harness: measures mpiweb against nginx on loopback in one run and prints a comparison table.
//!
//! Run it as `make bench` (which raises `ulimit -n` first), or by hand:
//! `ulimit -n 20000; cargo build --release && cargo bench --bench compare`.
//! `cargo test --bench compare` runs only the unit tests, tests.rs (cargo passes
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
//! file over 4 connections, MiB/s, from the harness's own download client (the
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
//!
//! This file holds the runner: the constants, BENCH_ONLY and the rest of the
//! configuration, and `main`, which runs the rows in order. The modules, each
//! reaching the others' items through `use super::*`:
//! - one per family of rows, each measuring both servers: rows_static.rs (rows
//!   1-3), proxy_rows.rs, pool_rows.rs, store_rows.rs, hosts_rows.rs;
//! - the site and the servers: site.rs (the temp dir and its docroot),
//!   servers.rs (a started server: readiness, peak RSS, complaints, stop),
//!   nginx.rs (nginx's roles, configs and start), mpiweb_launch.rs (mpiweb's
//!   start, under mpirun or alone), procs.rs (signals and /proc: process
//!   trees, CPU ticks, peak RSS);
//! - the clients: http.rs (one-shot requests, response parsing, the sanity
//!   check), wrk.rs (running wrk and reading its output), download.rs (row 2's
//!   download client), many.rs (row 3's client);
//! - the output: report.rs (the figures, the table and its notes),
//!   report_rows.rs (the table's rows, family by family); and tests.rs, the
//!   unit tests.

// Shared with every module below through its `use super::*`.
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

mod download;
mod hosts_rows;
mod http;
mod many;
mod mpiweb_launch;
/// Network namespaces as two hosts, shared with tests/hosts.rs.
#[path = "../../tests/common/netns.rs"]
#[allow(dead_code)]
mod netns;
mod nginx;
mod pool_rows;
mod procs;
mod proxy_rows;
mod report;
mod report_rows;
mod rows_static;
mod servers;
mod site;
mod store_rows;
mod tests;
mod wrk;

use download::*;
use hosts_rows::*;
use http::*;
use many::*;
use mpiweb_launch::*;
use nginx::*;
use pool_rows::*;
use procs::*;
use proxy_rows::*;
use report::*;
use rows_static::*;
use servers::*;
use site::*;
use store_rows::*;
use wrk::*;

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
    // unit tests (tests.rs) run, as criterion does: no benchmark of a debug build.
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
