//! The status pages: `/-/status`, `/-/status.json` and `/-/metrics` under
//! `mpirun -np 3` while load runs (the figures of every rank add up), the
//! allow list, and the page as headless Chromium renders it.

mod common;

use common::upstream::Upstream;
use common::{read_one, Server, Site};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// `name{labels} value` lines of a Prometheus text page, by series.
fn series(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn get_text(srv: &Server, path: &str) -> (u16, String) {
    let r = srv.get(path, "");
    (r.status, r.text())
}

/// The number after `"key":` in `json` (the first one after `from`).
fn json_num(json: &str, from: &str, key: &str) -> Option<f64> {
    let at = json.find(from)?;
    let rest = &json[at..];
    let v = &rest[rest.find(&format!("\"{key}\":"))? + key.len() + 3..];
    let end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    v[..end].parse().ok()
}

#[test]
fn figures_of_every_rank_add_up_while_load_runs() {
    let up = Upstream::start();
    let site = Site::new();
    let route = format!("/app/={}/", up.url());
    let srv = Server::start_mpi(3, &site.root(), &["--route", &route]);
    const PROXIED: usize = 120;
    const FILES: usize = 60;
    thread::scope(|s| {
        let load = s.spawn(|| {
            let mut c = srv.connect();
            for i in 0..PROXIED + FILES {
                let path = match i % 3 {
                    0 => "/hello.txt".to_string(),
                    _ => format!("/app/echo?{i}"),
                };
                write!(c, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                assert_eq!(read_one(&mut c, false).status, 200, "{path}");
            }
        });
        // While it runs: every rank answers.
        while !load.is_finished() {
            let (status, json) = get_text(&srv, "/-/status.json");
            assert_eq!(status, 200);
            assert_eq!(json.matches("\"up\":true").count(), 3, "{json}");
            thread::sleep(std::time::Duration::from_millis(100));
        }
        load.join().unwrap();
    });
    let (status, page) = get_text(&srv, "/-/metrics");
    assert_eq!(status, 200);
    let m = series(&page);
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in\n{page}"))
    };
    // The workers ran exactly the proxied requests, between them.
    let worker_2xx: f64 = (1..=2)
        .map(|r| {
            get(&format!(
                "mpiweb_requests_total{{rank=\"{r}\",class=\"2xx\"}}"
            ))
        })
        .sum();
    assert_eq!(worker_2xx, PROXIED as f64, "{page}");
    for r in 1..=2 {
        assert!(
            get(&format!(
                "mpiweb_requests_total{{rank=\"{r}\",class=\"2xx\"}}"
            )) > 0.0
        );
    }
    // Rank 0 answered all of them, the files and the status requests.
    let front = get("mpiweb_requests_total{rank=\"0\",class=\"2xx\"}");
    assert!(front >= (PROXIED + FILES) as f64, "{front}");
    // Each histogram counts every request of its rank.
    for r in 0..=2 {
        let classes: f64 = (1..=5)
            .map(|c| {
                get(&format!(
                    "mpiweb_requests_total{{rank=\"{r}\",class=\"{c}xx\"}}"
                ))
            })
            .sum();
        let count = get(&format!(
            "mpiweb_request_duration_seconds_count{{rank=\"{r}\"}}"
        ));
        let inf = get(&format!(
            "mpiweb_request_duration_seconds_bucket{{rank=\"{r}\",le=\"+Inf\"}}"
        ));
        assert_eq!((classes, inf), (count, count), "rank {r}");
        assert_eq!(get(&format!("mpiweb_up{{rank=\"{r}\"}}")), 1.0);
    }
    // The upstream answered each proxied request once.
    let ups = format!(
        "mpiweb_upstream_responses_total{{route=\"/app/\",upstream=\"{}\"}}",
        up.authority()
    );
    assert_eq!(get(&ups), PROXIED as f64);
    // The JSON says the same.
    let (_, json) = get_text(&srv, "/-/status.json");
    let w1 = json_num(&json, "\"rank\":1,", "2xx").unwrap();
    let w2 = json_num(&json, "\"rank\":2,", "2xx").unwrap();
    assert_eq!(w1 + w2, PROXIED as f64, "{json}");
    assert_eq!(
        json_num(&json, "\"upstreams\"", "answered"),
        Some(PROXIED as f64)
    );
}

#[test]
fn every_rank_counts_its_uptime_from_its_start() {
    let site = Site::new();
    let t0 = Instant::now();
    let srv = Server::start_mpi(3, &site.root(), &[]);
    // Time passes with no status page asked for (the first ask used to
    // start a rank's clock): not a wait for the server, which is up.
    thread::sleep(Duration::from_secs(3));
    let (status, json) = get_text(&srv, "/-/status.json");
    let lived = t0.elapsed().as_secs_f64();
    assert_eq!(status, 200, "{json}");
    for rank in 0..3 {
        let up = json_num(&json, &format!("\"rank\":{rank},"), "uptime_s")
            .unwrap_or_else(|| panic!("no uptime_s for rank {rank}: {json}"));
        assert!(
            (2.5..=lived + 0.2).contains(&up),
            "rank {rank}: {up} s of {lived:.1}: {json}"
        );
    }
}

#[test]
fn only_allowed_clients_read_the_status_pages() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &[]);
    for path in ["/-/status", "/-/status.json", "/-/metrics"] {
        assert_eq!(srv.get(path, "").status, 200, "{path}");
        let r = srv.one(
            format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 405, "{path}");
    }
    let srv = Server::start(&site.root(), &["--status-allow", "10.0.0.0/8,192.0.2.1"]);
    for path in ["/-/status", "/-/status.json", "/-/metrics"] {
        assert_eq!(srv.get(path, "").status, 403, "{path}");
    }
    // Other paths are not affected.
    assert_eq!(srv.get("/hello.txt", "").status, 200);
    let bad = Command::new(common::BIN)
        .args(["--status-allow", "10.0.0.0/40"])
        .arg(site.root())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn headless_chromium_renders_the_rank_table() {
    let site = Site::new();
    let srv = Server::start_mpi(3, &site.root(), &[]);
    assert_eq!(srv.get("/hello.txt", "").status, 200);
    let profile = tempfile::tempdir().unwrap();
    let shot = profile.path().join("status.png");
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1300,700",
            ])
            .arg(format!(
                "--user-data-dir={}",
                profile.path().join("p").display()
            ))
            .args(extra)
            .arg(srv.url("/-/status"))
            .output()
            .expect("chromium (installed by make test)")
    };
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<table id=\"ranks\">"), "{dom}");
    let table = &dom[dom.find("<table id=\"ranks\">").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(
        table.matches("<tr>").count(),
        4,
        "a head and 3 ranks: {table}"
    );
    assert_eq!(table.matches(">up<").count(), 3, "{table}");
    assert!(dom.contains("<svg"), "the chart");
    let out = chromium(&[&format!("--screenshot={}", shot.display())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((w, h), (1300, 700));
    // A page of text and a table is far from one flat colour.
    assert!(png.len() > 10_000, "{} bytes", png.len());
}
