//! Two hosts on one machine: network namespaces A (rank 0) and B (ranks 1
//! and 2) joined by a veth pair, 10.77.0.1 in A and 10.77.0.2 in B. The
//! job is started the way it starts across real machines: `mpirun` in A
//! with hydra's rsh launcher, whose "ssh" is a script that enters the
//! namespace named after the host; MPI runs over TCP (UCX_TLS=tcp,self,
//! UCX_NET_DEVICES the veth), as UCX would otherwise take shared memory
//! between namespaces of one kernel. Static files, a proxied request to an
//! origin in B, the store with its two replicas in B, and a stop that ends
//! every rank within the grace time and two seconds more. Where namespaces
//! cannot be made (not root, no `ip`), the test says so in one line and
//! passes.

mod common;

use common::netns::{env_of, in_netns, launcher, Hosts, Origin, A_ADDR, B_ADDR, LINK};
use common::{eventually, mpiweb_pids, Resp, Server, Site, BIN};
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

const GRACE: u64 = 3;
const TOKEN: &str = "across-hosts";

/// Processes among `pids` running this build's mpiweb: ranks and keepers.
fn ours(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|p| fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == Path::new(BIN)))
        .collect()
}

/// Remote addresses of the established TCP connections process `pid` holds.
fn tcp_peers(pid: u32) -> Vec<Ipv4Addr> {
    let inodes: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let table = fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local remote st ... uid timeout inode
            let (remote, state, inode) = (f.get(2)?, f.get(3)?, f.get(9)?);
            if *state != "01" || !inodes.iter().any(|i| i == inode) {
                return None;
            }
            let hex = u32::from_str_radix(remote.split(':').next()?, 16).ok()?;
            // The kernel prints the address as the native reading of its
            // network-order bytes.
            Some(Ipv4Addr::from(hex.to_ne_bytes()))
        })
        .collect()
}

/// Median and largest of `times`.
fn spread(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[times.len() - 1])
}

/// `n` GETs of `path`, one connection each, with their times.
fn timed_gets(srv: &Server, path: &str, n: usize, want: &str) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = srv.get(path, "");
            let took = t.elapsed();
            assert_eq!((r.status, r.text().as_str()), (200, want), "{path}");
            took
        })
        .collect()
}

