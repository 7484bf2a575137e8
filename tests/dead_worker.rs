//! A worker killed with SIGKILL, in a cluster started the way `make run`
//! starts it (`mpirun -disable-auto-cleanup`): rank 0 goes on serving
//! files, proxied requests and the store on the survivors, the status page
//! shows the dead rank, its documents get their copies back on the others,
//! and SIGTERM still ends the job.

mod common;

use common::upstream::Upstream;
use common::{descendants, eventually, launcher_rank, mpiweb_pids, Server, Site, BIN};
use std::process::Command;
use std::time::{Duration, Instant};

const SLOW_GET: &str = "GET /app/slow?ms=3000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
const SLOW_POST: &str =
    "POST /app/slow?ms=3000 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";

/// Streams the workers are running now, as `/-/status.json` says.
fn workers_in_flight(srv: &Server) -> u64 {
    let json = srv.get("/-/status.json", "").text();
    json.split("{\"rank\":")
        .filter(|row| !row.starts_with("0,"))
        .filter_map(|row| {
            let v = &row[row.find("\"in_flight\":")? + 12..];
            v[..v.find(|c: char| !c.is_ascii_digit())?]
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Send `requests` at once, kill `victim` once the workers run all of
/// them, and return their statuses, sorted.
fn through_a_kill(srv: &Server, victim: u32, requests: &[&str]) -> Vec<u16> {
    std::thread::scope(|s| {
        let sent: Vec<_> = requests
            .iter()
            .map(|r| s.spawn(move || srv.one(r.as_bytes()).status))
            .collect();
        let all_in = || workers_in_flight(srv) >= requests.len() as u64;
        assert!(eventually(Duration::from_secs(5), all_in));
        let killed = Command::new("kill")
            .args(["-KILL", &victim.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let mut got: Vec<u16> = sent.into_iter().map(|h| h.join().unwrap()).collect();
        got.sort_unstable();
        got
    })
}

#[test]
fn a_worker_killed_with_sigkill_is_survived() {
    let up = Upstream::start();
    let site = Site::new();
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().to_string_lossy().into_owned();
    let route = format!("/app/={}/", up.url());
    let mut cmd = Command::new("mpirun");
    cmd.args(["-disable-auto-cleanup", "-np", "4", BIN])
        .args(["--listen", "127.0.0.1:0", "--grace", "3", "--route", &route])
        .args(["--store", "/store/", "--data", &data_arg])
        .arg(site.root());
    let mut srv = Server::spawn(cmd, true);
    let store_ready = || srv.get("/store/", "").status == 200;
    assert!(eventually(Duration::from_secs(30), store_ready));
    for i in 0..6 {
        let put = format!(
            "PUT /store/doc{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\ndoc-{i}"
        );
        assert_eq!(srv.one(put.as_bytes()).status, 201, "doc{i}");
    }

    // The process the launcher started for a worker keeps it: ranks are
    // the `mpiweb` processes, their keepers are not.
    let ranks: Vec<u32> = mpiweb_pids(&descendants(srv.pid()));
    assert_eq!(ranks.len(), 4, "{ranks:?}");
    let victim = *ranks
        .iter()
        .find(|&&p| launcher_rank(p) == Some(1))
        .expect("rank 1");
    // A slow GET in flight on each worker (the least busy takes each):
    // the one on the dead worker had no answer yet, and a GET may reach
    // its upstream twice, so it is sent again to another worker.
    let slow = through_a_kill(&srv, victim, &[SLOW_GET; 3]);
    assert_eq!(slow, [200, 200, 200], "{}", srv.log_text());
    assert!(srv.wait_log(|l| l.contains("lost with rank 1 before its answer: sent again")));
    let t0 = Instant::now();

    // Rank 0 serves on: files at once, proxied requests on the other
    // workers within a couple of seconds.
    assert_eq!(srv.get("/hello.txt", "").status, 200);
    assert!(eventually(Duration::from_secs(10), || srv
        .get("/app/echo", "")
        .status
        == 200));
    let moved = t0.elapsed();
    assert!(moved < Duration::from_secs(5), "{moved:?}");
    for _ in 0..10 {
        assert_eq!(srv.get("/app/echo", "").status, 200);
    }
    assert!(srv.wait_log(|l| l.contains("died of signal 9")));
    // MPICH with UCX cannot spawn a process in the dead one's place.
    assert!(srv.wait_log(|l| l.contains("no new process in place of dead rank 1")));

    // The status page calls it dead; the store serves every document and
    // copies rank 1's onto the others.
    let dead = || {
        srv.get("/-/status.json", "")
            .text()
            .contains("\"rank\":1,\"role\":\"worker\",\"up\":false,\"state\":\"dead\"")
    };
    assert!(eventually(Duration::from_secs(15), dead));
    for i in 0..6 {
        let r = srv.get(&format!("/store/doc{i}"), "");
        assert_eq!((r.status, r.text()), (200, format!("doc-{i}")));
    }
    let copies = || {
        ["rank-2", "rank-3"]
            .iter()
            .map(|r| {
                std::fs::read_dir(data.path().join(r).join("docs"))
                    .map(|d| d.count())
                    .unwrap_or(0)
            })
            .sum::<usize>()
            == 12
    };
    assert!(
        eventually(Duration::from_secs(30), copies),
        "{}",
        srv.log_text()
    );

    // A stop ends every rank within the grace time and two seconds more.
    let t0 = Instant::now();
    srv.stop().expect("mpirun ended");
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        mpiweb_pids(&ranks).is_empty(),
        "ranks left: {:?}",
        mpiweb_pids(&ranks)
    );
}

#[test]
fn a_spare_takes_the_place_of_a_dead_worker() {
    let up = Upstream::start();
    let site = Site::new();
    let route = format!("/app/={}/", up.url());
    let mut cmd = Command::new("mpirun");
    cmd.args(["-disable-auto-cleanup", "-np", "4", BIN])
        .args(["--listen", "127.0.0.1:0", "--grace", "3", "--route", &route])
        .args(["--spares", "1"])
        .arg(site.root());
    let srv = Server::spawn(cmd, true);
    let json = srv.get("/-/status.json", "").text();
    assert!(
        json.contains("\"rank\":3,\"role\":\"spare\",\"up\":true"),
        "{json}"
    );
    // Ranks 1 and 2 take the requests; the spare, rank 3, none.
    for i in 0..20 {
        assert_eq!(srv.get(&format!("/app/echo?before={i}"), "").status, 200);
    }
    let served = |tag: &str, rank: usize| {
        srv.log_text()
            .lines()
            .filter(|l| l.contains(tag) && l.ends_with(&format!(" rank={rank}")))
            .count()
    };
    assert!(srv.wait_log(|l| l.contains("echo?before=19")));
    assert_eq!(served("echo?before=", 3), 0, "{}", srv.log_text());
    assert!(served("echo?before=", 1) > 0 && served("echo?before=", 2) > 0);

    let ranks = mpiweb_pids(&descendants(srv.pid()));
    let victim = *ranks
        .iter()
        .find(|&&p| launcher_rank(p) == Some(1))
        .expect("rank 1");
    // A slow POST in flight on each of ranks 1 and 2: the one on the dead
    // worker may not run twice, so it gets 502, and no upstream is blamed.
    let slow = through_a_kill(&srv, victim, &[SLOW_POST; 2]);
    assert_eq!(slow, [200, 502], "{}", srv.log_text());
    assert!(srv.wait_log(|l| l.contains("taken for dead; 1 stream(s) on it end")));
    assert!(srv.wait_log(|l| l.contains("spare rank 3 joins the rotation in place of rank 1")));
    for i in 0..20 {
        assert_eq!(srv.get(&format!("/app/echo?after={i}"), "").status, 200);
    }
    assert!(srv.wait_log(|l| l.contains("echo?after=19")));
    assert_eq!(served("echo?after=", 1), 0, "{}", srv.log_text());
    assert!(served("echo?after=", 3) > 0, "{}", srv.log_text());
    let json = srv.get("/-/status.json", "").text();
    assert!(
        json.contains("\"rank\":3,\"role\":\"worker\",\"up\":true"),
        "{json}"
    );
}

#[test]
fn spares_need_a_worker_left() {
    let site = Site::new();
    let out = Command::new("mpirun")
        .args(["-np", "3", BIN, "--listen", "127.0.0.1:0", "--spares", "2"])
        .arg(site.root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--spares 2 leaves no worker"), "{err}");
}
