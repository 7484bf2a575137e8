//! Every option and limit of mpiweb, with its documented default, and the
//! command-line parser (pure: arguments and environment in, `Config` out).

use crate::proxy::route::{parse_connect_ports, parse_route, ConnectPorts, RouteSpec};
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
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Config),
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
Proxy (requests run on the worker ranks, or in-process when alone):
      --route PREFIX=URL[,URL...]
                                send paths starting with PREFIX to these
                                http:// upstreams in turn; repeatable, the
                                longest prefix wins [default: none]
      --forward-proxy           proxy absolute-form requests for other hosts,
                                and CONNECT [default: off]
      --connect-ports LIST|any  ports CONNECT may reach [default: 443]
      --upstream-timeout SECS   time to connect, and between upstream bytes;
                                then 504 [default: 30]
Static files:
      --no-listing              answer 403 for directories without index.html
Other:
  -h, --help                    print this help
  -V, --version                 print the version

Every option can also be set through the environment: MPIWEB_LISTEN,
MPIWEB_MAX_CONNECTIONS, MPIWEB_HEADER_TIMEOUT, MPIWEB_KEEPALIVE_TIMEOUT,
MPIWEB_MAX_BODY, MPIWEB_ACCESS_LOG, MPIWEB_NO_LISTING=1, MPIWEB_DOCROOT,
MPIWEB_ROUTE (routes separated by spaces), MPIWEB_FORWARD_PROXY=1,
MPIWEB_CONNECT_PORTS, MPIWEB_UPSTREAM_TIMEOUT.
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
    let mut c = Config::default();
    for (var, flag) in [
        ("MPIWEB_LISTEN", "--listen"),
        ("MPIWEB_MAX_CONNECTIONS", "--max-connections"),
        ("MPIWEB_HEADER_TIMEOUT", "--header-timeout"),
        ("MPIWEB_KEEPALIVE_TIMEOUT", "--keepalive-timeout"),
        ("MPIWEB_MAX_BODY", "--max-body"),
        ("MPIWEB_ACCESS_LOG", "--access-log"),
        ("MPIWEB_CONNECT_PORTS", "--connect-ports"),
        ("MPIWEB_UPSTREAM_TIMEOUT", "--upstream-timeout"),
    ] {
        if let Some(v) = env(var) {
            set(&mut c, flag, &v).map_err(|e| format!("{var}: {e}"))?;
        }
    }
    if env("MPIWEB_NO_LISTING").is_some_and(|v| v != "0" && !v.is_empty()) {
        c.listing = false;
    }
    if env("MPIWEB_FORWARD_PROXY").is_some_and(|v| v != "0" && !v.is_empty()) {
        c.forward_proxy = true;
    }
    for route in env("MPIWEB_ROUTE")
        .iter()
        .flat_map(|v| v.split_whitespace())
    {
        set(&mut c, "--route", route).map_err(|e| format!("MPIWEB_ROUTE: {e}"))?;
    }
    let mut routes_from_env = !c.routes.is_empty();
    if let Some(root) = env("MPIWEB_DOCROOT") {
        c.docroot = PathBuf::from(root);
    }

    let mut args = args.into_iter();
    let mut docroot_seen = false;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--no-listing" => c.listing = false,
            "--forward-proxy" => c.forward_proxy = true,
            "-l"
            | "--listen"
            | "--max-connections"
            | "--header-timeout"
            | "--keepalive-timeout"
            | "--max-body"
            | "--access-log"
            | "--route"
            | "--connect-ports"
            | "--upstream-timeout" => {
                if flag == "--route" && routes_from_env {
                    // Routes on the command line replace those of the
                    // environment, as every flag wins over its variable.
                    c.routes.clear();
                    routes_from_env = false;
                }
                let value = match inline {
                    Some(v) => v,
                    None => args.next().ok_or(format!("{flag} needs a value"))?,
                };
                set(&mut c, &flag, &value).map_err(|e| format!("{flag}: {e}"))?;
            }
            f if f.starts_with('-') && f.len() > 1 => return Err(format!("unknown option {f}")),
            _ if docroot_seen => return Err(format!("unexpected argument {arg}")),
            _ => {
                c.docroot = PathBuf::from(&arg);
                docroot_seen = true;
            }
        }
    }
    Ok(Command::Run(c))
}

fn set(c: &mut Config, flag: &str, v: &str) -> Result<(), String> {
    match flag {
        "-l" | "--listen" => {
            if !v.contains(':') {
                return Err(format!("'{v}' is not HOST:PORT"));
            }
            c.listen = v.to_string();
        }
        "--max-connections" => c.max_connections = parse_count(v)?,
        "--header-timeout" => c.header_timeout = parse_secs(v)?,
        "--keepalive-timeout" => c.keepalive_timeout = parse_secs(v)?,
        "--max-body" => c.max_body = parse_count(v)? as u64,
        "--access-log" if v.is_empty() => return Err("needs a file name".into()),
        "--access-log" => c.access_log = Some(PathBuf::from(v)),
        "--route" => c.routes.push(parse_route(v)?),
        "--connect-ports" => c.connect_ports = parse_connect_ports(v)?,
        "--upstream-timeout" => c.upstream_timeout = parse_secs(v)?,
        _ => return Err(format!("unknown option {flag}")),
    }
    Ok(())
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

/// The soft limit on open files, from `/proc/self/limits` (no libc needed).
pub fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    soft.parse().ok()
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
            Ok(Command::Run(c)) => c,
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
            &["a", "b"],
        ];
        for args in cases {
            assert!(run(args, &[]).is_err(), "{args:?}");
        }
        assert!(run(&[], &[("MPIWEB_MAX_BODY", "x")]).is_err());
    }

    #[test]
    fn help_and_version() {
        assert_eq!(run(&["--help"], &[]), Ok(Command::Help));
        assert_eq!(run(&["-V"], &[]), Ok(Command::Version));
    }
}
