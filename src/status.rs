//! `/-/status` (a page for people), `/-/status.json` and `/-/metrics`
//! (Prometheus text): every rank's figures, gathered from the ranks over
//! MPI when asked, each upstream's health, and the store's documents. Only
//! clients in `--status-allow` may read them (403 otherwise).

use crate::error::Error;
use crate::handler::Request;
use crate::http::{html_escape, json_string, Method, Response, ResponseBody};
use crate::metrics::{self, Snapshot, BUCKETS_US};
use crate::proxy::backends::{Backends, MemberReport};
use crate::store::State;
use crate::stream::transport::{Stream, Transport};
use crate::stream::wire::{Frame, Service};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a worker has to send its figures.
const GATHER_WAIT: Duration = Duration::from_secs(1);
/// How often the page reloads itself.
const REFRESH_SECS: u32 = 5;

/// An address block: `127.0.0.0/8`, `::1/128`, or one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| format!("'{s}' is not an address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("'{s}': prefix length over {max}")),
            },
        };
        Ok(Cidr { net, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical(); // ::ffff:127.0.0.1 is 127.0.0.1
        let bits = |a: IpAddr| -> (u128, u32) {
            match a {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((a, wa), (b, wb)) = (bits(ip), bits(self.net));
        if wa != wb {
            return false;
        }
        let shift = wa - u32::from(self.len);
        shift >= wa || (a >> shift) == (b >> shift)
    }
}

/// A list of blocks, as `--status-allow` takes it.
pub fn parse_allow(v: &str) -> Result<Vec<Cidr>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Cidr::parse)
        .collect::<Result<Vec<_>, _>>()
        .and_then(|list| match list.is_empty() {
            true => Err("needs at least one address or block".into()),
            false => Ok(list),
        })
}

/// The status pages; the router has checked the peer against
/// `--status-allow`.
pub struct Status {
    pub transport: Arc<dyn Transport>,
    pub pools: Vec<Arc<Backends>>,
    pub store: Option<(String, Arc<State>)>,
}

/// One rank's row: its figures, or nothing if it did not answer.
struct Row {
    rank: usize,
    snap: Option<Snapshot>,
    /// Taken for dead by rank 0 (silent for long), not only silent now.
    dead: bool,
    /// A spare not called in yet (`--spares`).
    spare: bool,
    /// Processes spawned in its place after deaths.
    replaced: u32,
}

impl Status {
    /// Every rank's figures: rank 0's own, and each worker's, asked over
    /// MPI at once; a worker that is out of rotation or does not answer
    /// within a second has none.
    fn gather(&self) -> Vec<Row> {
        let dead = self.transport.dead_workers();
        let mut rows = vec![Row {
            dead: false,
            spare: false,
            replaced: 0,
            rank: 0,
            snap: Some(metrics::global().snapshot(0)),
        }];
        let spares = self.transport.spare_workers();
        let mut workers: Vec<usize> = self
            .transport
            .workers()
            .into_iter()
            .chain(spares.iter().copied())
            .filter(|&r| r != 0)
            .collect();
        workers.sort_unstable();
        let mut live = self.transport.live_workers();
        // A spare answers too, though it takes no requests.
        live.extend(&spares);
        let asked: Vec<(usize, Option<Stream>)> = workers
            .iter()
            .map(|&rank| {
                let stream = live.contains(&rank).then(|| {
                    Stream::open_at(&self.transport, rank, |id| Frame::Open {
                        id,
                        service: Service::Stats,
                    })
                    .ok()
                });
                (rank, stream.flatten())
            })
            .collect();
        let until = Instant::now() + GATHER_WAIT;
        for (rank, stream) in asked {
            let snap = stream.and_then(|mut s| {
                let left = until.saturating_duration_since(Instant::now());
                match s.recv(left.max(Duration::from_millis(1))) {
                    Ok(Frame::Stats { body, .. }) => Snapshot::decode(&body),
                    _ => None,
                }
            });
            rows.push(Row {
                rank,
                snap: snap.map(|s| Snapshot { rank, ..s }),
                dead: dead.contains(&rank),
                spare: spares.contains(&rank),
                replaced: self.transport.replaced(rank),
            });
        }
        rows
    }

