//! Under Open MPI, started as `make run-openmpi` starts it (`mpirun
//! --oversubscribe --enable-recovery`, SIGUSR2 to stop): a worker killed
//! with SIGKILL is replaced by a new process that rank 0 spawns, which
//! takes the dead rank's place (its proxied requests, its store documents)
//! or, when a spare took it, becomes the new spare. `make test` builds the
//! Open MPI binary in target/openmpi; without it these tests are skipped
//! with one line.

mod common;

use common::upstream::Upstream;
use common::{descendants, eventually, launcher_rank, running, Server, Site};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const OMPI_BIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/openmpi/release/mpiweb");

/// `mpirun.openmpi` as `make run-openmpi` runs it, with `np` ranks, or
/// `None` (after one line) where Open MPI or its build is missing.
fn open_mpi(np: usize) -> Option<Command> {
    let launcher = Command::new("mpirun.openmpi").arg("--version").output();
    if !Path::new(OMPI_BIN).exists() || !launcher.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no Open MPI build at {OMPI_BIN} (`make build-openmpi` makes it)");
        return None;
    }
    let mut cmd = Command::new("mpirun.openmpi");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["--oversubscribe", "--enable-recovery", "-np"])
        .arg(np.to_string())
        .arg(OMPI_BIN)
        .args(["--listen", "127.0.0.1:0", "--grace", "3"]);
    Some(cmd)
}

/// Rank `rank`'s row of `/-/status.json`, up to the next row.
fn status_row(srv: &Server, rank: usize) -> String {
    let json = srv.get("/-/status.json", "").text();
    let start = format!("{{\"rank\":{rank},");
    let Some(at) = json.find(&start) else {
        return String::new();
    };
    let row = &json[at..];
    let end = row[1..].find("{\"rank\":").map_or(row.len(), |e| e + 1);
    row[..end].to_string()
}

/// The process of world rank `rank` among the job's ranks.
fn rank_pid(srv: &Server, rank: usize) -> u32 {
    *running(&descendants(srv.pid()), OMPI_BIN)
        .iter()
        .find(|&&p| launcher_rank(p) == Some(rank))
        .unwrap_or_else(|| panic!("no rank {rank}"))
}

