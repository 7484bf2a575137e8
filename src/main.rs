//! Parse the command line, start logging and MPI, then give rank 0 the
//! server and every other rank the worker loop.

use mpiweb::cluster::Cluster;
use mpiweb::config::{self, Command, Config};
use mpiweb::server::{log as access, ConnConfig, Server};
use mpiweb::static_files::StaticFiles;
use std::io::Write;
use std::net::TcpListener;
use std::process::exit;
use std::sync::Arc;

/// Exit code for a bad command line or an unusable DOCROOT.
const EXIT_USAGE: i32 = 2;

fn main() {
    // Everything that can be checked without MPI is checked first, so a bad
    // start fails the same way on every rank.
    let cfg = match config::parse_args(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            print!("{}", config::USAGE);
            return;
        }
        Ok(Command::Version) => {
            println!("mpiweb {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Err(msg) => {
            eprintln!("mpiweb: {msg} (see mpiweb --help)");
            exit(EXIT_USAGE);
        }
    };
    if !cfg.docroot.is_dir() {
        eprintln!(
            "mpiweb: document root '{}' is not a directory",
            cfg.docroot.display()
        );
        exit(EXIT_USAGE);
    }
    if let Some(path) = &cfg.access_log {
        if let Err(e) = access::to_file(path) {
            eprintln!("mpiweb: cannot open access log '{}': {e}", path.display());
            exit(EXIT_USAGE);
        }
    }
    let cluster = match Cluster::init() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("mpiweb: {msg}");
            exit(1);
        }
    };
    init_logging(cluster.rank());
    let code = if cluster.rank() == 0 {
        let code = run_front(&cfg, &cluster);
        cluster.shutdown_workers(code);
        code
    } else {
        cluster.run_worker()
    };
    drop(cluster); // MPI_Finalize
    exit(code);
}

/// Rank 0: bind, announce, serve. Returns an exit code if serving stops.
fn run_front(cfg: &Config, cluster: &Cluster) -> i32 {
    let listener = match TcpListener::bind(&cfg.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mpiweb: cannot listen on {}: {e}", cfg.listen);
            return EXIT_USAGE;
        }
    };
    let handler = match StaticFiles::new(&cfg.docroot, cfg.listing) {
        Ok(h) => Arc::new(h),
        Err(e) => {
            eprintln!("mpiweb: document root '{}': {e}", cfg.docroot.display());
            return EXIT_USAGE;
        }
    };
    let max_connections = connection_cap(cfg.max_connections);
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let root = cfg
        .docroot
        .canonicalize()
        .unwrap_or_else(|_| cfg.docroot.clone());
    // This line is a contract: tests and benchmarks read the port from it.
    eprintln!(
        "mpiweb: rank 0 of {} listening on http://{addr}/ (pid {}, docroot {})",
        cluster.size(),
        std::process::id(),
        root.display()
    );
    let conn = ConnConfig {
        header_timeout: cfg.header_timeout,
        keepalive_timeout: cfg.keepalive_timeout,
        max_body: cfg.max_body,
        limits: Default::default(),
        rank: cluster.rank(),
    };
    match Server::new(listener, conn, handler, max_connections).run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mpiweb: server stopped: {e}");
            1
        }
    }
}

/// The connection cap, lowered to what the open-file limit allows: past it
/// `accept` would fail and clients would wait instead of getting 503.
fn connection_cap(wanted: usize) -> usize {
    match config::open_files_limit() {
        Some(limit) if limit < wanted + config::RESERVED_FDS => {
            let cap = limit.saturating_sub(config::RESERVED_FDS).max(1);
            log::warn!("open-file limit is {limit}: serving at most {cap} connections (raise it with ulimit -n)");
            cap
        }
        _ => wanted,
    }
}

/// Access lines are printed bare; everything else is tagged with the rank.
fn init_logging(rank: usize) {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |buf, record| {
            if record.target() == access::TARGET {
                writeln!(buf, "{}", record.args())
            } else {
                writeln!(buf, "mpiweb[{rank}] {}: {}", record.level(), record.args())
            }
        })
        .init();
}
