//! Parse the command line, start logging and MPI, then give rank 0 the
//! server and every other rank the worker loop.

use mpiweb::cluster::{self, Cluster};
use mpiweb::config::{self, Command, Config};
use mpiweb::proxy::front::is_self;
use mpiweb::proxy::worker::Side;
use mpiweb::proxy::{health, Local, Proxy, ProxyConfig, Transport};
use mpiweb::router::{Front, Router};
use mpiweb::server::{log as access, ConnConfig, Server};
use mpiweb::static_files::StaticFiles;
use mpiweb::status::Status;
use mpiweb::store::{self, Replica, Store, StoreConfig};
use std::io::Write;
use std::net::TcpListener;
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Exit code for a bad command line or an unusable DOCROOT.
const EXIT_USAGE: i32 = 2;

/// One line on stderr in one `write(2)`: under mpirun every rank writes
/// its own, and `eprintln!` writes the pieces of a line separately, so the
/// ranks' lines would splice into each other.
macro_rules! say {
    ($($arg:tt)*) => {
        let _ = std::io::stderr().write_all(format!("{}\n", format_args!($($arg)*)).as_bytes());
    };
}

fn main() {
    mpiweb::cluster::keeper::run_if_keeper();
    mpiweb::metrics::start();
    // Everything that can be checked without MPI is checked first, so a bad
    // start fails the same way on every rank.
    let cfg = match checked_config() {
        Ok(Some(cfg)) => cfg,
        Ok(None) => return, // help or version, printed
        Err(msg) => {
            say!("mpiweb: {msg}");
            // Under mpirun, finish MPI's start-up before exiting: ranks
            // that all exit before it can make MPICH's launcher die of
            // SIGPIPE (exit 141) instead of reporting our exit code 2.
            drop(Cluster::init());
            exit(EXIT_USAGE);
        }
    };
    // Every rank, before MPI opens its own descriptors: rank 0 holds the
    // connections, workers upstream connections and replica files.
    // A worker rank under a launcher forks here: its parent keeps it, so
    // that its death by a signal does not end the job.
    mpiweb::cluster::keeper::keep_worker();
    let files_limit = mpiweb::server::sys::raise_open_files_limit();
    let batch = mpiweb::server::sys::batch_scheduling();
    let cluster = match Cluster::init() {
        Ok(c) => c,
        Err(msg) => {
            say!("mpiweb: {msg}");
            exit(1);
        }
    };
    init_logging(cluster.rank());
    if let Err(e) = &files_limit {
        log::warn!("cannot raise the open-file limit: {e}");
    }
    if let Err(e) = &batch {
        log::warn!("cannot set the SCHED_BATCH policy (threads keep the default): {e}");
    }
    // After MPI's start-up, so that these handlers are the ones in place.
    // Workers only note a stop signal: rank 0 tells them when to exit.
    mpiweb::server::signals::install();
    let code = if cluster.rank() == 0 {
        // Only rank 0 serves requests, so only it writes access lines:
        // to `--access-log FILE`, else to stderr, in batches either way
        // (unless RUST_LOG turned them off).
        let started = match &cfg.access_log {
            Some(path) => access::to_file(path),
            None if log::log_enabled!(target: access::TARGET, log::Level::Info) => {
                access::to_stderr()
            }
            None => Ok(()),
        };
        if let Err(e) = started {
            log::warn!("access lines are written one by one: {e}");
        }
        let (code, poller) = run_front(&cfg, &cluster, files_limit.ok());
        access::flush();
        let died = match poller {
            Some(poller) => poller.shutdown(code),
            None => {
                cluster.shutdown_workers(code);
                false
            }
        };
        if died {
            // MPI_Finalize would wait for the dead rank forever.
            log::warn!("a worker died: exiting without MPI_Finalize");
            exit(code);
        }
        code
    } else {
        mpiweb::metrics::count_streams();
        match replica_side(&cfg, cluster.rank()) {
            Ok(side) => cluster.run_worker(|out| {
                mpiweb::proxy::worker::Worker::new(cfg.upstream_timeout, out, true, side).runner()
            }),
            Err(msg) => {
                say!("mpiweb[{}]: {msg}", cluster.rank());
                EXIT_USAGE
            }
        }
    };
    finalize(cluster, code);
}

/// How long MPI_Finalize may take before the process exits without it.
const FINALIZE_LIMIT: Duration = Duration::from_secs(1);