    fn upstreams(&self) -> Vec<(String, MemberReport)> {
        self.pools
            .iter()
            .flat_map(|p| {
                let route = p.spec.prefix.clone();
                p.report().into_iter().map(move |m| (route.clone(), m))
            })
            .collect()
    }

    fn store_docs(&self) -> Option<(String, usize, usize)> {
        let (prefix, state) = self.store.as_ref()?;
        Some((prefix.clone(), state.copies(), state.catalog().live_count()))
    }
}

impl Status {
    /// Answer `req` with `page`.
    pub fn page(&self, req: &Request<'_>, page: Page) -> Result<Response, Error> {
        if !matches!(req.head.method, Method::Get | Method::Head) {
            return Err(Error::MethodNotAllowed("GET, HEAD"));
        }
        let rows = self.gather();
        let ups = self.upstreams();
        let store = self.store_docs();
        let (body, content_type) = match page {
            Page::Html => (
                html(&rows, &ups, store.as_ref()),
                "text/html; charset=utf-8",
            ),
            Page::Json => (json(&rows, &ups, store.as_ref()), "application/json"),
            Page::Metrics => (
                prometheus(&rows, &ups, store.as_ref()),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
        };
        Ok(Response::new(200, ResponseBody::Bytes(body.into_bytes()))
            .with("Content-Type", content_type)
            .with("Cache-Control", "no-store"))
    }
}

/// The status pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Html,
    Json,
    Metrics,
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("null".into(), |d| {
        format!("{:.3}", d.as_secs_f64() * 1000.0)
    })
}

fn json(
    rows: &[Row],
    ups: &[(String, MemberReport)],
    store: Option<&(String, usize, usize)>,
) -> String {
    let mut out = String::from("{\"ranks\":[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\n{{\"rank\":{},\"role\":\"{}\"", row.rank, role(row));
        match &row.snap {
            None => {
                let _ = write!(
                    out,
                    ",\"up\":false,\"state\":\"{}\",\"replaced\":{}}}",
                    down_state(row),
                    row.replaced
                );
            }
            Some(s) => {
                let _ = write!(
                    out,
                    ",\"up\":true,\"uptime_s\":{:.1},\"requests\":{},\"rate\":{:.2},\"in_flight\":{},\
                     \"bytes\":{},\"status\":{{\"1xx\":{},\"2xx\":{},\"3xx\":{},\"4xx\":{},\"5xx\":{}}},\
                     \"latency_ms\":{{\"p50\":{},\"p90\":{},\"p99\":{}}},\"store_documents\":{},\"replaced\":{},\"recent\":[{}]}}",
                    s.uptime_ms as f64 / 1000.0,
                    s.requests(),
                    s.rate(),
                    s.in_flight,
                    s.bytes,
                    s.classes[0],
                    s.classes[1],
                    s.classes[2],
                    s.classes[3],
                    s.classes[4],
                    ms(s.percentile(0.5)),
                    ms(s.percentile(0.9)),
                    ms(s.percentile(0.99)),
                    s.store_docs.map_or("null".into(), |n| n.to_string()),
                    row.replaced,
                    s.recent.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
                );
            }
        }
    }
    out.push_str("\n],\"upstreams\":[");
    for (i, (route, m)) in ups.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "\n{{\"route\":{},\"upstream\":{},\"healthy\":{},\"state_changes\":{},\"answered\":{},\
             \"mean_wait_ms\":{},\"in_flight\":{}}}",
            json_string(route),
            json_string(&m.authority),
            m.healthy,
            m.changes,
            m.answered,
            ms(m.mean_wait),
            m.in_flight
        );
    }
    out.push_str("\n],\"store\":");
    match store {
        None => out.push_str("null"),
        Some((prefix, copies, docs)) => {
            let _ = write!(
                out,
                "{{\"prefix\":{},\"replicas\":{copies},\"documents\":{docs}}}",
                json_string(prefix)
            );
        }
    }
    out.push_str("}\n");
    out
}

/// What a rank without figures is: `dead` once rank 0 took it for dead,
/// else `not answering` (stalled, or out of rotation for now).
fn down_state(row: &Row) -> &'static str {
    match row.dead {
        true => "dead",
        false => "not answering",
    }
}

