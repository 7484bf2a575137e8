//! Routes: which requests go to which upstreams. Pure parsing of
//! `--route` and `--connect-ports`, and the rewrite of a request target for
//! an upstream.
//!
//! A route is words: what it matches (a path prefix, `host=NAME`,
//! `header=NAME:VALUE`), its upstream URLs (each optionally followed by
//! `weight=N`), and the settings of its pool:
//!
//! ```text
//! /api http://127.0.0.1:5000 http://127.0.0.1:5001 weight=2 policy=least-conn health=/health
//! ```
//!
//! The older `PREFIX=URL[,URL...]` is one word of the same language.

use std::time::Duration;

/// One upstream of a route, from `http://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    /// `host:port`, where connections go.
    pub authority: String,
    /// The `Host` field sent: the URL's host, with its port if it had one.
    pub host: String,
    /// The path that replaces the route's prefix; empty: keep the path as
    /// it is (like nginx's `proxy_pass` with and without a URI).
    pub path: String,
    /// Its share of the requests, relative to the pool's others.
    pub weight: u32,
}

/// How a pool picks among its healthy upstreams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// In turn, by weight (nginx's smooth weighted round-robin).
    RoundRobin,
    /// The fewest requests in flight for its weight.
    LeastConn,
    /// The client's address, hashed: a client stays on one upstream.
    IpHash,
    /// The value of this request header (lower case), hashed; requests
    /// without it go round-robin.
    HeaderHash(String),
}

/// Active health checks: a GET of `path` on every upstream each
/// `interval`; `fails` failures in a row take it out, `passes` successes
/// in a row bring it back. A check passes on a 2xx or 3xx within `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub fails: u32,
    pub passes: u32,
}

pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Passive checks, as nginx's `max_fails=1 fail_timeout=10s`.
pub const DEFAULT_MAX_FAILS: u32 = 1;
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed `--route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Path prefix; `/` when the route names none.
    pub prefix: String,
    /// The `Host` the request must name (lower case, without port).
    pub host: Option<String>,
    /// A header (name in lower case) the request must carry with this value.
    pub header: Option<(String, String)>,
    pub upstreams: Vec<UpstreamUrl>,
    pub policy: Policy,
    pub health: Option<HealthCheck>,
    /// Passive checks: this many failed requests (connect failure, timeout,
    /// 5xx) within `fail_timeout` take an upstream out for `fail_timeout`;
    /// 0 turns them off.
    pub max_fails: u32,
    pub fail_timeout: Duration,
    /// Retry POST and PATCH too when an upstream fails before answering.
    pub retry_non_idempotent: bool,
}

impl RouteSpec {
    /// The order in which routes are tried: a header match first, then a
    /// host match, then the longest prefix (ties: the order given).
    pub fn specificity(&self) -> (bool, bool, usize) {
        (
            self.header.is_some(),
            self.host.is_some(),
            self.prefix.len(),
        )
    }
}

/// The ports CONNECT may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectPorts {
    Any,
    List(Vec<u16>),
}

impl ConnectPorts {
    pub fn allows(&self, port: u16) -> bool {
        match self {
            ConnectPorts::Any => true,
            ConnectPorts::List(ports) => ports.contains(&port),
        }
    }
}

/// A route: `PREFIX=URL[,URL...]`, or words (see the module's doc).
pub fn parse_route(spec: &str) -> Result<RouteSpec, String> {
    let mut prefix: Option<String> = None;
    let mut r = RouteSpec {
        prefix: String::new(),
        host: None,
        header: None,
        upstreams: Vec::new(),
        policy: Policy::RoundRobin,
        health: None,
        max_fails: DEFAULT_MAX_FAILS,
        fail_timeout: DEFAULT_FAIL_TIMEOUT,
        retry_non_idempotent: false,
    };
    let mut health: Option<String> = None;
    let (mut interval, mut timeout) = (DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_TIMEOUT);
    let (mut fails, mut passes) = (1, 1);
    let mut check_settings = Vec::new();
    let mut weighted = false;
    for word in spec.split_whitespace() {
        let bad = |why: &str| format!("route '{spec}': {why}");
        if word.starts_with('/') {
            if prefix.is_some() {
                return Err(bad("more than one path prefix"));
            }
            let (p, urls) = match word.split_once('=') {
                Some((p, urls)) => (p, Some(urls)),
                None => (word, None),
            };
            if p.bytes().any(|b| b == b'?' || b == b'#') {
                return Err(bad("the prefix must be a path"));
            }
            prefix = Some(p.to_string());
            for url in urls.into_iter().flat_map(|u| u.split(',')) {
                r.upstreams.push(parse_upstream_url(url.trim())?);
                weighted = false;
            }
        } else if word.contains("://") {
            r.upstreams.push(parse_upstream_url(word)?);
            weighted = false;
        } else if word == "retry-non-idempotent" {
            r.retry_non_idempotent = true;
        } else if let Some((key, v)) = word.split_once('=') {
            let what = |e: String| bad(&format!("{key}: {e}"));
            match key {
                "weight" => {
                    let up = r.upstreams.last_mut().filter(|_| !weighted);
                    let up = up.ok_or_else(|| bad("weight= must follow an upstream URL"))?;
                    up.weight = parse_number(v).map_err(what)?;
                    weighted = true;
                }
                "host" if !v.is_empty() && !v.contains(['/', '@']) => {
                    r.host = Some(v.to_ascii_lowercase())
                }
                "header" => {
                    let (name, value) = v
                        .split_once(':')
                        .filter(|(n, v)| is_token(n) && !v.is_empty())
                        .ok_or_else(|| bad("header= needs NAME:VALUE"))?;
                    r.header = Some((name.to_ascii_lowercase(), value.to_string()));
                }
                "policy" => r.policy = parse_policy(v).map_err(what)?,
                "health" if v.starts_with('/') => health = Some(v.to_string()),
                "interval" | "timeout" | "fails" | "passes" => {
                    match key {
                        "interval" => interval = parse_duration(v).map_err(what)?,
                        "timeout" => timeout = parse_duration(v).map_err(what)?,
                        "fails" => fails = parse_number(v).map_err(what)?,
                        _ => passes = parse_number(v).map_err(what)?,
                    }
                    check_settings.push(key);
                }
                "max-fails" => {
                    r.max_fails = match v.parse() {
                        Ok(n) if v.bytes().all(|b| b.is_ascii_digit()) => n,
                        _ => return Err(what(format!("'{v}' is not a whole number"))),
                    }
                }
                "fail-timeout" => r.fail_timeout = parse_duration(v).map_err(what)?,
                _ => return Err(bad(&format!("unknown or bad setting '{word}'"))),
            }
        } else {
            return Err(bad(&format!(
                "'{word}' is neither a /prefix, an http:// URL nor a setting"
            )));
        }
    }
    if r.upstreams.is_empty() {
        return Err(format!(
            "route '{spec}' names no upstream (PREFIX=URL[,URL...] or PREFIX URL...)"
        ));
    }
    if prefix.is_none() && r.host.is_none() && r.header.is_none() {
        return Err(format!(
            "route '{spec}' must match something: a /prefix, host= or header="
        ));
    }
    r.prefix = prefix.unwrap_or_else(|| "/".into());
    match (health, check_settings.first()) {
        (Some(path), _) => {
            r.health = Some(HealthCheck {
                path,
                interval,
                timeout,
                fails,
                passes,
            })
        }
        (None, Some(key)) => return Err(format!("route '{spec}': {key}= needs health=PATH")),
        (None, None) => {}
    }
    Ok(r)
}

/// `round-robin`, `least-conn`, `ip-hash` or `header-hash:NAME`.
fn parse_policy(v: &str) -> Result<Policy, String> {
    match v.split_once(':') {
        None if v == "round-robin" => Ok(Policy::RoundRobin),
        None if v == "least-conn" => Ok(Policy::LeastConn),
        None if v == "ip-hash" => Ok(Policy::IpHash),
        Some(("header-hash", name)) if is_token(name) => {
            Ok(Policy::HeaderHash(name.to_ascii_lowercase()))
        }
        _ => Err(format!(
            "'{v}' is not round-robin, least-conn, ip-hash or header-hash:NAME"
        )),
    }
}

/// A header name (RFC 9110 token).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A count of at least 1.
fn parse_number(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n > 0 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("'{v}' is not a positive whole number")),
    }
}

/// `2`, `2s`, `1.5s`, `500ms` or `1m`: at least a millisecond, at most a
/// day.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v, 1.0)
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && n * scale >= 0.001 && n * scale <= 86_400.0 => {
            Ok(Duration::from_secs_f64(n * scale))
        }
        _ => Err(format!(
            "'{v}' is not a time such as 2, 2s, 500ms or 1m (1ms to a day)"
        )),
    }
}

/// `http://host[:port][/path]`.
pub fn parse_upstream_url(url: &str) -> Result<UpstreamUrl, String> {
    let bad = |why: &str| format!("upstream '{url}': {why}");
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(bad("https upstreams are not supported (use http://)"))
        }
        _ => return Err(bad("must start with http://")),
    };
    let (host_port, path) = match rest.find(['/', '?', '#']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) {
        return Err(bad("no query or fragment allowed"));
    }
    if host_port.is_empty() || host_port.contains('@') {
        return Err(bad("needs a host (and no user info)"));
    }
    let (authority, host) = match split_port(host_port) {
        Some((_, Some(0))) => return Err(bad("port 0")),
        Some((host, Some(_))) if !host.is_empty() => (host_port.to_string(), host_port.to_string()),
        Some((host, None)) if !host.is_empty() => {
            (format!("{host_port}:80"), host_port.to_string())
        }
        _ => return Err(bad("bad host or port")),
    };
    Ok(UpstreamUrl {
        authority: authority.to_ascii_lowercase(),
        host,
        path: path.to_string(),
        weight: 1,
    })
}

