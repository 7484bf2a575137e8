//! Starting mpiweb, under mpirun or alone, and draining its output: the port and
//! rank 0's pid come from its `listening on` line.

use super::*;

/// Spawns mpiweb (under mpirun unless solo) with stdout and stderr on one pipe.
///
/// mpiweb logs to stderr; mpirun reports a rank's failure on stdout: one pipe
/// keeps both, in order, for the error message if startup fails.
fn spawn_mpiweb(
    cfg: &Config,
    site: &Site,
    launch: &MpiwebLaunch,
) -> BoxResult<(Child, io::PipeReader)> {
    let mut cmd = if launch.solo {
        Command::new(&cfg.mpiweb)
    } else {
        let ranks = if launch.store.is_some() {
            STORE_RANKS
        } else {
            RANKS
        };
        let mut c = Command::new("mpirun");
        c.arg("-np").arg(ranks).arg(&cfg.mpiweb);
        c
    };
    // As users start it: access lines on stderr (in batches), which under
    // mpirun pass through the launcher's processes; nginx writes its
    // access file.
    cmd.arg("-l").arg("127.0.0.1:0");
    if let Some(route) = &launch.route {
        cmd.arg("--route").arg(route);
    }
    // On loopback, so writes need no --store-token.
    if let Some(data) = &launch.store {
        cmd.arg("--store")
            .arg(STORE_PREFIX)
            .arg("--data")
            .arg(data)
            .arg("--replicas")
            .arg(STORE_REPLICAS.to_string());
        if launch.store_cache_off {
            cmd.args(["--store-cache", "0"]);
        }
    }
    cmd.arg(&site.docroot);
    spawn_piped(cmd)
}

/// Spawns `cmd` with stdout and stderr on one pipe, and no stdin.
pub(super) fn spawn_piped(mut cmd: Command) -> BoxResult<(Child, io::PipeReader)> {
    let (reader, writer) = io::pipe()?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let child = cmd.spawn()?;
    // `cmd` holds the pipe's write end: drop it, or the reader never sees EOF.
    drop(cmd);
    Ok((child, reader))
}

/// How mpiweb is started.
pub(super) struct MpiwebLaunch {
    /// Without mpirun: a world of one rank.
    pub(super) solo: bool,
    /// A `--route` value; None serves the docroot only.
    pub(super) route: Option<String>,
    /// The store rows: `--store STORE_PREFIX --data DIR --replicas STORE_REPLICAS`
    /// with this DIR, under `mpirun -np STORE_RANKS`.
    pub(super) store: Option<PathBuf>,
    /// `--store-cache 0`: every read of a document goes to a replica.
    pub(super) store_cache_off: bool,
}

impl MpiwebLaunch {
    pub(super) fn static_files(cfg: &Config) -> MpiwebLaunch {
        MpiwebLaunch {
            solo: cfg.solo,
            route: None,
            store: None,
            store_cache_off: false,
        }
    }

    fn label(&self) -> String {
        if self.store.is_some() {
            return "mpiweb store".to_string();
        }
        match (&self.route, self.solo) {
            (None, _) => "mpiweb".to_string(),
            (Some(_), false) => "mpiweb proxy".to_string(),
            (Some(_), true) => "mpiweb proxy (alone)".to_string(),
        }
    }
}

pub(super) fn start_mpiweb(cfg: &Config, site: &Site, launch: &MpiwebLaunch) -> BoxResult<Server> {
    let label = launch.label();
    eprintln!("bench: starting {label}");
    let (child, output) = spawn_mpiweb(cfg, site, launch)?;
    let mut server = listening_mpiweb(label, child, output)?;
    if let Err(e) = server.wait_ready() {
        return Err(format!("{e}\nmpiweb output (last lines):\n{}", server.output_tail()).into());
    }
    if server.rank0_pid.is_none() {
        eprintln!("bench: mpiweb did not print its pid; RSS will be that of the launcher");
    }
    eprintln!(
        "bench: {} on port {} (rank 0 pid {:?})",
        server.label, server.port, server.rank0_pid
    );
    Ok(server)
}

