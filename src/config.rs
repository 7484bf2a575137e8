//! Every option and limit of mpiweb, with its documented default, and the
//! command-line parser (pure: arguments and environment in, `Config` out).

use crate::proxy::route::{parse_connect_ports, parse_route, ConnectPorts, RouteSpec};
use crate::status::{parse_allow, Cidr};
use std::path::PathBuf;
use std::time::Duration;

/// Bytes in a request head, request line to blank line (431 beyond).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Header lines in a request head (431 beyond).
pub const MAX_HEADERS: usize = 100;
/// Bytes in a request target (414 beyond).
pub const MAX_TARGET_BYTES: usize = 8 * 1024;
/// Hex digits in a chunk size: 16 fill a u64 (400 beyond).
pub const MAX_CHUNK_SIZE_DIGITS: usize = 16;
/// Bytes of chunk extensions on one chunk-size line (400 beyond).
pub const MAX_CHUNK_EXT_BYTES: usize = 4096;
/// Time for a whole request head to arrive once a request has begun (408).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time an idle keep-alive connection is held open for its next request.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a blocked write to a client may take before the connection is dropped.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; beyond it, 503 and close.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Bytes in a request body (413 beyond).
pub const DEFAULT_MAX_BODY: u64 = 1 << 30;
/// Stack of each connection thread: enough for the deepest handler, small
/// enough that 10,000 connections stay cheap.
pub const CONNECTION_STACK_BYTES: usize = 256 * 1024;
/// Unread request body bytes discarded to keep a connection open; a larger
/// rest (or one slower than the header timeout) closes it instead.
pub const MAX_DRAIN_BYTES: u64 = 64 * 1024;
/// Largest file kept in the in-memory file cache.
pub const CACHE_MAX_FILE_BYTES: u64 = 64 * 1024;
/// Bytes the file cache may hold in all.
pub const CACHE_MAX_BYTES: usize = 64 << 20;
/// Files the file cache may hold.
pub const CACHE_MAX_ENTRIES: usize = 8192;
/// Accept backlog (std would use 128; the kernel caps it at somaxconn).
pub const LISTEN_BACKLOG: i32 = 4096;
/// File descriptors kept back from the connection cap for files and MPI.
pub const RESERVED_FDS: usize = 64;
/// Time an upstream has to accept a connection, take a request or send
/// the next bytes of its answer (504 beyond).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// The only port CONNECT may reach unless told otherwise (HTTPS).
pub const DEFAULT_CONNECT_PORT: u16 = 443;
/// Request body bytes rank 0 keeps per request, to send them again to a
/// second upstream if the first fails before answering; a longer body is
/// not retried.
pub const REPLAY_LIMIT: usize = 1 << 20;
/// Such copies kept at once, all requests together: beyond it, a body is
/// not kept (and not retried) rather than memory growing with the load.
pub const REPLAY_BUDGET: usize = 64 << 20;
/// Who may read the status pages: this machine only.
pub const DEFAULT_STATUS_ALLOW: &str = "127.0.0.0/8,::1";
/// Time connections get to finish their requests after SIGTERM or SIGINT.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Where each rank keeps its store replica (under `rank-N/`).
pub const DEFAULT_DATA_DIR: &str = "data";
/// Copies of each stored document.
pub const DEFAULT_REPLICAS: usize = 2;
/// Largest stored document (413 beyond).
pub const DEFAULT_STORE_MAX_SIZE: u64 = 64 << 20;
/// Stored document bytes rank 0 holds at once on their way to replicas:
/// beyond it, a PUT gets 503 rather than memory growing with the load.
pub const STORE_BUDGET: usize = 256 << 20;
/// Memory rank 0 gives the bodies of small stored documents, so that
/// reading them again needs no replica.
pub const DEFAULT_STORE_CACHE: usize = 64 << 20;
/// Largest stored document kept in that memory.
pub const STORE_CACHE_MAX_DOC: u64 = 64 * 1024;