fn kill9(pid: u32) {
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// Access lines for requests whose target holds `tag`, served by `rank`.
fn served(srv: &Server, tag: &str, rank: usize) -> usize {
    srv.log_text()
        .lines()
        .filter(|l| l.contains(tag) && l.ends_with(&format!(" rank={rank}")))
        .count()
}

/// SIGUSR2 (Open MPI's launcher passes it on; SIGTERM it turns into
/// SIGKILL): every process of the job ends within the grace time and two
/// seconds more.
fn stop_within_grace(srv: &mut Server, ranks: &[u32]) {
    let t0 = Instant::now();
    let sent = Command::new("kill")
        .args(["-USR2", &srv.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = srv.wait_exit(Duration::from_secs(15));
    let took = t0.elapsed();
    assert!(status.is_some(), "mpirun still runs");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let left = running(ranks, OMPI_BIN);
    assert!(left.is_empty(), "ranks left: {left:?}");
}

#[test]
fn a_dead_worker_is_replaced_by_a_new_process() {
    let Some(mut cmd) = open_mpi(3) else { return };
    let up = Upstream::start();
    let site = Site::new();
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().to_string_lossy().into_owned();
    let route = format!("/app/={}/", up.url());
    cmd.args(["--route", &route, "--store", "/store/", "--data", &data_arg])
        .arg(site.root());
    let mut srv = Server::spawn(cmd, true);
    assert!(eventually(Duration::from_secs(30), || srv
        .get("/store/", "")
        .status
        == 200));
    let put = |name: &str| {
        let req = format!(
            "PUT /store/{name} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{name}"
        );
        srv.one(req.as_bytes()).status
    };
    for i in 0..4 {
        assert_eq!(put(&format!("doc-{i}")), 201);
    }
    let first: Vec<u32> = running(&descendants(srv.pid()), OMPI_BIN);
    assert_eq!(first.len(), 3, "{first:?}");
    let victim = rank_pid(&srv, 2);
    kill9(victim);
    let t0 = Instant::now();

    // Its disk is lost too: the new process starts with an empty
    // directory. Meanwhile files and proxied requests are served.
    std::fs::remove_dir_all(data.path().join("rank-2")).unwrap();
    assert_eq!(srv.get("/hello.txt", "").status, 200);
    assert!(eventually(Duration::from_secs(5), || srv
        .get("/app/echo", "")
        .status
        == 200));

    // A new process stands for rank 2, as a worker.
    let replaced = || {
        let row = status_row(&srv, 2);
        row.contains("\"role\":\"worker\",\"up\":true") && row.contains("\"replaced\":1")
    };
    assert!(
        eventually(Duration::from_secs(20), replaced),
        "{}",
        srv.log_text()
    );
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(srv.wait_log(|l| l.contains("a new process stands for rank 2 as a worker")));
    let now: Vec<u32> = running(&descendants(srv.pid()), OMPI_BIN);
    let new: Vec<u32> = now.iter().copied().filter(|p| !first.contains(p)).collect();
    assert_eq!(new.len(), 1, "before {first:?}, now {now:?}");
    assert!(!now.contains(&victim));

    // It takes proxied requests again, and gets its copies back.
    for i in 0..20 {
        assert_eq!(srv.get(&format!("/app/echo?after={i}"), "").status, 200);
    }
    assert!(srv.wait_log(|l| l.contains("echo?after=19")));
    assert!(served(&srv, "echo?after=", 2) > 0, "{}", srv.log_text());
    let rank2_docs = || {
        std::fs::read_dir(data.path().join("rank-2").join("docs"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 4
    };
    assert!(
        eventually(Duration::from_secs(30), rank2_docs),
        "{}",
        srv.log_text()
    );
    for i in 0..4 {
        let r = srv.get(&format!("/store/doc-{i}"), "");
        assert_eq!((r.status, r.text()), (200, format!("doc-{i}")));
    }

    let mut all = first;
    all.extend(new);
    stop_within_grace(&mut srv, &all);
}

#[test]
fn a_new_process_becomes_the_spare_when_a_spare_took_the_dead_ones_place() {
    let Some(mut cmd) = open_mpi(4) else { return };
    let up = Upstream::start();
    let site = Site::new();
    let route = format!("/app/={}/", up.url());
    cmd.args(["--route", &route, "--spares", "1"])
        .arg(site.root());
    let mut srv = Server::spawn(cmd, true);
    assert!(status_row(&srv, 3).contains("\"role\":\"spare\""));
    let first = running(&descendants(srv.pid()), OMPI_BIN);
    kill9(rank_pid(&srv, 1));

    // Rank 3 joins the rotation; a new process stands for rank 1, idle.
    let swapped = || {
        status_row(&srv, 3).contains("\"role\":\"worker\",\"up\":true")
            && status_row(&srv, 1).contains("\"role\":\"spare\",\"up\":true")
    };
    assert!(
        eventually(Duration::from_secs(20), swapped),
        "{}\n{}\n{}",
        status_row(&srv, 1),
        status_row(&srv, 3),
        srv.log_text()
    );
    assert!(status_row(&srv, 1).contains("\"replaced\":1"));
    assert!(srv.wait_log(|l| l.contains("a new process stands for rank 1 as a spare")));
    for i in 0..20 {
        assert_eq!(srv.get(&format!("/app/echo?after={i}"), "").status, 200);
    }
    assert!(srv.wait_log(|l| l.contains("echo?after=19")));
    assert_eq!(served(&srv, "echo?after=", 1), 0, "{}", srv.log_text());
    assert!(served(&srv, "echo?after=", 3) > 0, "{}", srv.log_text());
    let all = running(&descendants(srv.pid()), OMPI_BIN);
    let all: Vec<u32> = all.into_iter().chain(first).collect();
    stop_within_grace(&mut srv, &all);
}