fn role(row: &Row) -> &'static str {
    match (row.rank, row.spare) {
        (0, _) => "front",
        (_, true) => "spare",
        (_, false) => "worker",
    }
}

fn prometheus(
    rows: &[Row],
    ups: &[(String, MemberReport)],
    store: Option<&(String, usize, usize)>,
) -> String {
    let mut out = String::new();
    let family = |name: &str, kind: &str, help: &str, out: &mut String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        "mpiweb_up",
        "gauge",
        "Whether the rank answered (1) or not (0).",
        &mut out,
    );
    for r in rows {
        let _ = writeln!(
            out,
            "mpiweb_up{{rank=\"{}\"}} {}",
            r.rank,
            u8::from(r.snap.is_some())
        );
    }
    let live: Vec<&Snapshot> = rows.iter().filter_map(|r| r.snap.as_ref()).collect();
    family(
        "mpiweb_requests_total",
        "counter",
        "Requests answered (rank 0) or streams run (workers), by status class.",
        &mut out,
    );
    for s in &live {
        for (i, n) in s.classes.iter().enumerate() {
            let _ = writeln!(
                out,
                "mpiweb_requests_total{{rank=\"{}\",class=\"{}xx\"}} {n}",
                s.rank,
                i + 1
            );
        }
    }
    // Per rank: name, kind, help, and the value.
    type Figure = fn(&Snapshot) -> String;
    let rank_series: [(&str, &str, &str, Figure); 3] = [
        (
            "mpiweb_uptime_seconds",
            "gauge",
            "Seconds since the rank started.",
            |s| format!("{:.3}", s.uptime_ms as f64 / 1000.0),
        ),
        (
            "mpiweb_sent_bytes_total",
            "counter",
            "Body bytes sent.",
            |s| s.bytes.to_string(),
        ),
        (
            "mpiweb_in_flight",
            "gauge",
            "Requests being served now.",
            |s| s.in_flight.to_string(),
        ),
    ];
    for (name, kind, help, value) in rank_series {
        family(name, kind, help, &mut out);
        for s in &live {
            let _ = writeln!(out, "{name}{{rank=\"{}\"}} {}", s.rank, value(s));
        }
    }
    family(
        "mpiweb_request_duration_seconds",
        "histogram",
        "Time to serve a request (rank 0) or run a stream (workers).",
        &mut out,
    );
    for s in &live {
        let mut cumulative = 0;
        for (i, n) in s.buckets.iter().enumerate() {
            cumulative += n;
            let le = BUCKETS_US
                .get(i)
                .map_or("+Inf".to_string(), |&us| format!("{}", us as f64 / 1e6));
            let _ = writeln!(
                out,
                "mpiweb_request_duration_seconds_bucket{{rank=\"{}\",le=\"{le}\"}} {cumulative}",
                s.rank
            );
        }
        let _ = writeln!(
            out,
            "mpiweb_request_duration_seconds_sum{{rank=\"{}\"}} {:.6}\nmpiweb_request_duration_seconds_count{{rank=\"{}\"}} {cumulative}",
            s.rank,
            s.latency_sum_us as f64 / 1e6,
            s.rank
        );
    }
    // Per upstream: name, kind, help, and the value.
    type UpFigure = fn(&MemberReport) -> String;
    let upstream_series: [(&str, &str, &str, UpFigure); 4] = [
        (
            "mpiweb_upstream_up",
            "gauge",
            "Whether the upstream is in rotation.",
            |m| u8::from(m.healthy).to_string(),
        ),
        (
            "mpiweb_upstream_state_changes_total",
            "counter",
            "Times the upstream left or rejoined the rotation.",
            |m| m.changes.to_string(),
        ),
        (
            "mpiweb_upstream_responses_total",
            "counter",
            "Answers received from the upstream.",
            |m| m.answered.to_string(),
        ),
        (
            "mpiweb_upstream_wait_seconds_mean",
            "gauge",
            "Mean time from request to answer head.",
            |m| format!("{:.6}", m.mean_wait.map_or(0.0, |d| d.as_secs_f64())),
        ),
    ];
    for (name, kind, help, value) in upstream_series {
        if ups.is_empty() {
            break;
        }
        family(name, kind, help, &mut out);
        for (route, m) in ups {
            let _ = writeln!(
                out,
                "{name}{{route=\"{route}\",upstream=\"{}\"}} {}",
                m.authority,
                value(m)
            );
        }
    }
    if let Some((_, copies, docs)) = store {
        family(
            "mpiweb_store_documents",
            "gauge",
            "Documents in the store (rank 0's catalog).",
            &mut out,
        );
        let _ = writeln!(out, "mpiweb_store_documents {docs}");
        family(
            "mpiweb_store_replicas",
            "gauge",
            "Copies kept of each document.",
            &mut out,
        );
        let _ = writeln!(out, "mpiweb_store_replicas {copies}");
        family(
            "mpiweb_store_replica_files",
            "gauge",
            "Document files in the rank's replica.",
            &mut out,
        );
        for s in &live {
            if let Some(n) = s.store_docs {
                let _ = writeln!(out, "mpiweb_store_replica_files{{rank=\"{}\"}} {n}", s.rank);
            }
        }
    }
    out
}