/// Everything a running server needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: String,
    pub docroot: PathBuf,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections: usize,
    pub max_body: u64,
    pub listing: bool,
    /// Write access lines to this file instead of the log on stderr.
    pub access_log: Option<PathBuf>,
    /// Reverse-proxy routes, in the order given.
    pub routes: Vec<RouteSpec>,
    /// Serve absolute-form requests for other hosts, and CONNECT.
    pub forward_proxy: bool,
    pub connect_ports: ConnectPorts,
    pub upstream_timeout: Duration,
    /// Where the document store is mounted (starts and ends with `/`).
    pub store: Option<String>,
    /// Where each rank keeps its replica.
    pub data: PathBuf,
    pub replicas: usize,
    pub store_token: Option<String>,
    pub store_max_size: u64,
    pub store_cache: usize,
    pub grace: Duration,
    /// Worker ranks (the last ones) that start idle and join the rotation
    /// when a worker dies.
    pub spares: usize,
    /// Who may read `/-/status`, `/-/status.json` and `/-/metrics`.
    pub status_allow: Vec<Cidr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:8080".into(),
            docroot: PathBuf::from("www"),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_body: DEFAULT_MAX_BODY,
            listing: true,
            access_log: None,
            routes: Vec::new(),
            forward_proxy: false,
            connect_ports: ConnectPorts::List(vec![DEFAULT_CONNECT_PORT]),
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            store: None,
            data: PathBuf::from(DEFAULT_DATA_DIR),
            replicas: DEFAULT_REPLICAS,
            store_token: None,
            store_max_size: DEFAULT_STORE_MAX_SIZE,
            store_cache: DEFAULT_STORE_CACHE,
            grace: DEFAULT_GRACE,
            spares: 0,
            status_allow: parse_allow(DEFAULT_STATUS_ALLOW).unwrap_or_default(),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

pub const USAGE: &str = "\
Usage: mpiweb [OPTIONS] [DOCROOT]
       mpirun -np N mpiweb [OPTIONS] [DOCROOT]

An HTTP/1.1 server whose rank 0 serves DOCROOT (default ./www) and whose
other MPI ranks are workers.

