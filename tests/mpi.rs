//! mpiweb as a real MPI job: `mpirun -np 3`, and the start-up failures.

mod common;

use common::{cpu_ticks, descendants, mpiweb_pids, wait_for, Server, Site, BIN};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

#[test]
fn three_ranks_serve_idle_quietly_and_exit_together() {
    let site = Site::new();
    let mut srv = Server::start_mpi(3, &site.root(), &[]);
    assert!(srv.banner.contains("rank 0 of 3"), "{}", srv.banner);
    let r = srv.get("/hello.txt", "");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world\n"[..]));
    assert!(
        srv.wait_log(|l| l.contains("\"GET /hello.txt HTTP/1.1\" 200") && l.ends_with("rank=0"))
    );

    let ranks = mpiweb_pids(&descendants(srv.pid()));
    assert_eq!(ranks.len(), 3, "three rank processes: {ranks:?}");
    assert!(ranks.contains(&srv.rank0_pid));

    // Idle: MPI's blocking receive would spin a core; ours must not.
    let before: u64 = ranks.iter().map(|&p| cpu_ticks(p)).sum();
    thread::sleep(Duration::from_secs(3));
    let after: u64 = ranks.iter().map(|&p| cpu_ticks(p)).sum();
    // 300 ticks would be one core for 3 s; allow 5% of one core in total.
    assert!(
        after - before <= 15,
        "idle ranks used {} ticks in 3 s",
        after - before
    );

    srv.stop();
    for pid in ranks {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map_or(true, |s| s.contains(") Z ")),
            "rank {pid} outlived mpirun"
        );
    }
}

#[test]
fn a_failed_start_on_rank_0_ends_every_rank() {
    let site = Site::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut child = Command::new("mpirun")
        .args(["-np", "3", BIN, "--listen", &addr])
        .arg(site.root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(&mut child, Duration::from_secs(60)).expect("mpirun exits");
    assert!(!status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");
}

#[test]
fn bad_start_arguments_exit_2_with_one_line() {
    let site = Site::new();
    let missing = site.dir.path().join("no-such-dir");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--bogus".into()], "unknown option --bogus"),
        (vec!["--listen".into()], "--listen needs a value"),
        (
            vec!["--max-connections".into(), "lots".into()],
            "not a positive whole number",
        ),
        (
            vec![missing.to_string_lossy().into_owned()],
            "is not a directory",
        ),
        (
            vec![
                "--access-log".into(),
                missing.join("a.log").to_string_lossy().into_owned(),
                site.root().to_string_lossy().into_owned(),
            ],
            "cannot open access log",
        ),
    ];
    for (args, msg) in cases {
        let out = Command::new(BIN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(msg), "{args:?}: {err}");
    }
    // Under mpirun every rank refuses the same way, and the job fails.
    let out = Command::new("mpirun")
        .args(["-np", "3", BIN])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));

    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--header-timeout"));
    let version = Command::new(BIN).arg("-V").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("mpiweb "));
}

fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

/// Requests for `secs`, one after another: every one must be answered,
/// and those begun `quick_after` must be answered within 500 ms.
fn requests_for(srv: &Server, secs: u64, quick_after: Duration) -> usize {
    let t0 = std::time::Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        let begun = t0.elapsed();
        let r = srv.get(&format!("/n{n}"), "");
        assert_eq!(r.status, 200, "request {n} at {begun:?}");
        let took = t0.elapsed() - begun;
        if begun >= quick_after {
            assert!(
                took < Duration::from_millis(500),
                "request {n} at {begun:?} took {took:?}"
            );
        }
        n += 1;
    }
    n
}

#[test]
fn a_stalled_worker_leaves_the_rotation_and_rejoins() {
    let up = common::upstream::Upstream::start();
    let site = Site::new();
    let route = format!("/={}", up.url());
    let srv = Server::start_mpi(3, &site.root(), &["--route", &route]);
    let workers: Vec<u32> = mpiweb_pids(&descendants(srv.pid()))
        .into_iter()
        .filter(|&p| p != srv.rank0_pid)
        .collect();
    assert_eq!(workers.len(), 2, "{workers:?}");
    requests_for(&srv, 1, Duration::ZERO);

    // Worker A stops: requests it had not started go to B; within 2 s
    // nothing waits for A any more.
    signal("STOP", workers[0]);
    let n = requests_for(&srv, 4, Duration::from_secs(2));
    assert!(n > 10, "only {n} requests in 4 s");
    assert!(srv.wait_log(|l| l.contains("out of rotation")));

    // A comes back; then B stops, and A alone serves everything.
    signal("CONT", workers[0]);
    assert!(srv.wait_log(|l| l.contains("back in rotation")));
    signal("STOP", workers[1]);
    requests_for(&srv, 4, Duration::from_secs(2));
    signal("CONT", workers[1]);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while srv.log_text().matches("back in rotation").count() < 2 {
        assert!(std::time::Instant::now() < until, "{}", srv.log_text());
        thread::sleep(Duration::from_millis(20));
    }
    requests_for(&srv, 1, Duration::ZERO);
}
