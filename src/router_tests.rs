//! The router's decisions, as a table.

use super::*;
use crate::http::request::{parse_request_head, HeadLimits};
use crate::proxy::route::parse_route;
use crate::status::parse_allow;

/// A router with `store`, three routes if `routes` (given in an order the
/// router must not depend on), and the forward proxy if `forward`; this
/// server is `self.test`.
fn router(routes: bool, forward: bool, store: Option<&str>) -> Router {
    let specs: &[&str] = match routes {
        false => &[],
        true => &[
            "/=http://127.0.0.1:9000",
            "/api/=http://127.0.0.1:9001",
            "header=X-Pool:b /api/ http://127.0.0.1:9002",
        ],
    };
    let mut routes: Vec<RouteSpec> = specs.iter().map(|s| parse_route(s).unwrap()).collect();
    // As `Proxy::new` orders its pools: most specific first.
    routes.sort_by_key(|r| std::cmp::Reverse(r.specificity()));
    Router::new(
        parse_allow("127.0.0.0/8,::1").unwrap(),
        store.map(str::to_string),
        routes,
        forward,
        Box::new(|authority| authority.starts_with("self.test")),
    )
}

fn decide(router: &Router, request: &str, peer: &str) -> String {
    let (_, head) = parse_request_head(request.as_bytes(), &HeadLimits::default())
        .unwrap_or_else(|e| panic!("{request:?}: {e}"))
        .unwrap_or_else(|| panic!("{request:?}: incomplete"));
    format!("{:?}", router.route(&head, peer.parse().unwrap()))
}

#[test]
fn every_request_has_exactly_one_place() {
    let full = router(true, true, Some("/store/"));
    let plain = router(false, false, None);
    let rooted = router(true, false, Some("/"));
    let local = "127.0.0.1:5000";
    let remote = "192.0.2.7:5000";
    let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: self.test\r\n\r\n");
    let table: &[(&Router, String, &str, &str)] = &[
        // Status pages come first, for allowed peers only.
        (&full, get("/-/status"), local, "Status(Html)"),
        (&full, get("/-/status/"), local, "Status(Html)"),
        (&full, get("/-/status.json?x=1"), local, "Status(Json)"),
        (&full, get("/-/metrics"), local, "Status(Metrics)"),
        (&full, get("/-/metrics"), remote, "Refused(Forbidden)"),
        (&rooted, get("/-/status.json"), local, "Status(Json)"),
        (&full, get("/-/other"), local, "Reverse(2)"),
        // The store owns every name under its prefix, stored or not, and
        // the prefix without its slash.
        (&full, get("/store/"), local, "Store"),
        (&full, get("/store/missing.txt"), local, "Store"),
        (&full, get("/store"), local, "Store"),
        (&full, get("/store/a/../b"), local, "Store"),
        (&full, get("/store/../api/x"), local, "Reverse(1)"),
        (&full, get("/storefront"), local, "Reverse(2)"),
        // Prefixes are matched once percent-decoded, as the handlers read.
        (&full, get("/%73tore/missing"), local, "Store"),
        (&full, get("/%61pi/v1"), local, "Reverse(1)"),
        (&full, get("/-/%73tatus.json"), local, "Status(Json)"),
        (&rooted, get("/anything"), local, "Store"),
        (&rooted, get("/"), local, "Store"),
        (
            &full,
            "PUT /store/doc HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n".into(),
            local,
            "Store",
        ),
        // Routes: a header match first, then the longest prefix.
        (&full, get("/api/v1"), local, "Reverse(1)"),
        (
            &full,
            "GET /api/v1 HTTP/1.1\r\nHost: x\r\nX-Pool: b\r\n\r\n".into(),
            local,
            "Reverse(0)",
        ),
        (&full, get("/apix"), local, "Reverse(2)"),
        (&full, get("/"), local, "Reverse(2)"),
        // A dot segment left after parsing would climb above the root.
        (
            &full,
            get("/api/../../x"),
            local,
            "Refused(BadRequest(\"dot segment in a proxied path\"))",
        ),
        // Without routes: files.
        (&plain, get("/api/v1"), local, "Static"),
        (&plain, get("/store/x"), local, "Static"),
        (&plain, get("/../x"), local, "Static"),
        // The forward proxy: other hosts and CONNECT; this server's own
        // name is served here.
        (&full, get("http://example.test/x"), local, "Forward"),
        (&full, get("http://self.test:8080/store/x"), local, "Store"),
        (&full, get("http://self.test/api/x"), local, "Reverse(1)"),
        (&plain, get("http://example.test/x"), local, "Static"),
        (
            &full,
            "CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n".into(),
            local,
            "Connect",
        ),
        (
            &plain,
            "CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n".into(),
            local,
            "Static",
        ),
        (
            &full,
            "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n".into(),
            local,
            "Static",
        ),
    ];
    for (router, request, peer, want) in table {
        assert_eq!(
            &decide(router, request, peer),
            want,
            "{request:?} from {peer}"
        );
    }
}