#[test]
fn ranks_on_two_hosts_serve_proxy_store_and_stop() {
    let hosts = match Hosts::create("") {
        Ok(h) => h,
        Err(why) => {
            eprintln!("hosts: skipped: cannot create network namespaces: {why}");
            return;
        }
    };
    hosts.wait_up().unwrap();
    let origin = Origin::start(&hosts.b, None).unwrap();
    let site = Site::new();
    let data = tempfile::tempdir().unwrap();
    let bin_dir = tempfile::tempdir().unwrap();
    let script = launcher(bin_dir.path(), &hosts).unwrap();

    let route = format!("/app/=http://{B_ADDR}:{}/", origin.port);
    let mut cmd = hosts.mpirun(&script, 3);
    cmd.args([BIN, "--listen", &format!("{A_ADDR}:0")])
        .args(["--grace", &GRACE.to_string(), "--route", &route])
        .args(["--store", "/store/", "--store-token", TOKEN, "--data"])
        .arg(data.path())
        .arg(site.root());
    let mut srv = Server::spawn(cmd, true);
    assert!(srv.banner.contains("rank 0 of 3"), "{}", srv.banner);

    // Rank 0 in A, ranks 1 and 2 in B.
    let in_a = mpiweb_pids(&hosts.pids(&hosts.a));
    let in_b = mpiweb_pids(&hosts.pids(&hosts.b));
    let rank_of = |pids: &[u32]| {
        let mut r: Vec<Option<String>> = pids.iter().map(|&p| env_of(p, "PMI_RANK")).collect();
        r.sort();
        r
    };
    assert_eq!(in_a, vec![srv.rank0_pid], "ranks in A");
    let some = |v: &str| Some(v.to_string());
    assert_eq!(rank_of(&in_a), vec![some("0")]);
    assert_eq!(rank_of(&in_b), vec![some("1"), some("2")], "in B: {in_b:?}");
    // -genv reached every rank on both hosts.
    for &pid in in_a.iter().chain(&in_b) {
        assert_eq!(env_of(pid, "UCX_TLS"), some("tcp,self"), "pid {pid}");
        assert_eq!(env_of(pid, "UCX_NET_DEVICES"), some(LINK), "pid {pid}");
    }

    let (statics, proxied, late) = in_netns(&hosts.a, || {
        // A static file, from rank 0.
        let r = srv.get("/hello.txt", "");
        assert_eq!((r.status, r.text().as_str()), (200, "hello world\n"));
        assert!(srv
            .wait_log(|l| l.contains("\"GET /hello.txt HTTP/1.1\" 200") && l.ends_with(" rank=0")));

        // Proxied: a worker in B asks the origin in B, so the origin sees
        // B's address, not rank 0's; both workers take turns.
        let want = format!("origin in B: GET /where from {B_ADDR}\n");
        let r = srv.get("/app/where", "");
        assert_eq!(
            (r.status, r.text()),
            (200, want.clone()),
            "{}",
            srv.log_text()
        );
        let proxied = timed_gets(&srv, "/app/where", 20, &want);
        for rank in [1, 2] {
            assert!(
                srv.wait_log(|l| l.contains("\"GET /app/where HTTP/1.1\" 200")
                    && l.ends_with(&format!(" rank={rank}"))),
                "rank {rank} served none: {}",
                srv.log_text()
            );
        }
        let statics = timed_gets(&srv, "/hello.txt", 20, "hello world\n");
        // After a quiet spell (a worker polls every 250 µs for a second
        // after its last request, then every 50 ms), rank 0 rings the
        // worker's bell, a UDP datagram across the veth; a bell that cannot
        // be reached leaves the request to the next poll. Measured, not
        // asserted.
        let late: Vec<Duration> = (0..4)
            .map(|_| {
                thread::sleep(Duration::from_millis(1200));
                timed_gets(&srv, "/app/where", 1, &want)[0]
            })
            .collect();

        // The store: a PUT lands on both workers in B, and reads back.
        let ready = || srv.get("/store/", "").status == 200;
        assert!(
            eventually(Duration::from_secs(30), ready),
            "{}",
            srv.log_text()
        );
        let put = format!(
            "PUT /store/across HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: 12\r\nConnection: close\r\n\r\nacross hosts"
        );
        let r: Resp = srv.one(put.as_bytes());
        assert_eq!(r.status, 201, "{}", srv.log_text());
        let r = srv.get("/store/across", "");
        assert_eq!((r.status, r.text().as_str()), (200, "across hosts"));
        (statics, proxied, late)
    })
    .unwrap();
    for rank in ["rank-1", "rank-2"] {
        let docs: Vec<PathBuf> = fs::read_dir(data.path().join(rank).join("docs"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert_eq!(docs.len(), 1, "{rank}: {docs:?}");
        let doc = fs::read(&docs[0]).unwrap();
        assert!(doc.ends_with(b"across hosts"), "{rank}: {docs:?}");
    }
    assert!(
        !data.path().join("rank-0").join("docs").exists(),
        "rank 0 keeps no replica"
    );

    // MPI between the hosts runs over TCP on the veth.
    let peers = tcp_peers(srv.rank0_pid);
    assert!(
        peers.contains(&B_ADDR.parse().unwrap()),
        "rank 0 holds no TCP connection to host B: {peers:?}"
    );

    let (s_med, s_max) = spread(statics);
    let (p_med, p_max) = spread(proxied);
    let (l_med, l_max) = spread(late);
    eprintln!(
        "hosts: static GET median {s_med:?} (max {s_max:?}), proxied GET through host B \
         median {p_med:?} (max {p_max:?}), proxied after 1.2 s idle median {l_med:?} \
         (max {l_max:?}), 20/20/4 requests, one connection each"
    );

    // SIGTERM to mpirun ends every rank on both hosts within the grace
    // time and two seconds more.
    let ranks: Vec<u32> = in_a.iter().chain(&in_b).copied().collect();
    let every = ours(&hosts.pids(&hosts.a))
        .into_iter()
        .chain(ours(&hosts.pids(&hosts.b)))
        .collect::<Vec<u32>>();
    let t0 = Instant::now();
    // SAFETY: kill(2) with the pid of our child and a signal number.
    unsafe { libc::kill(srv.pid() as libc::pid_t, libc::SIGTERM) };
    let status = srv.wait_exit(Duration::from_secs(GRACE + 10));
    let exited = t0.elapsed();
    let gone = || {
        ours(&every).is_empty()
            && ours(&hosts.pids(&hosts.a)).is_empty()
            && ours(&hosts.pids(&hosts.b)).is_empty()
    };
    let all_gone = eventually(Duration::from_secs(GRACE + 10), gone);
    let took = t0.elapsed();
    let others: Vec<String> = hosts
        .pids(&hosts.a)
        .into_iter()
        .chain(hosts.pids(&hosts.b))
        .map(|p| {
            let comm = fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            format!("{p} {}", comm.trim())
        })
        .collect();
    let how = match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited {code}"),
            (None, Some(sig)) => format!("died of signal {sig}"),
            _ => format!("{s}"),
        },
        None => "still runs".to_string(),
    };
    eprintln!(
        "hosts: stop: mpirun {how} {exited:?} after SIGTERM, every rank gone after \
         {took:?}; processes left in the namespaces: {others:?}"
    );
    assert!(status.is_some(), "mpirun still runs: {}", srv.log_text());
    assert!(
        all_gone,
        "left: ranks {:?}, in A {:?}, in B {:?}",
        ours(&ranks),
        ours(&hosts.pids(&hosts.a)),
        ours(&hosts.pids(&hosts.b))
    );
    assert!(
        took < Duration::from_secs(GRACE + 2),
        "stop took {took:?}: {}",
        srv.log_text()
    );
    assert!(srv
        .log_text()
        .contains("stopped: every connection finished"));
    drop(origin);
}