/// A spawned mpiweb (or its launcher) as a Server, once it printed its
/// `listening on` line; its output is drained from here on.
pub(super) fn listening_mpiweb(
    label: String,
    child: Child,
    output: io::PipeReader,
) -> BoxResult<Server> {
    let tail = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let tail2 = Arc::clone(&tail);
    thread::spawn(move || drain_mpiweb_output(output, tx, tail2));
    let mut server = Server {
        kind: Kind::Mpiweb,
        label,
        child,
        port: 0,
        rank0_pid: None,
        output_tail: Some(tail),
        error_log: None,
        stopped: false,
    };
    match wait_listening(&mut server, &rx) {
        Ok((port, pid)) => {
            server.port = port;
            server.rank0_pid = pid;
            Ok(server)
        }
        Err(e) => Err(format!("{e}\nmpiweb output (last lines):\n{}", server.output_tail()).into()),
    }
}

/// Waits for the drain thread to report the "listening on" line.
fn wait_listening(
    server: &mut Server,
    rx: &mpsc::Receiver<(u16, Option<u32>)>,
) -> BoxResult<(u16, Option<u32>)> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(found) => return Ok(found),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Its output ended: it is exiting, so its status says why.
                wait_child(&mut server.child, Duration::from_secs(5));
                let status = server.child.try_wait()?.map(|s| s.to_string());
                let status = status.unwrap_or_else(|| "still running".to_string());
                return Err(format!(
                    "mpiweb closed its output without printing `listening on` ({status})"
                )
                .into());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(status) = server.child.try_wait()? {
            return Err(format!("mpiweb exited during startup ({status})").into());
        }
        if Instant::now() >= deadline {
            return Err(
                format!("mpiweb printed no `listening on` line within {START_TIMEOUT:?}").into(),
            );
        }
    }
}

/// Reads mpiweb's output for the whole run so the pipe never fills.
///
/// Lines are parsed only until the `listening on` line; after that (one access
/// log line per request) the bytes are read in big blocks and only the last
/// few KiB are kept, so the drain costs little CPU during measurements.
fn drain_mpiweb_output(
    output: impl Read,
    tx: mpsc::Sender<(u16, Option<u32>)>,
    tail: Arc<Mutex<Vec<u8>>>,
) {
    const KEEP: usize = 4096;
    let keep = |bytes: &[u8]| {
        if let Ok(mut t) = tail.lock() {
            t.extend_from_slice(bytes);
            if t.len() > KEEP {
                let cut = t.len() - KEEP;
                t.drain(..cut);
            }
        }
    };
    let mut reader = BufReader::with_capacity(1 << 16, output);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => keep(&line),
        }
        if let Some(found) = parse_listening(&String::from_utf8_lossy(&line)) {
            let _ = tx.send(found);
            break;
        }
    }
    drop(tx);
    let mut block = vec![0u8; 1 << 16];
    loop {
        match reader.read(&mut block) {
            Ok(0) | Err(_) => return,
            Ok(n) => keep(&block[..n]),
        }
    }
}

/// Parses `... listening on http://127.0.0.1:PORT/ (pid N, ...)` into (PORT, N).
fn parse_listening(line: &str) -> Option<(u16, Option<u32>)> {
    const MARK: &str = "listening on http://";
    let rest = &line[line.find(MARK)? + MARK.len()..];
    let authority = rest.split(|c: char| c == '/' || c.is_whitespace()).next()?;
    let port = authority.rsplit(':').next()?.parse().ok()?;
    Some((port, parse_pid(line)))
}

/// The number after a standalone word `pid` (as in `pid 123`, `pid=123`, `pid: 123`).
fn parse_pid(line: &str) -> Option<u32> {
    line.match_indices("pid").find_map(|(at, _)| {
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        let after = line[at + 3..].trim_start_matches([' ', ':', '=']);
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}
