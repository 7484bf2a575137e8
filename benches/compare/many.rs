//! Row 3's client: MANY_CONNS connections held open at once, then one GET on each.

use super::*;

/// Counts for row 3, summed over the client threads.
#[derive(Clone, Debug, Default)]
pub(super) struct ManyFigures {
    /// Connections open at the moment the requests went out.
    pub(super) held: usize,
    connect_failed: usize,
    pub(super) ok: usize,
    /// Complete responses other than 200, by status.
    bad_status: BTreeMap<u16, usize>,
    bad_length: usize,
    truncated: usize,
    errors: usize,
    timed_out: usize,
    /// The first connect or socket error seen, to say why in the notes.
    first_error: Option<String>,
    /// From the start to the moment all connections were open.
    pub(super) connect_secs: f64,
    /// From the first request sent to the last answer read.
    pub(super) answer_secs: f64,
}

impl ManyFigures {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::BadStatus(code) => *self.bad_status.entry(code).or_default() += 1,
            Outcome::BadLength => self.bad_length += 1,
            Outcome::Truncated => self.truncated += 1,
            Outcome::Error => self.errors += 1,
            Outcome::TimedOut => self.timed_out += 1,
        }
    }

    fn merge(&mut self, other: &ManyFigures) {
        self.connect_failed += other.connect_failed;
        self.ok += other.ok;
        for (&code, &n) in &other.bad_status {
            *self.bad_status.entry(code).or_default() += n;
        }
        self.bad_length += other.bad_length;
        self.truncated += other.truncated;
        self.errors += other.errors;
        self.timed_out += other.timed_out;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    fn error(&mut self, what: &str, e: &dyn std::fmt::Display) {
        if self.first_error.is_none() {
            self.first_error = Some(format!("{what}: {e}"));
        }
    }

    /// Nonzero failure counts, e.g. "connect failed 12, status 503: 40, timed out 3".
    pub(super) fn failures(&self) -> Vec<String> {
        let statuses = self
            .bad_status
            .iter()
            .map(|(code, &n)| (format!("status {code}:"), n));
        [("connect failed".to_string(), self.connect_failed)]
            .into_iter()
            .chain(statuses)
            .chain([
                ("wrong length".to_string(), self.bad_length),
                ("closed early".to_string(), self.truncated),
                ("socket error".to_string(), self.errors),
                ("timed out".to_string(), self.timed_out),
            ])
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{what} {n}"))
            .chain(self.first_error.iter().map(|e| format!("first error: {e}")))
            .collect()
    }
}

/// Lets the client threads go on together once every one holds its connections.
struct Gate {
    state: Mutex<(usize, bool)>,
    cv: Condvar,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            state: Mutex::new((0, false)),
            cv: Condvar::new(),
        }
    }

    /// A client thread is ready; returns when the gate opens (or at `deadline`, never later).
    fn arrive_and_wait(&self, deadline: Instant) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.0 += 1;
        self.cv.notify_all();
        while !state.1 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.cv.wait_timeout(state, left) {
                Ok((s, _)) => state = s,
                Err(_) => return,
            }
        }
    }

    /// Waits for `n` arrivals (or `deadline`), then opens the gate.
    fn open_when_all(&self, n: usize, deadline: Instant) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        while state.0 < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.cv.wait_timeout(state, left) {
                Ok((s, _)) => state = s,
                Err(_) => return,
            }
        }
        state.1 = true;
        self.cv.notify_all();
    }
}