/// Finalise MPI and exit with `code`. MPI_Finalize waits for the other
/// ranks; with a dead one, or over TCP once the others left first (MPICH
/// with UCX spins in it forever), it never returns: after `FINALIZE_LIMIT`
/// the process exits without it.
fn finalize(cluster: Cluster, code: i32) -> ! {
    if let Cluster::Mpi { .. } = cluster {
        let rank = cluster.rank();
        let _ = std::thread::Builder::new()
            .name("finalize-limit".into())
            .spawn(move || {
                std::thread::sleep(FINALIZE_LIMIT);
                say!("mpiweb[{rank}]: MPI_Finalize did not return within {FINALIZE_LIMIT:?}: exiting without it");
                // SAFETY: _exit ends the process at once, whatever MPI holds.
                unsafe { libc::_exit(code) };
            });
    }
    drop(cluster); // MPI_Finalize
    exit(code);
}

/// Rank 0: bind, announce, serve; under MPI the main thread becomes the
/// dispatcher and the server runs on its own thread. Returns an exit code
/// if serving stops.
fn run_front(
    cfg: &Config,
    cluster: &Cluster,
    files_limit: Option<u64>,
) -> (i32, Option<cluster::Poller>) {
    let listener = match TcpListener::bind(&cfg.listen) {
        Ok(l) => l,
        Err(e) => {
            say!("mpiweb: cannot listen on {}: {e}", cfg.listen);
            return (EXIT_USAGE, None);
        }
    };
    let files = match StaticFiles::new(&cfg.docroot, cfg.listing) {
        Ok(h) => Arc::new(h),
        Err(e) => {
            say!("mpiweb: document root '{}': {e}", cfg.docroot.display());
            return (EXIT_USAGE, None);
        }
    };
    let max_connections = connection_cap(cfg.max_connections, files_limit);
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let root = cfg
        .docroot
        .canonicalize()
        .unwrap_or_else(|_| cfg.docroot.clone());
    // This line is a contract: tests and benchmarks read the port from it.
    // One write, so that no other rank's line lands in the middle of it.
    let banner = format!(
        "mpiweb: rank 0 of {} listening on http://{addr}/ (pid {}, docroot {})\n",
        cluster.size(),
        std::process::id(),
        root.display()
    );
    let _ = std::io::stderr().write_all(banner.as_bytes());
    let conn = ConnConfig {
        header_timeout: cfg.header_timeout,
        keepalive_timeout: cfg.keepalive_timeout,
        max_body: cfg.max_body,
        limits: Default::default(),
        rank: cluster.rank(),
    };
    let (transport, poller): (Arc<dyn Transport>, _) = match cluster.size() {
        1 if cfg.spares > 0 => {
            say!("mpiweb: --spares needs worker ranks: start under mpirun");
            return (EXIT_USAGE, None);
        }
        1 => {
            // Alone, rank 0 keeps the store's only replica itself.
            let side = match replica_side(cfg, 0) {
                Ok(side) => side,
                Err(msg) => {
                    say!("mpiweb: {msg}");
                    return (EXIT_USAGE, None);
                }
            };
            (Arc::new(Local::new(cfg.upstream_timeout, side)), None)
        }
        n if cfg.spares >= n - 1 => {
            say!(
                "mpiweb: --spares {} leaves no worker among the {} worker rank(s)",
                cfg.spares,
                n - 1
            );
            return (EXIT_USAGE, None);
        }
        n => {
            let (link, poller, _membership) = cluster::link(n, cfg.spares);
            (Arc::new(link), Some(poller))
        }
    };
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(e) => {
            say!("mpiweb: cannot read the listening address: {e}");
            return (1, poller);
        }
    };
    let proxy = Proxy::new(
        ProxyConfig {
            routes: cfg.routes.clone(),
            forward: cfg.forward_proxy,
            connect_ports: cfg.connect_ports.clone(),
            upstream_timeout: cfg.upstream_timeout,
            local,
        },
        Arc::clone(&transport),
    );
    health::start(proxy.pools(), &transport);
    let pools = proxy.pools().to_vec();
    let mut store_state = None;
    let store = cfg.store.as_ref().map(|prefix| {
        let workers = transport.workers().len();
        log::info!(
            "store at {prefix}: {} copies of each document on {workers} worker rank(s)",
            cfg.replicas.min(workers)
        );
        let state = Arc::new(store::State::new(
            Arc::clone(&transport),
            cfg.replicas,
            cfg.store_cache,
        ));
        store::repair::start(Arc::clone(&state));
        store_state = Some((prefix.clone(), Arc::clone(&state)));
        let store = StoreConfig {
            prefix: prefix.clone(),
            token: cfg.store_token.clone(),
            max_size: cfg.store_max_size,
        };
        Store::new(store, state)
    });
    let router = Router::new(
        cfg.status_allow.clone(),
        cfg.store.clone(),
        pools.iter().map(|p| p.spec.clone()).collect(),
        cfg.forward_proxy,
        Box::new(move |authority: &str| is_self(local, authority)),
    );
    let handler = Arc::new(Front {
        router,
        status: Status {
            transport: Arc::clone(&transport),
            pools,
            store: store_state,
        },
        store,
        proxy,
        files,
    });
    let server = Server::new(listener, conn, handler, max_connections, cfg.grace);
    let Some(poller) = poller else {
        return (stopped(server.run()), None);
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stop_server = Arc::clone(&stop);
    let serving = thread::Builder::new()
        .name("acceptor".into())
        .spawn(move || {
            let result = server.run();
            stop_server.store(true, Ordering::Relaxed);
            result
        });
    let serving = match serving {
        Ok(t) => t,
        Err(e) => return (stopped(Err(e)), Some(poller)),
    };
    cluster.dispatch(&poller, &stop);
    let code = match serving.join() {
        Ok(result) => stopped(result),
        Err(_) => 1,
    };
    (code, Some(poller))
}

