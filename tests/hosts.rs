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

use common::{eventually, mpiweb_pids, Resp, Server, Site, BIN};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Host A's address (rank 0, the client, mpirun).
const A_ADDR: &str = "10.77.0.1";
/// Host B's address (ranks 1 and 2, the origin).
const B_ADDR: &str = "10.77.0.2";
/// The veth end in each namespace: one name in both, so that one
/// `UCX_NET_DEVICES` serves every rank.
const LINK: &str = "mpiweb0";
const GRACE: u64 = 3;
const TOKEN: &str = "across-hosts";

/// The two namespaces. Dropping it ends what still runs in them and
/// removes them, also after a panic.
struct Hosts {
    a: String,
    b: String,
}

impl Hosts {
    fn create() -> Result<Hosts, String> {
        let pid = std::process::id();
        let hosts = Hosts {
            a: format!("mpiweb-a-{pid}"),
            b: format!("mpiweb-b-{pid}"),
        };
        // A namespace named after this pid is left from a run that was
        // killed: its creator is gone.
        for ns in [&hosts.a, &hosts.b] {
            if Path::new("/run/netns").join(ns).exists() {
                let _ = ip(&["netns", "del", ns]);
            }
        }
        ip(&["netns", "add", &hosts.a])?;
        ip(&["netns", "add", &hosts.b])?;
        ip(&[
            "link", "add", LINK, "netns", &hosts.a, "type", "veth", "peer", "name", LINK, "netns",
            &hosts.b,
        ])?;
        for (ns, addr) in [(&hosts.a, A_ADDR), (&hosts.b, B_ADDR)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", LINK])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", LINK, "up"])?;
        }
        Ok(hosts)
    }

    /// Wait until both ends are operationally up: the kernel reports the
    /// carrier up to a second after `link set up`, and UCX ignores a device
    /// that is not running yet ("network device is not available").
    fn wait_up(&self) {
        for ns in [&self.a, &self.b] {
            let up = || {
                Command::new("ip")
                    .args(["-n", ns, "-o", "link", "show", "dev", LINK])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(" state UP "))
            };
            assert!(
                eventually(Duration::from_secs(10), up),
                "{LINK} in {ns} never came up"
            );
        }
    }

    /// Processes living in namespace `ns`.
    fn pids(&self, ns: &str) -> Vec<u32> {
        let Ok(meta) = fs::metadata(Path::new("/run/netns").join(ns)) else {
            return Vec::new();
        };
        let want = format!("net:[{}]", meta.ino());
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/ns/net"))
                    .is_ok_and(|l| l.to_string_lossy() == want)
            })
            .collect()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            // Only this test starts processes in its own namespaces.
            for pid in self.pids(ns) {
                // SAFETY: kill(2) with a pid and a signal number.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Run `ip ARGS`; its error output if it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Move the calling thread into network namespace `ns` (only this thread:
/// a network namespace belongs to a thread, and the threads it starts
/// inherit it).
fn enter(ns: &str) {
    let file = fs::File::open(Path::new("/run/netns").join(ns)).expect("open namespace");
    // SAFETY: a valid descriptor, kept open for the call; CLONE_NEWNET
    // changes the network namespace of this thread alone.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", io::Error::last_os_error());
}

/// Run `f` on a thread of its own in namespace `ns`.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        let t = s.spawn(|| {
            enter(ns);
            f()
        });
        t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// An origin server in host B on B's address, on std only: every answer is
/// 200 `origin in B: METHOD TARGET from PEER`, on kept-alive connections.
struct Origin {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Origin {
    fn start(ns: &str) -> Origin {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (ns, halt) = (ns.to_string(), Arc::clone(&stop));
        let accept = thread::spawn(move || {
            enter(&ns);
            let listener = TcpListener::bind((B_ADDR, 0)).expect("bind the origin in B");
            listener.set_nonblocking(true).unwrap();
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, peer)) => {
                        thread::spawn(move || serve(s, peer));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("origin accept: {e}"),
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the origin in B is listening");
        Origin {
            port,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Answer requests without bodies on `s` until the peer closes it.
fn serve(mut s: TcpStream, peer: SocketAddr) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut piece = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut piece) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&piece[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let mut words = head.split(' ');
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let body = format!("origin in B: {method} {target} from {}\n", peer.ip());
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// The script hydra's rsh launcher runs as `SCRIPT HOST COMMAND...`, the
/// way it runs ssh: COMMAND (one string, the proxy's path in quotes) runs
/// in the namespace named HOST.
fn launcher(dir: &Path, hosts: &Hosts) -> PathBuf {
    let path = dir.join("netns-ssh");
    let script = format!(
        "#!/bin/sh\nhost=$1\nshift\ncase $host in\n{}|{}) exec ip netns exec \"$host\" sh -c \"$*\" ;;\nesac\necho \"netns-ssh: no host $host\" >&2\nexit 255\n",
        hosts.a, hosts.b
    );
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The value of variable `name` in the environment of process `pid`.
fn env_of(pid: u32, name: &str) -> Option<String> {
    let env = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    env.split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

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
    let hosts = match Hosts::create() {
        Ok(h) => h,
        Err(why) => {
            eprintln!("hosts: skipped: cannot create network namespaces: {why}");
            return;
        }
    };
    hosts.wait_up();
    let origin = Origin::start(&hosts.b);
    let site = Site::new();
    let data = tempfile::tempdir().unwrap();
    let bin_dir = tempfile::tempdir().unwrap();
    let script = launcher(bin_dir.path(), &hosts);

    let route = format!("/app/=http://{B_ADDR}:{}/", origin.port);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &hosts.a, "mpirun", "-launcher", "rsh"])
        .arg("-launcher-exec")
        .arg(&script)
        .args(["-hosts", &format!("{}:1,{}:2", hosts.a, hosts.b)])
        .args(["-localhost", A_ADDR, "-disable-auto-cleanup"])
        .args([
            "-genv",
            "UCX_TLS",
            "tcp,self",
            "-genv",
            "UCX_NET_DEVICES",
            LINK,
        ])
        .args(["-np", "3", BIN, "--listen", &format!("{A_ADDR}:0")])
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
    });
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