/// Opens MANY_CONNS connections, holds them all, then sends one GET on each and reads the answers.
///
/// A hundred threads each own a hundred connections: connecting blocks a
/// thread, and reading the answers one socket after another costs nothing
/// while waiting, because all requests are already out and the server works
/// on them in parallel. Every wait is bounded by the row's deadlines.
pub(super) fn many_connections(port: u16) -> ManyFigures {
    let start = Instant::now();
    let connect_deadline = start + MANY_CONNECT_BUDGET;
    let answer_deadline = start + MANY_ANSWER_BUDGET;
    let gate = Arc::new(Gate::new());
    let held = Arc::new(AtomicUsize::new(0));
    let request: Arc<[u8]> = get_request(port, "/small.html").into_bytes().into();
    let per_worker = MANY_CONNS / MANY_WORKERS;
    let mut handles = Vec::new();
    let mut total = ManyFigures::default();
    for _ in 0..MANY_WORKERS {
        let (gate, held, request) = (Arc::clone(&gate), Arc::clone(&held), Arc::clone(&request));
        let spawned = thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                many_worker(
                    port,
                    per_worker,
                    &request,
                    &gate,
                    &held,
                    connect_deadline,
                    answer_deadline,
                )
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                total.connect_failed += per_worker;
                total.error("spawning a client thread", &e);
            }
        }
    }
    gate.open_when_all(handles.len(), connect_deadline + Duration::from_secs(1));
    let sent_at = Instant::now();
    total.connect_secs = (sent_at - start).as_secs_f64();
    total.held = held.load(Ordering::SeqCst);
    eprintln!(
        "bench:   {} connections open at once after {:.1} s; sending the requests",
        total.held, total.connect_secs
    );
    for h in handles {
        match h.join() {
            Ok(part) => total.merge(&part),
            Err(_) => {
                total.errors += per_worker;
                total.error("client thread", &"panicked");
            }
        }
    }
    total.answer_secs = sent_at.elapsed().as_secs_f64();
    total
}

fn many_worker(
    port: u16,
    count: usize,
    request: &[u8],
    gate: &Gate,
    held: &AtomicUsize,
    connect_deadline: Instant,
    answer_deadline: Instant,
) -> ManyFigures {
    let mut figures = ManyFigures::default();
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let left = connect_deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            figures.connect_failed += 1;
            figures.error("connect", &"the row's connect budget ran out");
            continue;
        }
        match TcpStream::connect_timeout(&loopback(port), left.min(MANY_CONNECT_TIMEOUT)) {
            Ok(s) => streams.push(s),
            Err(e) => {
                figures.connect_failed += 1;
                figures.error("connect", &e);
            }
        }
    }
    held.fetch_add(streams.len(), Ordering::SeqCst);
    gate.arrive_and_wait(connect_deadline + Duration::from_secs(2));

    let mut sent = Vec::with_capacity(streams.len());
    for mut s in streams {
        let written = s
            .set_write_timeout(Some(Duration::from_secs(2)))
            .and_then(|()| s.write_all(request));
        match written {
            Ok(()) => sent.push(s),
            Err(e) => {
                figures.add(Outcome::Error);
                figures.error("write", &e);
            }
        }
    }
    let mut block = [0u8; 4096];
    for s in &mut sent {
        match read_answer(s, &mut block, answer_deadline) {
            Ok(outcome) => figures.add(outcome),
            Err(e) => {
                figures.add(Outcome::Error);
                figures.error("read", &e);
            }
        }
    }
    // The streams close here, after every answer of this thread is in.
    figures
}

/// Reads one response until it is complete, the peer closes, or the deadline passes.
fn read_answer(stream: &mut TcpStream, block: &mut [u8], deadline: Instant) -> io::Result<Outcome> {
    let expected = SMALL_SIZE as u64;
    let mut buf = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Past the deadline, one short last look at what has already arrived.
        let last_look = left.is_zero();
        let wait = if last_look {
            Duration::from_millis(1)
        } else {
            left
        };
        stream.set_read_timeout(Some(wait))?;
        match stream.read(block) {
            Ok(0) => return Ok(judge(&buf, true, expected).unwrap_or(Outcome::Truncated)),
            Ok(n) => {
                buf.extend_from_slice(&block[..n]);
                if let Some(outcome) = judge(&buf, false, expected) {
                    return Ok(outcome);
                }
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if last_look {
            return Ok(Outcome::TimedOut);
        }
    }
}