Server:
  -l, --listen ADDR             address to listen on [default: 0.0.0.0:8080]
      --max-connections N       connections at once; beyond it 503 [default: 16384]
      --header-timeout SECS     time for a request head to arrive; then 408 [default: 10]
      --keepalive-timeout SECS  idle time before a keep-alive connection closes [default: 30]
      --max-body BYTES          largest request body; beyond it 413 [default: 1073741824]
      --access-log FILE         append access lines to FILE instead of stderr
                                (SIGHUP reopens it, for log rotation)
      --status-allow CIDR[,CIDR]  who may read /-/status, /-/status.json and
                                /-/metrics; others get 403 [default: 127.0.0.0/8,::1]
      --grace SECS              after SIGTERM, SIGINT or SIGUSR2, time for
                                requests in flight to finish; a second signal
                                exits at once [default: 10]
      --spares K                the last K worker ranks start idle; one joins
                                the rotation (and the store's placement) each
                                time a worker dies [default: 0]
      --config FILE             read options from FILE: one per line, without
                                dashes (`route /api http://127.0.0.1:5000`),
                                `#` comments; later flags override it
      --docroot DIR             the same as the DOCROOT argument
Proxy (requests run on the worker ranks, or in-process when alone):
      --route 'MATCH URL [weight=N]... [SETTING...]'  (repeatable)
                                send matching requests to a pool of http://
                                upstreams. MATCH: a /prefix, host=NAME,
                                header=NAME:VALUE (any mix; the most specific
                                route wins: header, then host, then the
                                longest prefix). SETTINGs: policy=round-robin|
                                least-conn|ip-hash|header-hash:NAME,
                                health=PATH interval=5s timeout=2s fails=1
                                passes=1, max-fails=1 fail-timeout=10s,
                                retry-non-idempotent. PREFIX=URL[,URL...] is
                                the short form [default: none]
      --forward-proxy           proxy absolute-form requests for other hosts,
                                and CONNECT [default: off]
      --connect-ports LIST|any  ports CONNECT may reach [default: 443]
      --upstream-timeout SECS   time to connect, and between upstream bytes;
                                then 504 [default: 30]
Document store (documents live on --replicas worker ranks, on disk):
      --store PREFIX            PUT, GET, HEAD and DELETE documents under PREFIX
                                (`/store/`; `/` for everything: stored documents
                                then come before DOCROOT files); GET PREFIX
                                lists them [default: off]
      --data DIR                each rank keeps its replica in DIR/rank-N/
                                [default: ./data]
      --replicas N              copies of each document, at most one per
                                worker rank [default: 2]
      --store-token TOKEN       PUT and DELETE need `Authorization: Bearer TOKEN`;
                                without it, --store needs a loopback --listen
      --store-max-size BYTES    largest document; beyond it 413 [default: 67108864]
      --store-cache BYTES       memory on rank 0 for documents up to 64 KiB, read
                                again without a replica; 0 turns it off
                                [default: 67108864]
Static files:
      --no-listing              answer 403 for directories without index.html
Other:
  -h, --help                    print this help
  -V, --version                 print the version

Every option can also be set through the environment: MPIWEB_LISTEN,
MPIWEB_MAX_CONNECTIONS, MPIWEB_HEADER_TIMEOUT, MPIWEB_KEEPALIVE_TIMEOUT,
MPIWEB_MAX_BODY, MPIWEB_ACCESS_LOG, MPIWEB_NO_LISTING=1, MPIWEB_DOCROOT,
MPIWEB_ROUTE (routes separated by `;`, or short-form routes by spaces),
MPIWEB_FORWARD_PROXY=1, MPIWEB_CONNECT_PORTS, MPIWEB_UPSTREAM_TIMEOUT,
MPIWEB_STORE, MPIWEB_DATA, MPIWEB_REPLICAS, MPIWEB_STORE_TOKEN,
MPIWEB_STORE_MAX_SIZE, MPIWEB_STORE_CACHE, MPIWEB_GRACE, MPIWEB_STATUS_ALLOW, MPIWEB_CONFIG (read before the flags).
Flags win.
The access log goes to stderr at level info; RUST_LOG=warn silences it.
";

/// Parse the arguments after the program name. `env` looks up environment
/// variables, so tests pass a table instead of the real environment.
pub fn parse_args<I, E>(args: I, env: E) -> Result<Command, String>
where
    I: IntoIterator<Item = String>,
    E: Fn(&str) -> Option<String>,
{
    parse_args_with(args, env, |path| {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    })
}

/// Options that take no value.
const FLAGS: [&str; 2] = ["forward-proxy", "no-listing"];
/// Options that take one.
const VALUED: [&str; 19] = [
    "listen",
    "max-connections",
    "header-timeout",
    "keepalive-timeout",
    "max-body",
    "access-log",
    "route",
    "connect-ports",
    "upstream-timeout",
    "docroot",
    "store",
    "data",
    "replicas",
    "store-token",
    "store-max-size",
    "store-cache",
    "grace",
    "status-allow",
    "spares",
];

/// `parse_args`, reading `--config` files through `read`.
pub fn parse_args_with<I, E, R>(args: I, env: E, read: R) -> Result<Command, String>
where
    I: IntoIterator<Item = String>,
    E: Fn(&str) -> Option<String>,
    R: Fn(&str) -> Result<String, String>,
{
    let mut p = Parser {
        c: Config::default(),
        routes_from_env: false,
    };
    for (var, name) in [
        ("MPIWEB_LISTEN", "listen"),
        ("MPIWEB_MAX_CONNECTIONS", "max-connections"),
        ("MPIWEB_HEADER_TIMEOUT", "header-timeout"),
        ("MPIWEB_KEEPALIVE_TIMEOUT", "keepalive-timeout"),
        ("MPIWEB_MAX_BODY", "max-body"),
        ("MPIWEB_ACCESS_LOG", "access-log"),
        ("MPIWEB_CONNECT_PORTS", "connect-ports"),
        ("MPIWEB_UPSTREAM_TIMEOUT", "upstream-timeout"),
        ("MPIWEB_DOCROOT", "docroot"),
        ("MPIWEB_STORE", "store"),
        ("MPIWEB_DATA", "data"),
        ("MPIWEB_REPLICAS", "replicas"),
        ("MPIWEB_STORE_TOKEN", "store-token"),
        ("MPIWEB_STORE_MAX_SIZE", "store-max-size"),
        ("MPIWEB_STORE_CACHE", "store-cache"),
        ("MPIWEB_GRACE", "grace"),
        ("MPIWEB_SPARES", "spares"),
        ("MPIWEB_STATUS_ALLOW", "status-allow"),
    ] {
        if let Some(v) = env(var) {
            p.option(name, Some(&v))
                .map_err(|e| format!("{var}: {e}"))?;
        }
    }
    if env("MPIWEB_NO_LISTING").is_some_and(|v| v != "0" && !v.is_empty()) {
        p.c.listing = false;
    }
    if env("MPIWEB_FORWARD_PROXY").is_some_and(|v| v != "0" && !v.is_empty()) {
        p.c.forward_proxy = true;
    }
    for route in env("MPIWEB_ROUTE")
        .as_deref()
        .map(split_routes)
        .unwrap_or_default()
    {
        p.option("route", Some(&route))
            .map_err(|e| format!("MPIWEB_ROUTE: {e}"))?;
    }
    p.routes_from_env = !p.c.routes.is_empty();
    if let Some(file) = env("MPIWEB_CONFIG") {
        p.config_file(&file, &read)
            .map_err(|e| format!("MPIWEB_CONFIG: {e}"))?;
    }

    let mut args = args.into_iter();
    let mut docroot_seen = false;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let name = match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-l" => "listen",
            f if f.starts_with("--") => &f[2..],
            f if f.starts_with('-') && f.len() > 1 => return Err(format!("unknown option {f}")),
            _ if docroot_seen => return Err(format!("unexpected argument {arg}")),
            _ => {
                p.c.docroot = PathBuf::from(&arg);
                docroot_seen = true;
                continue;
            }
        };
        let takes_value = name == "config" || VALUED.contains(&name);
        if !takes_value && !FLAGS.contains(&name) {
            return Err(format!("unknown option {flag}"));
        }
        let value = match (takes_value, inline) {
            (true, Some(v)) => Some(v),
            (true, None) => Some(args.next().ok_or(format!("{flag} needs a value"))?),
            (false, None) => None,
            (false, Some(_)) => return Err(format!("{flag} takes no value")),
        };
        if name == "config" {
            let file = value.unwrap_or_default();
            p.config_file(&file, &read)
                .map_err(|e| format!("{flag}: {e}"))?;
            continue;
        }
        p.option(name, value.as_deref())
            .map_err(|e| format!("{flag}: {e}"))?;
    }
    Ok(Command::Run(Box::new(p.c)))
}

