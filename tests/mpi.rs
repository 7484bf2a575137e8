//! mpiweb as a real MPI job: `mpirun -np 3`, and the start-up failures.

mod common;

use common::{
    cpu_ticks, descendants, launcher_rank, mpiweb_pids, read_one, read_to_close, wait_for, Server,
    Site, BIN,
};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
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
    assert_eq!(status.code(), Some(2), "{status:?}");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");
    assert_eq!(
        err.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{err}"
    );
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
        (
            vec![
                "--config".into(),
                missing.join("mpiweb.conf").to_string_lossy().into_owned(),
            ],
            "cannot read",
        ),
        (
            vec!["--status-allow".into(), "10.0.0.0/99".into()],
            "prefix length",
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
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a directory"), "{err}");
    // Each rank's line goes out in one write: the lines never splice.
    for _ in 0..8 {
        let out = Command::new("mpirun")
            .args(["-np", "3", BIN, "--bogus"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let ours: Vec<&str> = err.lines().filter(|l| l.contains("mpiweb")).collect();
        assert_eq!(ours.len(), 3, "{err}");
        for line in ours {
            assert_eq!(
                line, "mpiweb: unknown option --bogus (see mpiweb --help)",
                "{err}"
            );
        }
    }

    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--header-timeout"));
    let version = Command::new(BIN).arg("-V").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("mpiweb "));
}

/// The soft and hard open-file limits of a process.
fn open_files(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut words = line["Max open files".len()..].split_whitespace();
    let soft = words.next().unwrap().to_string();
    (soft, words.next().unwrap().to_string())
}

#[test]
fn a_shell_soft_limit_of_1024_open_files_is_raised_to_the_hard_limit() {
    let site = Site::new();
    // A shell's usual soft limit under a hard limit of 4096; then a hard
    // limit below what --max-connections needs.
    for (mpi, hard, warned) in [
        (true, 4096, false),
        (false, 4096, false),
        (false, 1024, true),
    ] {
        let mut cmd = Command::new("sh");
        let script = format!("ulimit -Sn 512 && ulimit -Hn {hard} && exec \"$0\" \"$@\"");
        cmd.args(["-c", &script]);
        if mpi {
            cmd.args(["mpirun", "-np", "3"]);
        }
        cmd.args([BIN, "--listen", "127.0.0.1:0", "--max-connections", "1000"])
            .arg(site.root());
        let srv = Server::spawn(cmd, mpi);
        let ranks = match mpi {
            true => mpiweb_pids(&descendants(srv.pid())),
            false => vec![srv.rank0_pid],
        };
        assert_eq!(ranks.len(), if mpi { 3 } else { 1 });
        let hard = hard.to_string();
        for pid in ranks {
            // Raised before MPI starts, so before the start-up line; polled
            // all the same, for a worker the launcher started late.
            let want = (hard.clone(), hard.clone());
            let until = std::time::Instant::now() + Duration::from_secs(10);
            while open_files(pid) != want && std::time::Instant::now() < until {
                thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(open_files(pid), want, "rank pid {pid}");
        }
        assert_eq!(srv.get("/hello.txt", "").status, 200);
        let warning = "open-file hard limit is 1024: serving at most 960 connections";
        // Logged before the start-up line, so already read.
        assert_eq!(
            srv.log_text().contains(warning),
            warned,
            "{}",
            srv.log_text()
        );
    }
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
    // Requests A had not started were sent to B after the stall: the access
    // log names B for them (they took the stall's second).
    let stopped = format!(" rank={}", launcher_rank(workers[0]).expect("a rank"));
    let log = srv.log_text();
    let resent: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET /n") && seconds_taken(l).is_some_and(|s| s > 0.9))
        .collect();
    assert!(!resent.is_empty(), "{log}");
    assert!(
        resent.iter().all(|l| !l.ends_with(&stopped)),
        "logged with the stopped rank: {resent:?}"
    );

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

/// The duration field of an access line, in seconds.
fn seconds_taken(line: &str) -> Option<f64> {
    line.split(" id=").next()?.rsplit(' ').next()?.parse().ok()
}

/// A request for `path` on a new connection, its head and the first bytes
/// of its body read.
fn start_download(srv: &Server, path: &str) -> (TcpStream, Vec<u8>) {
    let mut s = srv.connect();
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut got = vec![0u8; 64 * 1024];
    let n = s.read(&mut got).unwrap();
    got.truncate(n);
    (s, got)
}

#[test]
fn sigterm_lets_requests_in_flight_finish_and_every_rank_exit_0() {
    let site = Site::new();
    let big: Vec<u8> = (0..(12u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(site.root().join("big.bin"), &big).unwrap();
    // Through mpirun (it passes the signal on), to rank 0 itself, and alone.
    for (np, to_mpirun) in [(3, true), (3, false), (1, false)] {
        // A grace far longer than any wait below: the download must finish
        // because the stop lets it, not because the test read it in time.
        // (With 3 s, a loaded machine delayed the reading past the grace
        // and the server cut the download, as it should.)
        let args = ["--grace", "60"];
        let mut srv = match np {
            1 => Server::start(&site.root(), &args),
            _ => Server::start_mpi(np, &site.root(), &args),
        };
        let ranks = mpiweb_pids(&descendants(srv.pid()));
        // An idle keep-alive connection, and a download not read for now.
        let mut idle = srv.connect();
        idle.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(read_one(&mut idle, false).status, 200);
        let (mut dl, first) = start_download(&srv, "/big.bin");
        assert!(!first.is_empty());

        let target = if to_mpirun { srv.pid() } else { srv.rank0_pid };
        signal("TERM", target);
        let case = format!("{np} ranks, signal to mpirun: {to_mpirun}");
        // (Log lines pass through MPICH's launcher, which may drop some
        // under load: they are looked for when alone.)
        assert!(
            np > 1 || srv.wait_log(|l| l.contains("stop signal")),
            "{case}: {}",
            srv.log_text()
        );
        // No new connections: the stop has begun, with the download in
        // flight. Read it from now on, as a client would.
        let refused = (0..400).any(|_| {
            thread::sleep(Duration::from_millis(25));
            TcpStream::connect(srv.addr).is_err()
        });
        assert!(refused, "{case}: still accepting after SIGTERM");
        let reader = thread::spawn(move || {
            let rest = read_to_close(&mut dl);
            // Closed on our side too, so the server need not linger for it.
            drop(dl);
            rest
        });
        // The idle one is closed.
        idle.set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        assert_eq!(
            idle.read(&mut [0u8; 16]).unwrap_or(1),
            0,
            "idle one kept open"
        );
        drop(idle);
        // The download finishes, whole.
        let mut rest = reader.join().unwrap();
        let mut all = first;
        all.append(&mut rest);
        let at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(
            all[at..] == big[..],
            "download cut: {} bytes",
            all.len() - at
        );
        // Every rank exits 0.
        let status = srv.wait_exit(Duration::from_secs(30)).expect("exited");
        assert_eq!(status.code(), Some(0), "{case}: {status:?}");
        // (Under load MPICH's launcher may drop what a rank prints just
        // before it exits: the last line is looked for when alone.)
        assert!(
            np > 1 || srv.wait_log(|l| l.contains("stopped: every connection finished")),
            "{case}: {}",
            srv.log_text()
        );
        for pid in ranks {
            let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "));
            assert!(gone, "rank {pid} outlived the stop");
        }
    }
}

#[test]
fn a_second_signal_exits_at_once_and_sighup_reopens_the_access_log() {
    let site = Site::new();
    // Sparse: larger than the socket buffers, nothing on disk.
    let big = std::fs::File::create(site.root().join("big.bin")).unwrap();
    big.set_len(64 << 20).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("access.log");
    let mut srv = Server::start(&site.root(), &["--access-log", log.to_str().unwrap()]);
    assert_eq!(srv.get("/hello.txt", "").status, 200);
    // Rotation: the file is renamed, SIGHUP makes a new one.
    let poll = |pred: &dyn Fn() -> bool| {
        (0..200).any(|_| {
            thread::sleep(Duration::from_millis(25));
            pred()
        })
    };
    assert!(poll(
        &|| std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/hello.txt"))
    ));
    let rotated = logs.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    signal("HUP", srv.rank0_pid);
    assert!(srv.wait_log(|l| l.contains("access log reopened")));
    assert_eq!(srv.get("/style.css", "").status, 200);
    assert!(poll(
        &|| std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/style.css"))
    ));
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("/style.css"));

    // A download held open (never read): the first stop signal (SIGUSR2,
    // the one Open MPI's launcher passes on) waits for it, the second
    // (SIGTERM) ends the process at once.
    let (_dl, _) = start_download(&srv, "/big.bin");
    signal("USR2", srv.rank0_pid);
    assert!(srv.wait_log(|l| l.contains("stopping: 1 connection")));
    assert!(
        srv.wait_exit(Duration::from_millis(500)).is_none(),
        "did not wait"
    );
    signal("TERM", srv.rank0_pid);
    let status = srv
        .wait_exit(Duration::from_secs(5))
        .expect("exited at once");
    assert_eq!(status.code(), Some(143), "{status:?}");
}