/// The command line, checked: `None` after printing help or the version.
fn checked_config() -> Result<Option<Config>, String> {
    let cfg = match config::parse_args(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            print!("{}", config::USAGE);
            return Ok(None);
        }
        Ok(Command::Version) => {
            println!("mpiweb {}", env!("CARGO_PKG_VERSION"));
            return Ok(None);
        }
        Err(msg) => return Err(format!("{msg} (see mpiweb --help)")),
    };
    if !cfg.docroot.is_dir() {
        return Err(format!(
            "document root '{}' is not a directory",
            cfg.docroot.display()
        ));
    }
    check_store(&cfg)?;
    if let Some(path) = &cfg.access_log {
        access::check_file(path)
            .map_err(|e| format!("cannot open access log '{}': {e}", path.display()))?;
    }
    Ok(Some(*cfg))
}

/// The store's start-up rules, checked on every rank before MPI starts:
/// writes without a token only on a loopback address, and a usable data
/// directory.
fn check_store(cfg: &Config) -> Result<(), String> {
    if cfg.store.is_none() {
        return Ok(());
    }
    if cfg.store_token.is_none() && !config::is_loopback(&cfg.listen) {
        return Err(format!(
            "--store without --store-token would let anyone on the network write: \
             listen on a loopback address (not {}) or set --store-token TOKEN",
            cfg.listen
        ));
    }
    std::fs::create_dir_all(&cfg.data)
        .map_err(|e| format!("cannot create data directory '{}': {e}", cfg.data.display()))
}

/// This rank's replica of the store, as the worker's runner of store
/// streams; `None` without `--store`.
fn replica_side(cfg: &Config, rank: usize) -> Result<Option<Side>, String> {
    if cfg.store.is_none() {
        return Ok(None);
    }
    let dir = cfg.data.join(format!("rank-{rank}"));
    let replica = Replica::open(&dir)
        .map_err(|e| format!("cannot open store replica '{}': {e}", dir.display()))?;
    let count = replica.inventory().map_or(0, |docs| docs.len());
    mpiweb::metrics::global().set_store_docs(count as u64);
    log::info!(
        "store replica rank {rank} (pid {}) at {}: {count} documents",
        std::process::id(),
        dir.display()
    );
    let replica = Arc::new(replica);
    Ok(Some(Arc::new(move |frame, rx: &_, out: &_| {
        store::replica::serve(&replica, frame, rx, out)
    })))
}

/// The exit code for a server that stopped serving.
fn stopped(result: std::io::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            say!("mpiweb: server stopped: {e}");
            1
        }
    }
}

/// The connection cap, lowered to what the open-file limit allows once
/// raised to the hard limit: past it `accept` would fail and clients would
/// wait instead of getting 503.
fn connection_cap(wanted: usize, files_limit: Option<u64>) -> usize {
    match files_limit {
        Some(limit) if (limit as usize) < wanted + config::RESERVED_FDS => {
            let cap = (limit as usize).saturating_sub(config::RESERVED_FDS).max(1);
            log::warn!(
                "open-file hard limit is {limit}: serving at most {cap} connections \
                 (raise it with ulimit -Hn, or lower --max-connections)"
            );
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