/// MPIWEB_ROUTE: routes separated by `;` or new lines. Without either,
/// words that are each a whole `PREFIX=URL[,URL...]` are routes of their
/// own (the older form, separated by spaces).
fn split_routes(v: &str) -> Vec<String> {
    let words: Vec<&str> = v.split_whitespace().collect();
    let old_form = |w: &&str| w.starts_with('/') && w.contains('=');
    if !v.contains([';', '\n']) && words.iter().all(old_form) {
        return words.into_iter().map(String::from).collect();
    }
    v.split([';', '\n'])
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(String::from)
        .collect()
}

/// The options read so far.
struct Parser {
    c: Config,
    /// The routes came from MPIWEB_ROUTE: the first route of a file or of
    /// the command line replaces them, as every flag wins over its variable.
    routes_from_env: bool,
}

impl Parser {
    /// One option by its long name without dashes, as a file line names it.
    fn option(&mut self, name: &str, value: Option<&str>) -> Result<(), String> {
        if FLAGS.contains(&name) {
            if value.is_some_and(|v| !v.is_empty()) {
                return Err("takes no value".into());
            }
            match name {
                "forward-proxy" => self.c.forward_proxy = true,
                _ => self.c.listing = false,
            }
            return Ok(());
        }
        if name == "config" {
            return Err("config files do not include others".into());
        }
        if !VALUED.contains(&name) {
            return Err(format!("unknown option {name}"));
        }
        let v = value.ok_or("needs a value")?;
        if name == "route" && self.routes_from_env {
            self.c.routes.clear();
            self.routes_from_env = false;
        }
        set(&mut self.c, name, v)
    }

