//! A doorbell per worker: a UDP socket its poller sleeps on, which rank 0
//! rings (one empty datagram) when it sends a new stream to a worker while
//! few streams are in flight. MPI has no way to wait for a message without
//! spinning a core, so without the bell a worker finds a request only at
//! its next poll: up to 50 ms late after a quiet spell, or it must spin,
//! and a spinning poller costs a context switch per yield on busy cores.
//!
//! Each worker tells rank 0 where its bell is (its `Card`) once, at start,
//! over MPI. A bell rank 0 cannot reach (a firewall between hosts) only
//! costs the latency polling had: the ring is a hint, never the message.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// Where a worker's bell is: which kernel and network namespace it lives
/// in, its port, and the addresses of its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// Boot id and network namespace: equal on both sides means loopback
    /// reaches the bell.
    pub netns: String,
    pub port: u16,
    pub addrs: Vec<IpAddr>,
}

impl Card {
    /// One line each: namespace, port, addresses (space-separated).
    pub fn encode(&self) -> Vec<u8> {
        let addrs: Vec<String> = self.addrs.iter().map(IpAddr::to_string).collect();
        format!("{}\n{}\n{}", self.netns, self.port, addrs.join(" ")).into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<Card> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.splitn(3, '\n');
        let netns = lines.next()?.to_string();
        let port = lines.next()?.parse().ok()?;
        let addrs = lines
            .next()?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        Some(Card { netns, port, addrs })
    }

    /// Where rank 0, living in namespace `own`, rings this bell: loopback
    /// within one namespace of one kernel; otherwise every address of the
    /// host that is not loopback (whichever the route reaches).
    pub fn targets(&self, own: &str) -> Vec<SocketAddr> {
        if self.netns == own {
            return vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.port)];
        }
        self.addrs
            .iter()
            .filter(|a| !a.is_loopback() && !a.is_unspecified())
            .map(|&a| SocketAddr::new(a, self.port))
            .collect()
    }
}

/// This process's kernel and network namespace, as a `Card` names them.
pub fn netns() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{} {ns}", boot.trim())
}

/// A worker's bell.
pub struct Bell {
    socket: UdpSocket,
}

impl Bell {
    /// A bell on every IPv4 address of this host, on a port the kernel picks.
    pub fn bind() -> io::Result<Bell> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.set_nonblocking(true)?;
        Ok(Bell { socket })
    }

    /// The card that tells rank 0 where to ring.
    pub fn card(&self) -> io::Result<Card> {
        Ok(Card {
            netns: netns(),
            port: self.socket.local_addr()?.port(),
            addrs: host_addrs(),
        })
    }

    /// Sleep up to `limit`, or until rung; whether it rang. Rings that
    /// came meanwhile are all taken.
    pub fn wait(&self, limit: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: limit.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: limit.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one valid pollfd and a valid timespec that outlive the
        // call; the descriptor is open (owned by `self.socket`); no signal
        // mask is passed.
        unsafe { libc::ppoll(&mut fd, 1, &ts, std::ptr::null()) };
        self.take()
    }

    /// Take every ring waiting; whether there was one.
    fn take(&self) -> bool {
        let mut buf = [0u8; 16];
        let mut rung = false;
        while self.socket.recv_from(&mut buf).is_ok() {
            rung = true;
        }
        rung
    }
}

/// Rank 0's side: where each worker's bell is.
pub struct Ringer {
    socket: Option<UdpSocket>,
    own: String,
    /// By rank.
    targets: Vec<Vec<SocketAddr>>,
}

impl Ringer {
    pub fn new(size: usize) -> Ringer {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .and_then(|s| s.set_nonblocking(true).map(|()| s));
        if let Err(e) = &socket {
            log::warn!("no socket to wake workers with ({e}): they find requests by polling");
        }
        Ringer {
            socket: socket.ok(),
            own: netns(),
            targets: vec![Vec::new(); size],
        }
    }

    /// Worker `rank` sent its card.
    pub fn learn(&mut self, rank: usize, card: &Card) {
        let targets = card.targets(&self.own);
        log::debug!("rank {rank}'s bell: {targets:?}");
        if let Some(slot) = self.targets.get_mut(rank) {
            *slot = targets;
        }
    }

    /// Ring worker `rank`'s bell. A ring that cannot go out changes
    /// nothing: the worker polls anyway.
    pub fn ring(&self, rank: usize) {
        let (Some(socket), Some(targets)) = (&self.socket, self.targets.get(rank)) else {
            return;
        };
        for to in targets {
            let _ = socket.send_to(&[], to);
        }
    }
}

/// The IPv4 and IPv6 addresses of this host's interfaces.
fn host_addrs() -> Vec<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `list` is a valid out-pointer; on success it owns a list
    // freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Vec::new();
    }
    let mut addrs = Vec::new();
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive
        // until freeifaddrs; its ifa_addr is null or a valid sockaddr whose
        // family says which struct it is.
        unsafe {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(sa as *const libc::sockaddr_in);
                        addrs.push(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)).into());
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(sa as *const libc::sockaddr_in6);
                        addrs.push(IpAddr::from(v6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_round_trips_and_picks_loopback_only_in_the_same_namespace() {
        let card = Card {
            netns: "b net:[1]".into(),
            port: 4242,
            addrs: vec!["127.0.0.1".parse().unwrap(), "10.9.0.2".parse().unwrap()],
        };
        assert_eq!(Card::decode(&card.encode()), Some(card.clone()));
        assert_eq!(
            card.targets("b net:[1]"),
            vec!["127.0.0.1:4242".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            card.targets("b net:[2]"),
            vec!["10.9.0.2:4242".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(Card::decode(b"x\nnot a port\n"), None);
    }

    #[test]
    fn a_ring_wakes_a_sleeping_bell_at_once() {
        let bell = Bell::bind().unwrap();
        let card = bell.card().unwrap();
        assert!(!card.addrs.is_empty());
        let mut ringer = Ringer::new(2);
        ringer.learn(1, &card);
        let t0 = std::time::Instant::now();
        let rang = std::thread::scope(|s| {
            let waiter = s.spawn(|| bell.wait(Duration::from_secs(10)));
            ringer.ring(1);
            waiter.join().unwrap()
        });
        assert!(rang && t0.elapsed() < Duration::from_secs(5));
        // Nothing rang since: a short wait says so.
        assert!(!bell.wait(Duration::from_millis(1)));
    }
}
