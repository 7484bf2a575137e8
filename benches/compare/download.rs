//! Row 2's download client: full downloads of the 1 GiB file, over and over, on
//! keep-alive connections (also for proxy-big and the across-host download).

use super::*;

/// What the download clients of row 2 saw, summed over connections.
#[derive(Clone, Debug, Default)]
pub(super) struct DownloadFigures {
    pub(super) mib_per_sec: f64,
    /// Downloads that finished with the whole body.
    pub(super) full: u64,
    /// Failures, e.g. "non-200 2" or "socket error 1".
    errors: Vec<String>,
}

impl DownloadFigures {
    pub(super) fn errors_cell(&self) -> String {
        if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors.join(", ")
        }
    }
}

/// Per-connection counts of one download client.
#[derive(Default)]
struct DownloadTally {
    bytes: u64,
    full: u64,
    bad_head: u64,
    socket_errors: u64,
}

/// When the download clients stop: at `soft`; when a whole download is needed
/// and none is whole by then, as soon as one is; never after `hard`.
struct Window {
    soft: Instant,
    hard: Instant,
    need_full: bool,
    /// Whole downloads so far, over all connections.
    full: AtomicU64,
}

impl Window {
    fn over(&self) -> bool {
        let now = Instant::now();
        now >= self.hard
            || (now >= self.soft && (!self.need_full || self.full.load(Ordering::SeqCst) > 0))
    }

    /// How long a read may block: until the next moment `over` may turn true.
    fn read_wait(&self) -> Duration {
        let now = Instant::now();
        let next = if now < self.soft {
            self.soft
        } else {
            self.hard.min(now + Duration::from_millis(200))
        };
        next.saturating_duration_since(now)
            .max(Duration::from_millis(1))
    }
}

/// Downloads the big file over and over on `conns` keep-alive connections for `secs`;
/// with `need_full`, on past `secs` until one download is whole (PROXY_BIG_LIMIT at most).
///
/// Why not wrk: it reads 8 KiB at a time and parses every body byte, so on
/// this machine one wrk thread tops out below what a server can send over
/// loopback, and the ratio would measure wrk. Reading 1 MiB at a time keeps
/// the client cheap, so the figure is the server's.
pub(super) fn download_for(port: u16, conns: u32, secs: u64, need_full: bool) -> DownloadFigures {
    download_at(loopback(port), conns, secs, need_full)
}

/// `download_for` from the server at `addr`.
pub(super) fn download_at(
    addr: SocketAddr,
    conns: u32,
    secs: u64,
    need_full: bool,
) -> DownloadFigures {
    let start = Instant::now();
    let soft = start + Duration::from_secs(secs);
    let window = Arc::new(Window {
        soft,
        hard: if need_full {
            soft.max(start + PROXY_BIG_LIMIT)
        } else {
            soft
        },
        need_full,
        full: AtomicU64::new(0),
    });
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let window = Arc::clone(&window);
            thread::spawn(move || download_worker(addr, &window))
        })
        .collect();
    let mut total = DownloadTally::default();
    for h in handles {
        match h.join() {
            Ok(t) => {
                total.bytes += t.bytes;
                total.full += t.full;
                total.bad_head += t.bad_head;
                total.socket_errors += t.socket_errors;
            }
            Err(_) => total.socket_errors += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let errors = [
        ("bad response", total.bad_head),
        ("socket error", total.socket_errors),
    ]
    .into_iter()
    .filter(|&(_, n)| n > 0)
    .map(|(what, n)| format!("{what} {n}"))
    .collect();
    DownloadFigures {
        mib_per_sec: total.bytes as f64 / elapsed / (1024.0 * 1024.0),
        full: total.full,
        errors,
    }
}

fn download_worker(addr: SocketAddr, window: &Window) -> DownloadTally {
    let mut tally = DownloadTally::default();
    let mut block = vec![0u8; 1 << 20];
    let mut stream: Option<TcpStream> = None;
    while !window.over() {
        let s = match stream.take() {
            Some(s) => s,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => s,
                Err(_) => {
                    tally.socket_errors += 1;
                    thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        match download_once(s, addr.port(), &mut block, window, &mut tally) {
            // A complete download on a connection the server keeps open: reuse it.
            Ok(Some(s)) => stream = Some(s),
            Ok(None) => {}
            Err(_) if window.over() => {}
            Err(_) => tally.socket_errors += 1,
        }
    }
    tally
}

/// One GET of the big file; gives the stream back if it can carry the next request.
fn download_once(
    mut s: TcpStream,
    port: u16,
    block: &mut [u8],
    window: &Window,
    tally: &mut DownloadTally,
) -> io::Result<Option<TcpStream>> {
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(get_request(port, "/big.bin").as_bytes())?;
    let mut head_buf = Vec::new();
    let head = loop {
        if let Some(head) = parse_head(&head_buf) {
            break head;
        }
        let n = read_within(&mut s, block, window)?;
        if n == 0 {
            // Closed between requests: a server may end keep-alive; try again on a new one.
            return Ok(None);
        }
        head_buf.extend_from_slice(&block[..n]);
    };
    if head.status != 200 || head.content_length != Some(BIG_SIZE) {
        tally.bad_head += 1;
        return Ok(None);
    }
    let mut got = (head_buf.len() - head.len) as u64;
    tally.bytes += got;
    while got < BIG_SIZE {
        if window.over() {
            return Ok(None);
        }
        let want = block.len().min((BIG_SIZE - got) as usize);
        let n = read_within(&mut s, &mut block[..want], window)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        got += n as u64;
        tally.bytes += n as u64;
    }
    tally.full += 1;
    window.full.fetch_add(1, Ordering::SeqCst);
    Ok(Some(s))
}

/// One read that gives up shortly after the window is over (a timeout before that reads again).
fn read_within(s: &mut TcpStream, block: &mut [u8], window: &Window) -> io::Result<usize> {
    loop {
        s.set_read_timeout(Some(window.read_wait()))?;
        match s.read(block) {
            Err(e) if is_timeout(&e) && !window.over() => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}