    /// `--config FILE`: each line is an option without its dashes and its
    /// value (`route /api http://127.0.0.1:5000`); `#` starts a comment.
    fn config_file(
        &mut self,
        file: &str,
        read: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<(), String> {
        let text = read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
        for (n, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
            let line = strip_comment(line).trim();
            if line.is_empty() {
                continue;
            }
            let (name, value) = match line.split_once(char::is_whitespace) {
                Some((name, value)) => (name, Some(value.trim())),
                None => (line, None),
            };
            let name = name.trim_start_matches('-');
            // `listen=127.0.0.1:8080`, as `--listen=...` on the command line.
            let (name, value) = match name.split_once('=') {
                Some((name, inline)) if value.is_none() => (name, Some(inline)),
                _ => (name, value),
            };
            self.option(name, value)
                .map_err(|e| format!("{file} line {}: {name}: {e}", n + 1))?;
        }
        Ok(())
    }
}

/// A config line without its comment: `#` at the start or after white
/// space (`a#b` is a value).
fn strip_comment(line: &str) -> &str {
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        if c == '#' && prev.is_whitespace() {
            return &line[..i];
        }
        prev = c;
    }
    line
}

fn set(c: &mut Config, name: &str, v: &str) -> Result<(), String> {
    match name {
        "listen" => {
            if !v.contains(':') {
                return Err(format!("'{v}' is not HOST:PORT"));
            }
            c.listen = v.to_string();
        }
        "max-connections" => c.max_connections = parse_count(v)?,
        "header-timeout" => c.header_timeout = parse_secs(v)?,
        "keepalive-timeout" => c.keepalive_timeout = parse_secs(v)?,
        "max-body" => c.max_body = parse_count(v)? as u64,
        "access-log" if v.is_empty() => return Err("needs a file name".into()),
        "access-log" => c.access_log = Some(PathBuf::from(v)),
        "route" => c.routes.push(parse_route(v)?),
        "connect-ports" => c.connect_ports = parse_connect_ports(v)?,
        "upstream-timeout" => c.upstream_timeout = parse_secs(v)?,
        "docroot" if v.is_empty() => return Err("needs a directory".into()),
        "docroot" => c.docroot = PathBuf::from(v),
        "store" => c.store = Some(parse_prefix(v)?),
        "data" if v.is_empty() => return Err("needs a directory".into()),
        "data" => c.data = PathBuf::from(v),
        "replicas" => c.replicas = parse_count(v)?,
        "spares" if v == "0" => c.spares = 0,
        "spares" => c.spares = parse_count(v)?,
        "store-token" if v.trim().is_empty() || v.chars().any(|c| c.is_whitespace()) => {
            return Err("needs a token without spaces".into())
        }
        "store-token" => c.store_token = Some(v.to_string()),
        "store-max-size" => c.store_max_size = parse_count(v)? as u64,
        "store-cache" if v == "0" => c.store_cache = 0,
        "store-cache" => c.store_cache = parse_count(v)?,
        "grace" => c.grace = parse_secs(v)?,
        "status-allow" => c.status_allow = parse_allow(v)?,
        _ => return Err(format!("unknown option {name}")),
    }
    Ok(())
}

