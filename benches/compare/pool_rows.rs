//! The pool rows: three origins behind one pool, and failover while one is killed and restarted.

use super::*;

/// Starts the three origins, then measures each server in front of them, one at a time:
/// first every server's pool row, then every server's failover run.
/// Fails when the origins cannot be started, or B cannot be put back between runs.
pub(super) fn measure_pool_rows(
    cfg: &Config,
    site: &Site,
    report: &mut Report,
    failed: &mut Vec<Kind>,
) -> BoxResult<()> {
    let mut pool = PoolOrigins::start(cfg, site)?;
    let mut started = Vec::new();
    for kind in cfg.kinds() {
        if failed.contains(&kind) {
            continue;
        }
        match pool_small(cfg, site, kind, pool.ports(), report) {
            Ok(()) => started.push(kind),
            Err(e) => {
                report.note(kind, format!("pool: failed to start: {e}"));
                failed.push(kind);
            }
        }
    }
    let mut result = Ok(());
    for kind in started {
        if let Err(e) = pool.ensure_plain_b(cfg, site) {
            result = Err(format!("origin nginx B could not be started again: {e}").into());
            break;
        }
        if let Err(e) = pool_failover(cfg, site, kind, &mut pool, report) {
            report.note(kind, format!("pool failover: failed to start: {e}"));
            failed.push(kind);
        }
    }
    pool.stop(report);
    result
}

/// Row pool: the small file through the pool, wrk at SMALL_CONNS connections for BENCH_SECS.
pub(super) fn pool_small(
    cfg: &Config,
    site: &Site,
    kind: Kind,
    ports: [u16; 3],
    report: &mut Report,
) -> BoxResult<()> {
    let mut server = Server::start_pool(cfg, site, kind, ports)?;
    for problem in sanity_check(server.port, false) {
        report.note(kind, format!("pool: {problem}"));
    }
    let label = server.label.clone();
    eprintln!(
        "bench: {label}: pool, wrk, {SMALL_CONNS} connections, {} s",
        cfg.secs
    );
    match run_wrk(cfg, server.port, "/small.html", SMALL_CONNS, 5) {
        Ok(w) => {
            eprintln!(
                "bench: {label}:   {:.0} req/s, errors: {}",
                w.req_per_sec,
                w.errors_cell()
            );
            report.figures_mut(kind).pool = Some(w);
        }
        Err(e) => report.note(kind, format!("pool: {e}")),
    }
    finish_proxy_row(&mut server, kind, Row::Pool, report);
    Ok(())
}

/// Row pool, failover: wrk for FAILOVER_RUN while origin B is killed and started again.
///
/// wrk runs on a thread of its own; this one kills B at FAILOVER_KILL_AT and
/// starts it at FAILOVER_RESTART_AT, both counted from wrk's start. The B
/// started again logs the requests wrk marked, and only them.
pub(super) fn pool_failover(
    cfg: &Config,
    site: &Site,
    kind: Kind,
    pool: &mut PoolOrigins,
    report: &mut Report,
) -> BoxResult<()> {
    let mut server = Server::start_pool(cfg, site, kind, pool.ports())?;
    for problem in sanity_check(server.port, false) {
        report.note(kind, format!("pool failover: {problem}"));
    }
    let (label, port) = (server.label.clone(), server.port);
    let secs = FAILOVER_RUN.as_secs();
    eprintln!(
        "bench: {label}: pool failover, wrk, {SMALL_CONNS} connections, {secs} s; \
         origin B killed at {:?}, started again at {:?}",
        FAILOVER_KILL_AT, FAILOVER_RESTART_AT
    );
    let header = format!("X-Bench: {FAILOVER_MARK}");
    let extra = ["-H", header.as_str()];
    let start = Instant::now();
    let (wrk, restarted) = thread::scope(|scope| {
        let wrk =
            scope.spawn(|| run_wrk_for(cfg, port, "/small.html", SMALL_CONNS, secs, 5, &extra));
        sleep_until(start + FAILOVER_KILL_AT);
        pool.kill_b();
        sleep_until(start + FAILOVER_RESTART_AT);
        let restarted = pool
            .restart_b(cfg, site, true)
            .map(|()| (SystemTime::now(), start.elapsed()));
        let wrk = wrk
            .join()
            .unwrap_or_else(|_| Err("the wrk thread panicked".into()));
        (wrk, restarted)
    });
    let mut figures = FailoverFigures::default();
    match wrk {
        Ok(w) => {
            eprintln!(
                "bench: {label}:   {:.0} req/s, {} errors: {}",
                w.req_per_sec,
                w.error_count,
                w.errors_cell()
            );
            figures.wrk = Some(w);
        }
        Err(e) => report.note(kind, format!("pool failover: {e}")),
    }
    match restarted {
        Ok((answering, after)) => {
            let log = fs::read_to_string(PoolOrigins::b_access_log(site)).unwrap_or_default();
            let (requests, first) = parse_failover_log(&log);
            let answering = unix_secs(answering);
            // The proxy may send B a request in the instant before the probe sees it answer.
            let first_after = first.map(|t| (t - answering).max(0.0));
            let first = first_after.map_or_else(|| "-".to_string(), |s| format!("{s:.1}"));
            eprintln!(
                "bench: {label}:   B answering again {:.1} s into the run; it then got \
                 {requests} proxied requests, the first {first} s after that",
                after.as_secs_f64()
            );
            figures.b_requests = Some(requests);
            figures.b_first_after_secs = first_after;
        }
        Err(e) => report.note(
            kind,
            format!("pool failover: origin nginx B did not start again: {e}"),
        ),
    }
    report.figures_mut(kind).failover = Some(figures);
    // Complaints are expected here: each proxy logs its failed attempts on B.
    finish_run(&mut server, kind, "pool failover", report);
    Ok(())
}

