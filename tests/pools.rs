//! Backend pools under `mpirun`: routing by path, host and header, the
//! balancing policies, active and passive health checks, retries and
//! failover, against several real upstreams from `common/upstream.rs`.

mod common;

use common::upstream::Upstream;
use common::{eventually, Resp, Server, Site, BIN};
use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn cluster(args: &[&str]) -> (Site, Server) {
    let site = Site::new();
    let srv = Server::start_mpi(3, &site.root(), args);
    (site, srv)
}

/// The upstream port that answered.
fn answered_by(r: &Resp) -> u16 {
    r.header("x-upstream")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("status {} without X-Upstream: {}", r.status, r.text()))
}

fn get(srv: &Server, path: &str, extra: &str) -> Resp {
    srv.get(path, extra)
}

/// Ports that answered `n` GETs of `path`, in order.
fn ports(srv: &Server, n: usize, path: &str, extra: &str) -> Vec<u16> {
    (0..n)
        .map(|_| {
            let r = get(srv, path, extra);
            assert_eq!(r.status, 200, "{}", r.text());
            answered_by(&r)
        })
        .collect()
}

fn tally(ports: &[u16]) -> HashMap<u16, usize> {
    let mut t = HashMap::new();
    for p in ports {
        *t.entry(*p).or_default() += 1;
    }
    t
}

#[test]
fn round_robin_follows_weights_and_least_conn_avoids_the_busy_one() {
    let ups: Vec<Upstream> = (0..3).map(|_| Upstream::start()).collect();
    let route = format!(
        "/ {} weight=2 {} {}",
        ups[0].url(),
        ups[1].url(),
        ups[2].url()
    );
    let (_site, srv) = cluster(&["--route", &route]);
    let t = tally(&ports(&srv, 40, "/x", ""));
    assert_eq!(t[&ups[0].port()], 20, "{t:?}");
    assert_eq!(t[&ups[1].port()], 10, "{t:?}");
    assert_eq!(t[&ups[2].port()], 10, "{t:?}");
    drop(srv);

    let route = format!("/ {} {} policy=least-conn", ups[0].url(), ups[1].url());
    let (_site, srv) = cluster(&["--route", &route, "--upstream-timeout", "3"]);
    let srv = Arc::new(srv);
    // `/silent` is recorded at once and never answered: one request stays
    // in flight (until the upstream timeout) while the quick ones run.
    let held = {
        let srv = Arc::clone(&srv);
        thread::spawn(move || get(&srv, "/silent", "").status)
    };
    let holds = |u: &Upstream| u.requests().iter().any(|s| s.path() == "/silent");
    assert!(eventually(Duration::from_secs(10), || ups
        .iter()
        .any(holds)));
    let busy = if holds(&ups[0]) {
        ups[0].port()
    } else {
        ups[1].port()
    };
    let quick = ports(&srv, 6, "/x", "");
    assert!(
        quick.iter().all(|&p| p != busy),
        "{quick:?} while {busy} is busy"
    );
    assert_eq!(held.join().unwrap(), 504);
}

#[test]
fn hash_policies_keep_each_client_on_one_upstream() {
    let ups: Vec<Upstream> = (0..3).map(|_| Upstream::start()).collect();
    let urls: Vec<String> = ups.iter().map(Upstream::url).collect();
    let route = format!("/ {} policy=header-hash:X-User", urls.join(" "));
    let (_site, srv) = cluster(&["--route", &route]);
    let mut used = HashSet::new();
    for user in 0..20 {
        let extra = format!("X-User: user-{user}\r\n");
        let seen = ports(&srv, 3, "/x", &extra);
        assert!(seen.iter().all(|&p| p == seen[0]), "user {user}: {seen:?}");
        used.insert(seen[0]);
    }
    assert!(used.len() >= 2, "20 users all on {used:?}");
    drop(srv);

    // ip-hash: clients from different loopback addresses (curl binds them).
    let route = format!("/ {} policy=ip-hash", urls.join(" "));
    let (_site, srv) = cluster(&["--route", &route]);
    let mut used = HashSet::new();
    for last in 2..14 {
        let ip = format!("127.0.0.{last}");
        let mut seen = Vec::new();
        for _ in 0..3 {
            let out = Command::new("curl")
                .args(["-s", "-D", "-", "-o", "/dev/null", "--max-time", "20"])
                .args(["--interface", &ip, &srv.url("/x")])
                .output()
                .expect("run curl");
            let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
            let port = head
                .lines()
                .find_map(|l| l.strip_prefix("x-upstream:"))
                .and_then(|p| p.trim().parse::<u16>().ok())
                .unwrap_or_else(|| panic!("{ip}: {head}"));
            seen.push(port);
        }
        assert!(seen.iter().all(|&p| p == seen[0]), "{ip}: {seen:?}");
        used.insert(seen[0]);
    }
    assert!(used.len() >= 2, "12 addresses all on {used:?}");
}

