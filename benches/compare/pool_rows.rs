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