/// Counts the lines of B's failover access log (`$msec $http_x_bench`) that carry
/// FAILOVER_MARK, and gives the earliest of their times (seconds since the epoch).
pub(super) fn parse_failover_log(text: &str) -> (u64, Option<f64>) {
    let mut count = 0;
    let mut first: Option<f64> = None;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(msec), Some(mark)) = (fields.next(), fields.next()) else {
            continue;
        };
        if mark != FAILOVER_MARK {
            continue;
        }
        count += 1;
        if let Ok(t) = msec.parse::<f64>() {
            first = Some(first.map_or(t, |f| f.min(t)));
        }
    }
    (count, first)
}

/// Sleeps until `deadline` (at once if it has passed).
pub(super) fn sleep_until(deadline: Instant) {
    thread::sleep(deadline.saturating_duration_since(Instant::now()));
}

/// The pool rows' three origins; B is killed and started again by each failover run.
pub(super) struct PoolOrigins {
    a: Server,
    /// None from its kill to its restart, or when it failed to start again.
    b: Option<Server>,
    c: Server,
    /// B's port, which every restart takes again.
    b_port: u16,
    /// Whether the B that runs has its access log (it is started that way during a failover run).
    b_logged: bool,
}

impl PoolOrigins {
    fn start(cfg: &Config, site: &Site) -> BoxResult<PoolOrigins> {
        let plain = |member| NginxRole::PoolOrigin {
            member,
            logged: false,
        };
        let a = start_nginx(cfg, site, plain(Member::A))?;
        let b = start_nginx(cfg, site, plain(Member::B))?;
        let c = start_nginx(cfg, site, plain(Member::C))?;
        for server in [&a, &b, &c] {
            let problems = sanity_check(server.port, false);
            if !problems.is_empty() {
                return Err(format!("{}: {}", server.label, problems.join("; ")).into());
            }
        }
        eprintln!(
            "bench: pool origins A, B, C on ports {}, {}, {}",
            a.port, b.port, c.port
        );
        Ok(PoolOrigins {
            b_port: b.port,
            a,
            b: Some(b),
            c,
            b_logged: false,
        })
    }

    fn ports(&self) -> [u16; 3] {
        [self.a.port, self.b_port, self.c.port]
    }

    /// SIGKILL to B's pid: it dies as a crash would, with requests in flight.
    fn kill_b(&mut self) {
        if let Some(mut b) = self.b.take() {
            eprintln!("bench: killing origin nginx B (pid {})", b.child.id());
            b.kill();
        }
    }

    /// Starts B on its port (stopping the B that runs, if any) and polls until it answers.
    fn restart_b(&mut self, cfg: &Config, site: &Site, logged: bool) -> BoxResult<()> {
        if let Some(mut b) = self.b.take() {
            b.stop();
        }
        let role = NginxRole::PoolOrigin {
            member: Member::B,
            logged,
        };
        self.b = Some(start_nginx_on(cfg, site, role, self.b_port)?);
        self.b_logged = logged;
        Ok(())
    }

    /// Puts back a B without its access log, as the other rows expect, unless one runs.
    fn ensure_plain_b(&mut self, cfg: &Config, site: &Site) -> BoxResult<()> {
        if self.b.is_some() && !self.b_logged {
            return Ok(());
        }
        self.restart_b(cfg, site, false)
    }

    fn b_access_log(site: &Site) -> PathBuf {
        let role = NginxRole::PoolOrigin {
            member: Member::B,
            logged: true,
        };
        role.dir(site).join("access.log")
    }

    /// Notes what the origins complained about, then stops them.
    fn stop(mut self, report: &mut Report) {
        let b = self.b.as_mut();
        for server in [Some(&mut self.a), b, Some(&mut self.c)]
            .into_iter()
            .flatten()
        {
            if let Some(complaints) = server.complaints() {
                report
                    .notes
                    .push(format!("pool: {}: {complaints}", server.label));
            }
            eprintln!("bench: stopping {}", server.label);
            server.stop();
        }
    }
}

/// What one failover run saw.
#[derive(Clone, Debug, Default)]
pub(super) struct FailoverFigures {
    pub(super) wrk: Option<WrkFigures>,
    /// Proxied requests of the run that the restarted B logged; None when B did not start again.
    pub(super) b_requests: Option<u64>,
    /// From B answering again to the first of them, in seconds.
    pub(super) b_first_after_secs: Option<f64>,
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