/// Split `host[:port]` (host may be `[v6]`); `None` if the port is not a
/// number.
pub fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let colon = match authority.rfind(':') {
        Some(at) if !authority[at..].contains(']') => at,
        _ => return Some((authority, None)),
    };
    let port = &authority[colon + 1..];
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((&authority[..colon], Some(port.parse().ok()?)))
}

/// `443` or `443,8443` or `any`.
pub fn parse_connect_ports(v: &str) -> Result<ConnectPorts, String> {
    if v.eq_ignore_ascii_case("any") {
        return Ok(ConnectPorts::Any);
    }
    v.split(',')
        .map(|p| match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("connect port '{p}' is not a port number or 'any'")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(ConnectPorts::List)
}

/// The target sent upstream for `path_query` matched by `prefix`.
pub fn rewrite(path_query: &str, prefix: &str, upstream: &UpstreamUrl) -> String {
    if upstream.path.is_empty() {
        return path_query.to_string();
    }
    let rest = path_query.get(prefix.len()..).unwrap_or("");
    let mut out = upstream.path.clone();
    if out.ends_with('/') && rest.starts_with('/') {
        out.pop();
    }
    out.push_str(rest);
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

/// Whether a path has a `.` or `..` segment, plain or percent-encoded: an
/// upstream that resolves them could be reached outside the route's prefix.
pub fn has_dot_segment(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.split('/').any(|seg| {
        let lower = seg.to_ascii_lowercase().replace("%2e", ".");
        lower == "." || lower == ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_table() {
        let up = |a: &str, h: &str, p: &str| UpstreamUrl {
            authority: a.into(),
            host: h.into(),
            path: p.into(),
            weight: 1,
        };
        let ok: &[(&str, &str, Vec<UpstreamUrl>)] = &[
            (
                "/=http://localhost:5000",
                "/",
                vec![up("localhost:5000", "localhost:5000", "")],
            ),
            (
                "/api=http://127.0.0.1:5000,http://127.0.0.1:5001/v2",
                "/api",
                vec![
                    up("127.0.0.1:5000", "127.0.0.1:5000", ""),
                    up("127.0.0.1:5001", "127.0.0.1:5001", "/v2"),
                ],
            ),
            (
                "/x/=HTTP://Example.COM",
                "/x/",
                vec![up("example.com:80", "Example.COM", "")],
            ),
            (
                "/v6=http://[::1]:8080/",
                "/v6",
                vec![up("[::1]:8080", "[::1]:8080", "/")],
            ),
        ];
        for (spec, prefix, ups) in ok {
            let r = parse_route(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!((&r.prefix[..], &r.upstreams), (*prefix, ups), "{spec}");
        }
        for bad in [
            "",
            "/api",
            "api=http://a:1",
            "/a=",
            "/a=ftp://a",
            "/a=https://a",
            "/a=http://",
            "/a=http://a:0",
            "/a=http://a:99999",
            "/a=http://a:x",
            "/a=http://u@a",
            "/a=http://a/?q",
            "/a b=http://a",
        ] {
            assert!(parse_route(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn route_words() {
        let r = parse_route(
            "/api http://127.0.0.1:5000 http://127.0.0.1:5001 weight=3 \
             policy=least-conn health=/health interval=500ms fails=2 \
             max-fails=0 fail-timeout=1m retry-non-idempotent",
        )
        .unwrap();
        assert_eq!(r.prefix, "/api");
        let weights: Vec<u32> = r.upstreams.iter().map(|u| u.weight).collect();
        assert_eq!(weights, [1, 3]);
        assert_eq!(r.policy, Policy::LeastConn);
        assert_eq!(
            r.health,
            Some(HealthCheck {
                path: "/health".into(),
                interval: Duration::from_millis(500),
                timeout: DEFAULT_HEALTH_TIMEOUT,
                fails: 2,
                passes: 1,
            })
        );
        assert_eq!((r.max_fails, r.fail_timeout), (0, Duration::from_secs(60)));
        assert!(r.retry_non_idempotent);

        let r = parse_route("host=API.example header=X-Policy:2 http://a:1").unwrap();
        assert_eq!(r.prefix, "/");
        assert_eq!(r.host.as_deref(), Some("api.example"));
        assert_eq!(r.header, Some(("x-policy".into(), "2".into())));
        assert_eq!((r.max_fails, r.fail_timeout), (1, Duration::from_secs(10)));
        assert_eq!(r.health, None);
        assert_eq!(r.policy, Policy::RoundRobin);
        for (word, policy) in [
            ("ip-hash", Policy::IpHash),
            ("header-hash:X-User", Policy::HeaderHash("x-user".into())),
            ("round-robin", Policy::RoundRobin),
        ] {
            let r = parse_route(&format!("/ http://a:1 policy={word}")).unwrap();
            assert_eq!(r.policy, policy);
        }
        // The old form is one word of the new one.
        let r = parse_route("/a=http://a:1,http://b:2 policy=ip-hash").unwrap();
        assert_eq!((r.upstreams.len(), &r.policy), (2, &Policy::IpHash));
        assert!(r.specificity() < parse_route("host=x /a http://a:1").unwrap().specificity());

        for bad in [
            "http://a:1",
            "/a /b http://a:1",
            "/a weight=2 http://a:1",
            "/a http://a:1 weight=2 weight=3",
            "/a http://a:1 weight=0",
            "/a http://a:1 policy=random",
            "/a http://a:1 policy=header-hash:",
            "/a http://a:1 health=health",
            "/a http://a:1 interval=2s",
            "/a http://a:1 health=/h interval=0",
            "/a http://a:1 health=/h timeout=soon",
            "/a http://a:1 header=X-Policy",
            "/a http://a:1 header=:2",
            "/a http://a:1 host=",
            "/a http://a:1 max-fails=-1",
            "/a http://a:1 max-fails=+3",
            "/a http://a:1 colour=blue",
            "/a http://a:1 bare",
        ] {
            assert!(parse_route(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        for (v, ms) in [
            ("2", 2000),
            ("2s", 2000),
            ("1.5s", 1500),
            ("500ms", 500),
            ("1m", 60_000),
        ] {
            assert_eq!(parse_duration(v), Ok(Duration::from_millis(ms)), "{v}");
        }
        for bad in [
            "", "0", "-1s", "s", "2h", "1e9", "NaNs", "inf", "1e-10", "0.5ms",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rewrite_table() {
        let up = |p: &str| UpstreamUrl {
            authority: "a:80".into(),
            host: "a".into(),
            path: p.into(),
            weight: 1,
        };
        for (pq, prefix, path, want) in [
            ("/api/x?q=1", "/api", "", "/api/x?q=1"),
            ("/api/x?q=1", "/api", "/", "/x?q=1"),
            ("/api/x", "/api/", "/v2/", "/v2/x"),
            ("/api", "/api", "/v2", "/v2"),
            ("/apix", "/api", "/v2", "/v2x"),
            ("/", "/", "/base/", "/base/"),
        ] {
            assert_eq!(rewrite(pq, prefix, &up(path)), want, "{pq} {prefix} {path}");
        }
    }

    #[test]
    fn connect_ports_and_dot_segments() {
        assert_eq!(parse_connect_ports("any"), Ok(ConnectPorts::Any));
        assert_eq!(
            parse_connect_ports("443, 8443"),
            Ok(ConnectPorts::List(vec![443, 8443]))
        );
        for bad in ["", "0", "x", "443,", "70000"] {
            assert!(parse_connect_ports(bad).is_err(), "{bad}");
        }
        assert!(ConnectPorts::List(vec![443]).allows(443));
        assert!(!ConnectPorts::List(vec![443]).allows(80));
        for (p, dots) in [
            ("/a/../b", true),
            ("/a/%2E%2e/b", true),
            ("/a/./b", true),
            ("/..", true),
            ("/a/..b/c", false),
            ("/a/b?x=/../", false),
            ("/", false),
        ] {
            assert_eq!(has_dot_segment(p), dots, "{p}");
        }
    }
}