#[test]
fn header_then_host_then_longest_prefix() {
    let ups: Vec<Upstream> = (0..4).map(|_| Upstream::start()).collect();
    let routes = [
        format!("/={}", ups[0].url()),
        format!("host=api.test {}", ups[1].url()),
        format!("header=X-Policy:2 {}", ups[2].url()),
        format!("/special {}", ups[3].url()),
        format!("host=api.test /special/deep {}", ups[0].url()),
    ];
    let mut args = Vec::new();
    for r in &routes {
        args.extend(["--route", r.as_str()]);
    }
    let (_site, srv) = cluster(&args);
    let port = |path: &str, extra: &str| ports(&srv, 1, path, extra)[0];
    let p: Vec<u16> = ups.iter().map(Upstream::port).collect();
    assert_eq!(port("/x", ""), p[0]);
    // `get` sends Host: t; a second Host would be a 400, so the host
    // routes are reached through absolute-form targets and raw requests.
    let raw = |host: &str, path: &str, extra: &str| {
        let r = srv.one(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        answered_by(&r)
    };
    assert_eq!(
        raw("API.test:8080", "/x", ""),
        p[1],
        "host, any port and case"
    );
    assert_eq!(
        raw("api.test", "/special/x", ""),
        p[1],
        "a host match beats a prefix"
    );
    assert_eq!(
        raw("api.test", "/special/deep/x", ""),
        p[0],
        "host and the longer prefix"
    );
    assert_eq!(raw("other.test", "/x", "X-Policy: 2\r\n"), p[2]);
    assert_eq!(
        raw("api.test", "/x", "X-Policy:  2 \r\n"),
        p[2],
        "a header match beats host"
    );
    assert_eq!(raw("other.test", "/x", "X-Policy: 3\r\n"), p[0]);
    assert_eq!(port("/special/x", ""), p[3]);
    assert_eq!(
        port("/specialist", ""),
        p[3],
        "prefixes are plain string prefixes"
    );
}

#[test]
fn a_killed_upstream_costs_no_client_an_error_and_comes_back() {
    let ups: Vec<Upstream> = (0..3).map(|_| Upstream::start()).collect();
    let urls: Vec<String> = ups.iter().map(Upstream::url).collect();
    let route = format!(
        "/ {} health=/health interval=300ms timeout=1s fails=1 passes=2",
        urls.join(" ")
    );
    let (_site, srv) = cluster(&["--route", &route]);
    let srv = Arc::new(srv);
    let victim_port = ups[1].port();
    let mut ups: Vec<Option<Upstream>> = ups.into_iter().map(Some).collect();

    // Clients: GETs and PUTs in a loop, on kept-alive and new connections.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let (srv, stop, done) = (Arc::clone(&srv), Arc::clone(&stop), Arc::clone(&done));
            thread::spawn(move || {
                let mut errors = Vec::new();
                let until = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    let r = if c == 2 {
                        srv.one(
                            b"PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\
                              Connection: close\r\n\r\nhello",
                        )
                    } else {
                        get(&srv, "/x", "")
                    };
                    if r.status != 200 {
                        errors.push(format!("{} {}", r.status, r.text()));
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                errors
            })
        })
        .collect();
    let wait_for_requests = |n: usize| {
        let start = done.load(Ordering::Relaxed);
        assert!(eventually(Duration::from_secs(20), || done
            .load(Ordering::Relaxed)
            >= start + n));
    };
    wait_for_requests(60);
    ups[1].take().unwrap().kill();
    let killed = Instant::now();
    assert!(
        srv.wait_log(
            |l| l.contains(&format!("127.0.0.1:{victim_port}")) && l.contains("out of rotation")
        ),
        "no state change logged:\n{}",
        srv.log_text()
    );
    let out_after = killed.elapsed();
    eprintln!("upstream out of rotation {out_after:?} after it was killed");
    wait_for_requests(60);

    // Back on the same port: two passed checks bring it into rotation.
    let back = Upstream::start_on(victim_port);
    let restarted = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || !back
            .requests()
            .iter()
            .all(|s| s.path() == "/health")),
        "the restarted upstream got no requests"
    );
    eprintln!(
        "the restarted upstream served again after {:?}",
        restarted.elapsed()
    );
    wait_for_requests(30);
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    assert!(
        out_after < Duration::from_secs(3),
        "out of rotation after {out_after:?}"
    );
    let log = srv.log_text();
    let changes = |what: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("127.0.0.1:{victim_port}")) && l.contains(what))
            .count()
    };
    assert_eq!(changes("out of rotation"), 1, "{log}");
    assert_eq!(changes("back in rotation"), 1, "{log}");
    drop(ups);
}

