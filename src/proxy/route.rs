//! Routes: which requests go to which upstreams. Pure parsing of
//! `--route PREFIX=URL[,URL...]` and `--connect-ports`, and the rewrite of
//! a request target for an upstream.

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
}

/// A parsed `--route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub prefix: String,
    pub upstreams: Vec<UpstreamUrl>,
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

/// `PREFIX=URL[,URL...]`.
pub fn parse_route(spec: &str) -> Result<RouteSpec, String> {
    let (prefix, urls) = spec
        .split_once('=')
        .ok_or_else(|| format!("route '{spec}' is not PREFIX=URL[,URL...]"))?;
    if !prefix.starts_with('/')
        || prefix
            .bytes()
            .any(|b| !b.is_ascii_graphic() || b == b'?' || b == b'#')
    {
        return Err(format!(
            "route prefix '{prefix}' must be a path starting with '/'"
        ));
    }
    let upstreams = urls
        .split(',')
        .map(|u| parse_upstream_url(u.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RouteSpec {
        prefix: prefix.to_string(),
        upstreams,
    })
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
    fn rewrite_table() {
        let up = |p: &str| UpstreamUrl {
            authority: "a:80".into(),
            host: "a".into(),
            path: p.into(),
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
