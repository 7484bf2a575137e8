//! Two hosts on one machine: network namespaces A and B joined by a veth
//! pair, 10.77.0.1 in A and 10.77.0.2 in B, an origin HTTP server in B, and
//! the `mpirun` that starts a job across them the way it starts across real
//! machines (hydra's rsh launcher, whose "ssh" enters the namespace named
//! after the host; MPI over TCP on the veth). Shared by tests/hosts.rs and
//! the bench (benches/compare/hosts_rows.rs, by `#[path]`): std and libc
//! only, and no panics but on a broken machine.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Host A's address (rank 0, the client, mpirun).
pub const A_ADDR: &str = "10.77.0.1";
/// Host B's address (the workers, the origin).
pub const B_ADDR: &str = "10.77.0.2";
/// The veth end in each namespace: one name in both, so that one
/// `UCX_NET_DEVICES` serves every rank.
pub const LINK: &str = "mpiweb0";

/// The two namespaces. Dropping it ends what still runs in them and
/// removes them, also after a panic.
pub struct Hosts {
    pub a: String,
    pub b: String,
}

impl Hosts {
    /// Namespaces named after this process and `tag` (tests and the bench
    /// may run at once).
    pub fn create(tag: &str) -> Result<Hosts, String> {
        let pid = std::process::id();
        let hosts = Hosts {
            a: format!("mpiweb-{tag}a-{pid}"),
            b: format!("mpiweb-{tag}b-{pid}"),
        };
        // A namespace named after this pid is left from a run that was
        // killed: its creator is gone.
        for ns in [&hosts.a, &hosts.b] {
            if Path::new("/run/netns").join(ns).exists() {
                let _ = ip(&["netns", "del", ns]);
            }
        }
        ip(&["netns", "add", &hosts.a])?;
        // From here on, dropping `hosts` removes what was made.
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
    pub fn wait_up(&self) -> Result<(), String> {
        for ns in [&self.a, &self.b] {
            let up = || {
                Command::new("ip")
                    .args(["-n", ns, "-o", "link", "show", "dev", LINK])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(" state UP "))
            };
            let until = Instant::now() + Duration::from_secs(10);
            while !up() {
                if Instant::now() >= until {
                    return Err(format!("{LINK} in {ns} never came up"));
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// Processes living in namespace `ns`.
    pub fn pids(&self, ns: &str) -> Vec<u32> {
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

    /// `ip netns exec A mpirun` for `np` ranks, one in A and the rest in B,
    /// started through `script` (see `launcher`) with MPI over TCP on the
    /// veth; the caller adds the program and its arguments.
    pub fn mpirun(&self, script: &Path, np: usize) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.a, "mpirun", "-launcher", "rsh"])
            .arg("-launcher-exec")
            .arg(script)
            .args(["-hosts", &format!("{}:1,{}:{}", self.a, self.b, np - 1)])
            .args(["-localhost", A_ADDR, "-disable-auto-cleanup"])
            .args(["-genv", "UCX_TLS", "tcp,self", "-genv", "UCX_NET_DEVICES"])
            .args([LINK, "-np", &np.to_string()]);
        cmd
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            // Only their creator starts processes in these namespaces.
            for pid in self.pids(ns) {
                // SAFETY: kill(2) with a pid and a signal number.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Run `ip ARGS`; its error output if it fails.
pub fn ip(args: &[&str]) -> Result<(), String> {
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
pub fn enter(ns: &str) -> Result<(), String> {
    let file = fs::File::open(Path::new("/run/netns").join(ns))
        .map_err(|e| format!("open namespace {ns}: {e}"))?;
    // SAFETY: a valid descriptor, kept open for the call; CLONE_NEWNET
    // changes the network namespace of this thread alone.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    match rc {
        0 => Ok(()),
        _ => Err(format!("setns {ns}: {}", io::Error::last_os_error())),
    }
}

/// Run `f` on a thread of its own in namespace `ns`.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    thread::scope(|s| {
        let t = s.spawn(|| enter(ns).map(|()| f()));
        t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// An origin server in host B on B's address, on std only, on kept-alive
/// connections: every answer is 200 with `body`, or without one
/// `origin in B: METHOD TARGET from PEER`.
pub struct Origin {
    pub port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

/// What the origin answers every request with.
#[derive(Clone)]
pub enum Answer {
    /// A line naming the method, the target and the client's address.
    Echo,
    /// These bytes.
    Fixed(Arc<[u8]>),
    /// This many zero bytes, written a MiB at a time.
    Zeros(u64),
}

impl Origin {
    pub fn start(ns: &str, body: Option<Vec<u8>>) -> Result<Origin, String> {
        let answer = body.map_or(Answer::Echo, |b| Answer::Fixed(Arc::from(b)));
        Origin::answering(ns, answer)
    }

    pub fn answering(ns: &str, answer: Answer) -> Result<Origin, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (ns, halt) = (ns.to_string(), Arc::clone(&stop));
        let accept = thread::spawn(move || {
            let bound = enter(&ns).and_then(|()| {
                let l = TcpListener::bind((B_ADDR, 0)).map_err(|e| format!("bind in B: {e}"))?;
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                Ok(l)
            });
            let listener = match bound {
                Ok(l) => l,
                Err(e) => return drop(tx.send(Err(e))),
            };
            let _ = tx.send(
                listener
                    .local_addr()
                    .map(|a| a.port())
                    .map_err(|e| e.to_string()),
            );
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, peer)) => {
                        let answer = answer.clone();
                        thread::spawn(move || serve(s, peer, &answer));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the origin in B did not start".to_string())??;
        Ok(Origin {
            port,
            stop,
            accept: Some(accept),
        })
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
fn serve(mut s: TcpStream, peer: SocketAddr, answer: &Answer) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
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
        let echo;
        let (body, zeros): (&[u8], u64) = match answer {
            Answer::Fixed(b) => (b, 0),
            Answer::Zeros(n) => (&[], *n),
            Answer::Echo => {
                echo = format!("origin in B: {method} {target} from {}\n", peer.ip());
                (echo.as_bytes(), 0)
            }
        };
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len() as u64 + zeros
        )
        .into_bytes();
        answer.extend_from_slice(body);
        if s.write_all(&answer).is_err() {
            return;
        }
        let block = vec![0u8; 1 << 20];
        let mut left = zeros;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            if s.write_all(&block[..n]).is_err() {
                return;
            }
            left -= n as u64;
        }
    }
}

/// The script hydra's rsh launcher runs as `SCRIPT HOST COMMAND...`, the
/// way it runs ssh: COMMAND (one string, the proxy's path in quotes) runs
/// in the namespace named HOST.
pub fn launcher(dir: &Path, hosts: &Hosts) -> io::Result<PathBuf> {
    let path = dir.join("netns-ssh");
    let script = format!(
        "#!/bin/sh\nhost=$1\nshift\ncase $host in\n{}|{}) exec ip netns exec \"$host\" sh -c \"$*\" ;;\nesac\necho \"netns-ssh: no host $host\" >&2\nexit 255\n",
        hosts.a, hosts.b
    );
    fs::write(&path, script)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// The value of variable `name` in the environment of process `pid`.
pub fn env_of(pid: u32, name: &str) -> Option<String> {
    let env = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    env.split(|&b| b == 0)
        .find_map(|v| v.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The rank `rank` among `pids`: the process named `mpiweb` (not its
/// `mpiweb-keeper`) whose launcher gave it PMI_RANK=`rank`.
pub fn rank_pid(pids: &[u32], rank: usize) -> Option<u32> {
    let want = rank.to_string();
    pids.iter().copied().find(|&p| {
        fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "mpiweb")
            && env_of(p, "PMI_RANK").as_deref() == Some(want.as_str())
    })
}