#[test]
fn only_idempotent_requests_are_retried_unless_the_route_says_so() {
    for retry_post in [false, true] {
        let alive = Upstream::start();
        let dead = Upstream::start();
        let dead_url = dead.url();
        dead.kill();
        // Passive checks off: the dead upstream stays in rotation.
        let mut route = format!("/ {} {dead_url} max-fails=0", alive.url());
        if retry_post {
            route.push_str(" retry-non-idempotent");
        }
        let (_site, srv) = cluster(&["--route", &route]);
        for _ in 0..4 {
            let r = get(&srv, "/x", "");
            assert_eq!((r.status, answered_by(&r)), (200, alive.port()));
        }
        let put =
            b"PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        for _ in 0..2 {
            let r = srv.one(put);
            assert_eq!(r.status, 200, "a PUT is retried, body and all");
            assert_eq!(
                r.text(),
                format!("len=3 fnv={:016x}", common::upstream::fnv1a(b"abc"))
            );
        }
        let post = b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        let statuses: Vec<u16> = (0..4).map(|_| srv.one(post).status).collect();
        if retry_post {
            assert_eq!(statuses, [200; 4]);
        } else {
            assert_eq!(
                statuses.iter().filter(|&&s| s == 502).count(),
                2,
                "{statuses:?}"
            );
            assert_eq!(
                statuses.iter().filter(|&&s| s == 200).count(),
                2,
                "{statuses:?}"
            );
        }
    }
}

#[test]
fn passive_checks_count_5xx_and_all_down_is_503_at_once() {
    let ups: Vec<Upstream> = (0..2).map(|_| Upstream::start()).collect();
    let route = format!(
        "/ {} {} max-fails=1 fail-timeout=3s",
        ups[0].url(),
        ups[1].url()
    );
    let (_site, srv) = cluster(&["--route", &route, "--upstream-timeout", "20"]);
    // A 500 is passed on, and takes its upstream out.
    let r = get(&srv, "/status/500", "");
    assert_eq!(r.status, 500);
    let failed = answered_by(&r);
    let rest = ports(&srv, 4, "/x", "");
    assert!(
        rest.iter().all(|&p| p != failed),
        "{rest:?} after {failed} failed"
    );
    drop(srv);

    // Every upstream down: 503 with Retry-After, without waiting.
    let urls: Vec<String> = ups.iter().map(Upstream::url).collect();
    for u in ups {
        u.kill();
    }
    let route = format!("/ {} health=/health interval=200ms", urls.join(" "));
    let (_site, srv) = cluster(&["--route", &route, "--upstream-timeout", "20"]);
    assert!(eventually(Duration::from_secs(10), || get(&srv, "/x", "")
        .status
        == 503));
    let began = Instant::now();
    let r = get(&srv, "/x", "");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(r.status, 503);
    let after: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    // The next check, or the end of a passive fail-timeout (10 s).
    assert!((1..=10).contains(&after), "Retry-After: {after}");
}

#[test]
fn one_probe_per_interval_whatever_the_number_of_ranks() {
    for np in [1, 3, 4] {
        let up = Upstream::start();
        let route = format!("/ {} health=/health interval=200ms", up.url());
        let site = Site::new();
        let srv = match np {
            1 => Server::start(&site.root(), &["--route", &route]),
            n => Server::start_mpi(n, &site.root(), &["--route", &route]),
        };
        let probes = || {
            up.requests()
                .iter()
                .filter(|s| s.path() == "/health")
                .count()
        };
        assert!(eventually(Duration::from_secs(10), || probes() >= 2));
        let (start, began) = (probes(), Instant::now());
        thread::sleep(Duration::from_secs(2));
        let n = probes() - start;
        let expected = began.elapsed().as_secs_f64() / 0.2;
        eprintln!("np {np}: {n} probes in {:?}", began.elapsed());
        assert!(
            (n as f64) >= expected * 0.6 && (n as f64) <= expected * 1.2 + 1.0,
            "np {np}: {n} probes in {:?}, about {expected:.0} expected",
            began.elapsed()
        );
        let seen = up.requests();
        let probe = seen.iter().find(|s| s.path() == "/health").unwrap();
        assert_eq!(probe.method, "GET");
        assert_eq!(probe.header("host"), Some(up.authority().as_str()));
        drop(srv);
    }
}

#[test]
fn config_file_routes_and_line_numbered_errors() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.conf");
    std::fs::write(
        &good,
        format!(
            "# pools\nroute /api {} policy=least-conn  # one upstream\n\nupstream-timeout 5\n",
            up.url()
        ),
    )
    .unwrap();
    let (_site, srv) = cluster(&["--config", good.to_str().unwrap()]);
    let r = get(&srv, "/api/x", "");
    assert_eq!((r.status, answered_by(&r)), (200, up.port()));
    drop(srv);

    let bad = dir.path().join("bad.conf");
    std::fs::write(
        &bad,
        "listen 127.0.0.1:0\nroute /api http://127.0.0.1:1 policy=random\n",
    )
    .unwrap();
    let site = Site::new();
    for mpi in [false, true] {
        let mut cmd = match mpi {
            true => {
                let mut c = Command::new("mpirun");
                c.args(["-np", "3", BIN]);
                c
            }
            false => Command::new(BIN),
        };
        let out = cmd
            .args(["--config", bad.to_str().unwrap()])
            .arg(site.root())
            .output()
            .expect("run mpiweb");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "mpi {mpi}: {err}");
        assert!(err.contains("bad.conf line 2"), "mpi {mpi}: {err}");
    }
}