/// A small line chart of requests per second (rank 0, all requests).
fn chart(recent: &[u64]) -> String {
    let (w, h) = (600.0, 120.0);
    let max = recent.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = recent.len().max(2) as f64;
    let points: Vec<String> = recent
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * w / (n - 1.0),
                h - (v as f64 / max) * (h - 10.0)
            )
        })
        .collect();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         role=\"img\" aria-label=\"requests per second\"><rect width=\"{w}\" height=\"{h}\" fill=\"#f6f8fa\"/>\
         <polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"2\" points=\"{}\"/>\
         <text x=\"4\" y=\"12\" font-size=\"11\">{max:.0}/s</text></svg>",
        points.join(" ")
    )
}

fn html(
    rows: &[Row],
    ups: &[(String, MemberReport)],
    store: Option<&(String, usize, usize)>,
) -> String {
    let mut p = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>mpiweb status</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
         th,td{{padding:.25em .8em;border-bottom:1px solid #ddd;text-align:right}}th:first-child,td:first-child{{text-align:left}}\
         .down{{color:#b00}}.up{{color:#070}}</style></head><body><h1>mpiweb status</h1>\n"
    );
    if let Some(s) = rows.first().and_then(|r| r.snap.as_ref()) {
        let _ = writeln!(
            p,
            "<p>Up {:.0} s; {} ranks. Requests per second over the last {} s (all requests, rank 0):</p>{}",
            s.uptime_ms as f64 / 1000.0,
            rows.len(),
            s.recent.len(),
            chart(&s.recent)
        );
    }
    p.push_str(
        "<h2>Ranks</h2><table id=\"ranks\"><tr><th>rank</th><th>role</th><th>state</th><th>uptime s</th>\
         <th>req/s</th><th>in flight</th><th>requests</th><th>2xx</th><th>3xx</th><th>4xx</th><th>5xx</th>\
         <th>bytes</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>store files</th></tr>\n",
    );
    for r in rows {
        match &r.snap {
            None => {
                let _ = writeln!(
                    p,
                    "<tr><td>{}</td><td>{}</td><td class=\"down\">{}</td>{}</tr>",
                    r.rank,
                    role(r),
                    down_state(r),
                    "<td></td>".repeat(13)
                );
            }
            Some(s) => {
                let _ = writeln!(
                    p,
                    "<tr><td>{}</td><td>{}</td><td class=\"up\">up</td><td>{:.0}</td><td>{:.1}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    r.rank,
                    role(r),
                    s.uptime_ms as f64 / 1000.0,
                    s.rate(),
                    s.in_flight,
                    s.requests(),
                    s.classes[1],
                    s.classes[2],
                    s.classes[3],
                    s.classes[4],
                    s.bytes,
                    ms(s.percentile(0.5)),
                    ms(s.percentile(0.9)),
                    ms(s.percentile(0.99)),
                    s.store_docs.map_or("-".into(), |n| n.to_string()),
                );
            }
        }
    }
    p.push_str("</table>\n");
    if !ups.is_empty() {
        p.push_str(
            "<h2>Upstreams</h2><table id=\"upstreams\"><tr><th>route</th><th>upstream</th><th>state</th>\
             <th>state changes</th><th>answers</th><th>mean wait ms</th><th>in flight</th></tr>\n",
        );
        for (route, m) in ups {
            let (class, state) = if m.healthy {
                ("up", "in rotation")
            } else {
                ("down", "out")
            };
            let _ = writeln!(
                p,
                "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html_escape(route),
                html_escape(&m.authority),
                m.changes,
                m.answered,
                ms(m.mean_wait),
                m.in_flight
            );
        }
        p.push_str("</table>\n");
    }
    if let Some((prefix, copies, docs)) = store {
        let _ = writeln!(
            p,
            "<h2>Store</h2><p id=\"store\">{docs} documents at {}, {copies} copies each; \
             files per rank are in the table above.</p>",
            html_escape(prefix)
        );
    }
    p.push_str("</body></html>\n");
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks() {
        let cases = [
            ("127.0.0.0/8", "127.1.2.3", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("::1/128", "::1", true),
            ("::1", "::2", false),
            ("10.0.0.0/8", "::1", false),
            ("0.0.0.0/0", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.0/31", "192.0.2.1", true),
            ("192.0.2.0/31", "192.0.2.2", false),
        ];
        for (block, ip, want) in cases {
            let c = Cidr::parse(block).unwrap();
            assert_eq!(c.contains(ip.parse().unwrap()), want, "{block} {ip}");
        }
        for bad in ["", "x", "10.0.0.0/33", "::/129", "10.0.0.0/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_allow("127.0.0.0/8, ::1").unwrap().len(), 2);
        assert!(parse_allow(" , ").is_err());
    }

    #[test]
    fn pages_show_every_rank_and_add_up() {
        let mut a = Snapshot {
            rank: 0,
            uptime_ms: 5000,
            recent: vec![1, 2, 3],
            ..Snapshot::default()
        };
        a.classes = [0, 7, 1, 2, 0];
        a.buckets[0] = 10;
        let mut b = a.clone();
        b.rank = 1;
        b.store_docs = Some(4);
        let rows = vec![
            Row {
                rank: 0,
                snap: Some(a),
                dead: false,
                spare: false,
                replaced: 0,
            },
            Row {
                rank: 1,
                snap: Some(b),
                dead: false,
                spare: false,
                replaced: 0,
            },
            Row {
                rank: 2,
                snap: None,
                dead: false,
                spare: false,
                replaced: 0,
            },
            Row {
                rank: 3,
                snap: None,
                dead: true,
                spare: false,
                replaced: 0,
            },
            Row {
                rank: 4,
                snap: Some(Snapshot {
                    rank: 4,
                    ..Snapshot::default()
                }),
                dead: false,
                spare: true,
                replaced: 0,
            },
        ];
        let store = Some(("/store/".to_string(), 2, 3));
        let j = json(&rows, &[], store.as_ref());
        assert_eq!(j.matches("\"rank\":").count(), 5);
        assert!(j.contains("\"rank\":4,\"role\":\"spare\",\"up\":true"));
        assert!(
            j.contains("\"rank\":2,\"role\":\"worker\",\"up\":false,\"state\":\"not answering\"")
        );
        assert!(j.contains("\"rank\":3,\"role\":\"worker\",\"up\":false,\"state\":\"dead\""));
        assert!(j.contains("\"store_documents\":4"));
        let m = prometheus(&rows, &[], store.as_ref());
        assert!(m.contains("mpiweb_up{rank=\"2\"} 0"));
        assert!(m.contains("mpiweb_requests_total{rank=\"1\",class=\"2xx\"} 7"));
        assert!(m.contains("mpiweb_request_duration_seconds_bucket{rank=\"0\",le=\"+Inf\"} 10"));
        assert!(m.contains("mpiweb_store_replica_files{rank=\"1\"} 4"));
        let h = html(&rows, &[], store.as_ref());
        assert!(h.contains("<table id=\"ranks\">") && h.contains("not answering"));
        assert!(h.contains("<td class=\"down\">dead</td>"));
        assert!(h.contains("<svg") && !h.contains("<script"));
    }
}