/// A store prefix: a path starting with `/`, given a trailing `/`.
fn parse_prefix(v: &str) -> Result<String, String> {
    let ok = v.starts_with('/')
        && !v.split('/').any(|seg| seg == "." || seg == "..")
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && !b"?#%\\".contains(&b));
    if !ok {
        return Err(format!("'{v}' is not a path like /store/"));
    }
    Ok(match v.ends_with('/') {
        true => v.to_string(),
        false => format!("{v}/"),
    })
}

/// Whether the listening address `listen` (HOST:PORT) is only reachable
/// from this machine: loopback addresses, and names that resolve only to
/// them.
pub fn is_loopback(listen: &str) -> bool {
    use std::net::ToSocketAddrs;
    match listen.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

fn parse_count(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("'{v}' is not a positive whole number")),
    }
}

fn parse_secs(v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("'{v}' is not a number of seconds in (0, 86400]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Command, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_args(args.iter().map(|s| s.to_string()), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    fn config(args: &[&str], env: &[(&str, &str)]) -> Config {
        match run(args, env) {
            Ok(Command::Run(c)) => *c,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = config(&[], &[]);
        assert_eq!(c, Config::default());
        assert_eq!(c.listen, "0.0.0.0:8080");
        assert_eq!(c.docroot, PathBuf::from("www"));
    }

    #[test]
    fn flags_table() {
        let c = config(
            &[
                "-l",
                "127.0.0.1:0",
                "--header-timeout=0.5",
                "--max-body",
                "10",
                "--no-listing",
                "site",
            ],
            &[],
        );
        assert_eq!(c.listen, "127.0.0.1:0");
        assert_eq!(c.header_timeout, Duration::from_millis(500));
        assert_eq!(c.max_body, 10);
        assert!(!c.listing);
        assert_eq!(c.docroot, PathBuf::from("site"));
        let c = config(&["--access-log", "a.log"], &[]);
        assert_eq!(c.access_log, Some(PathBuf::from("a.log")));
        assert_eq!(c.grace, Duration::from_secs(10));
        let c = config(&["--grace", "2.5"], &[]);
        assert_eq!(c.grace, Duration::from_millis(2500));
        assert!(run(&["--grace", "0"], &[]).is_err());
        assert_eq!(c.status_allow.len(), 2);
        let c = config(&["--status-allow", "10.0.0.0/8"], &[]);
        assert!(c.status_allow[0].contains("10.1.2.3".parse().unwrap()));
        assert!(run(&["--status-allow", "10.0.0.0/40"], &[]).is_err());
    }

    #[test]
    fn proxy_flags() {
        let c = config(&[], &[]);
        assert!(c.routes.is_empty() && !c.forward_proxy);
        assert_eq!(c.connect_ports, ConnectPorts::List(vec![443]));
        assert_eq!(c.upstream_timeout, Duration::from_secs(30));
        let c = config(
            &[
                "--route",
                "/=http://localhost:5000",
                "--route=/api=http://127.0.0.1:1,http://127.0.0.1:2",
                "--forward-proxy",
                "--connect-ports",
                "any",
                "--upstream-timeout",
                "2.5",
            ],
            &[],
        );
        let prefixes: Vec<&str> = c.routes.iter().map(|r| r.prefix.as_str()).collect();
        assert_eq!(prefixes, ["/", "/api"]);
        assert_eq!(c.routes[1].upstreams.len(), 2);
        assert!(c.forward_proxy);
        assert_eq!(c.connect_ports, ConnectPorts::Any);
        assert_eq!(c.upstream_timeout, Duration::from_millis(2500));
        let env = [
            ("MPIWEB_ROUTE", "/a=http://h:1 /b=http://h:2"),
            ("MPIWEB_FORWARD_PROXY", "1"),
        ];
        let c = config(&[], &env);
        assert_eq!((c.routes.len(), c.forward_proxy), (2, true));
        let c = config(
            &["--route", "/c=http://h:3", "--route", "/d=http://h:4"],
            &env,
        );
        let prefixes: Vec<&str> = c.routes.iter().map(|r| r.prefix.as_str()).collect();
        assert_eq!(prefixes, ["/c", "/d"]);
    }

    #[test]
    fn spares_are_a_count_zero_included() {
        assert_eq!(config(&[], &[]).spares, 0);
        assert_eq!(config(&["--spares", "2"], &[]).spares, 2);
        assert_eq!(config(&["--spares=0"], &[]).spares, 0);
        assert_eq!(config(&[], &[("MPIWEB_SPARES", "1")]).spares, 1);
        for bad in ["-1", "x", "1.5", ""] {
            assert!(run(&["--spares", bad], &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn store_flags() {
        let c = config(&[], &[]);
        assert_eq!((c.store.as_deref(), c.replicas), (None, 2));
        assert_eq!(c.data, PathBuf::from("data"));
        assert_eq!(c.store_max_size, 64 << 20);
        let c = config(
            &[
                "--store",
                "/store",
                "--data=/tmp/d",
                "--replicas",
                "3",
                "--store-token",
                "s3cret",
                "--store-max-size",
                "4096",
                "--store-cache=0",
            ],
            &[],
        );
        assert_eq!(c.store.as_deref(), Some("/store/"));
        assert_eq!(c.data, PathBuf::from("/tmp/d"));
        assert_eq!((c.replicas, c.store_max_size, c.store_cache), (3, 4096, 0));
        assert_eq!(c.store_token.as_deref(), Some("s3cret"));
        let env = [("MPIWEB_STORE", "/"), ("MPIWEB_STORE_TOKEN", "t")];
        let c = config(&[], &env);
        assert_eq!(
            (c.store.as_deref(), c.store_token.as_deref()),
            (Some("/"), Some("t"))
        );
        for bad in [
            &["--store", "store"][..],
            &["--store", "/a/../b"],
            &["--store", "/a b"],
            &["--store", "/a?x"],
            &["--replicas", "0"],
            &["--store-token", ""],
            &["--store-token", "a b"],
            &["--data", ""],
            &["--store-max-size", "1M"],
        ] {
            assert!(run(bad, &[]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loopback_addresses() {
        for (addr, want) in [
            ("127.0.0.1:0", true),
            ("127.1.2.3:80", true),
            ("[::1]:8080", true),
            ("localhost:8080", true),
            ("0.0.0.0:8080", false),
            ("[::]:8080", false),
            ("192.0.2.1:80", false),
            ("nonsense", false),
        ] {
            assert_eq!(is_loopback(addr), want, "{addr}");
        }
    }

    #[test]
    fn environment_then_flags() {
        let env = [
            ("MPIWEB_LISTEN", "127.0.0.1:1"),
            ("MPIWEB_MAX_CONNECTIONS", "7"),
        ];
        let c = config(&["--listen", "127.0.0.1:2"], &env);
        assert_eq!((c.listen.as_str(), c.max_connections), ("127.0.0.1:2", 7));
    }

    #[test]
    fn errors_table() {
        let cases: &[&[&str]] = &[
            &["--bogus"],
            &["--listen"],
            &["--listen", "8080"],
            &["--max-connections", "0"],
            &["--max-connections", "+5"],
            &["--header-timeout", "-1"],
            &["--header-timeout", "soon"],
            &["--max-body", "1k"],
            &["--route", "/=https://a"],
            &["--route", "nowhere"],
            &["--route"],
            &["--connect-ports", "ssh"],
            &["--upstream-timeout", "0"],
            &["--forward-proxy=1"],
            &["--config"],
            &["a", "b"],
        ];
        for args in cases {
            assert!(run(args, &[]).is_err(), "{args:?}");
        }
        assert!(run(&[], &[("MPIWEB_MAX_BODY", "x")]).is_err());
    }

    fn with_files(args: &[&str], files: &[(&str, &str)]) -> Result<Command, String> {
        parse_args_with(
            args.iter().map(|s| s.to_string()),
            |_| None,
            |path| {
                files
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, text)| text.to_string())
                    .ok_or_else(|| "No such file or directory".to_string())
            },
        )
    }

    #[test]
    fn config_file_is_the_command_line_without_dashes() {
        let file = "\u{feff}# a pool\n\
                    listen=127.0.0.1:9000\n\
                    access-log /tmp/a#b.log # the log\r\n\
                    \n\
                    route /api http://127.0.0.1:5000 http://127.0.0.1:5001 policy=least-conn # two\n\
                    --route /=http://127.0.0.1:6000\n\
                    forward-proxy\n\
                    upstream-timeout 2\n\
                    docroot site\n";
        let c = match with_files(
            &["--config", "m.conf", "--upstream-timeout=3"],
            &[("m.conf", file)],
        ) {
            Ok(Command::Run(c)) => *c,
            other => panic!("{other:?}"),
        };
        assert_eq!(c.listen, "127.0.0.1:9000");
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[0].upstreams.len(), 2);
        assert_eq!(c.routes[0].policy, crate::proxy::route::Policy::LeastConn);
        assert!(c.forward_proxy);
        assert_eq!(
            c.upstream_timeout,
            Duration::from_secs(3),
            "a later flag wins"
        );
        assert_eq!(c.docroot, PathBuf::from("site"));
        assert_eq!(c.access_log, Some(PathBuf::from("/tmp/a#b.log")));

        for (text, line) in [
            ("listen 127.0.0.1:1\nbogus 1\n", "m.conf line 2: bogus"),
            ("\n\nroute /a\n", "m.conf line 3: route"),
            ("forward-proxy yes\n", "m.conf line 1: forward-proxy"),
            ("listen\n", "m.conf line 1: listen: needs a value"),
            ("config other.conf\n", "m.conf line 1: config"),
        ] {
            let err = with_files(&["--config", "m.conf"], &[("m.conf", text)]).unwrap_err();
            assert!(err.contains(line), "{text:?}: {err}");
        }
        let err = with_files(&["--config", "gone.conf"], &[]).unwrap_err();
        assert!(err.contains("cannot read gone.conf"), "{err}");
    }

    #[test]
    fn environment_routes() {
        let c = config(
            &[],
            &[(
                "MPIWEB_ROUTE",
                "/a http://h:1 policy=ip-hash; /b=http://h:2",
            )],
        );
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[0].policy, crate::proxy::route::Policy::IpHash);
        let c = config(&[], &[("MPIWEB_ROUTE", "/a http://h:1 http://h:2")]);
        assert_eq!((c.routes.len(), c.routes[0].upstreams.len()), (1, 2));
        let c = config(&[], &[("MPIWEB_ROUTE", "/a=HTTP://h:1 /b=http://h:2")]);
        assert_eq!(c.routes.len(), 2);
        let c = config(
            &[],
            &[(
                "MPIWEB_ROUTE",
                "/a http://h:1\n/b http://h:2 policy=ip-hash\n",
            )],
        );
        assert_eq!(c.routes.len(), 2);
    }

    #[test]
    fn help_and_version() {
        assert_eq!(run(&["--help"], &[]), Ok(Command::Help));
        assert_eq!(run(&["-V"], &[]), Ok(Command::Version));
    }
}
