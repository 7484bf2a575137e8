//! The proxy rows: small answers (with their cost per request), the lone process, 1 GiB through the proxy, idle CPU.

use super::*;

/// Starts the origin, then measures each server in front of it, one at a time.
/// Fails only when the origin cannot be started or does not serve the docroot.
pub(super) fn measure_proxy_rows(
    cfg: &Config,
    site: &Site,
    report: &mut Report,
    failed: &mut Vec<Kind>,
) -> BoxResult<()> {
    let mut origin = start_nginx(cfg, site, NginxRole::Origin)?;
    let problems = sanity_check(origin.port, true);
    if !problems.is_empty() {
        return Err(format!("origin nginx: {}", problems.join("; ")).into());
    }
    eprintln!("bench: origin nginx on port {}", origin.port);
    if cfg.runs(Row::ProxySmall) || cfg.runs(Row::ProxySolo) {
        // What the proxies' one-connection medians are read against: no hop at all.
        eprintln!(
            "bench: origin nginx: wrk --latency, 1 connection, {} s",
            cfg.secs
        );
        match run_wrk_one_conn(cfg, origin.port, "/small.html") {
            Ok(w) => {
                say_one_conn("origin nginx", &w);
                if !w.errors.is_empty() {
                    let errors = w.errors_cell();
                    report
                        .notes
                        .push(format!("origin nginx, 1 connection: {errors}"));
                }
                report.origin_p50_us = w.p50_us;
            }
            Err(e) => {
                eprintln!("bench: origin nginx, 1 connection: {e}");
                report
                    .notes
                    .push(format!("origin nginx, 1 connection: {e}"));
            }
        }
    }
    for kind in cfg.kinds() {
        if failed.contains(&kind) {
            continue;
        }
        if let Err(e) = measure_proxy_kind(cfg, site, kind, origin.port, report) {
            report.note(kind, format!("proxy rows: failed to start: {e}"));
            failed.push(kind);
        }
    }
    if let Some(complaints) = origin.complaints() {
        report.notes.push(format!("origin nginx: {complaints}"));
    }
    eprintln!("bench: stopping origin nginx");
    origin.stop();
    Ok(())
}

/// The proxy rows of one server, each in a fresh lifetime; fails when the server does not start.
pub(super) fn measure_proxy_kind(
    cfg: &Config,
    site: &Site,
    kind: Kind,
    origin_port: u16,
    report: &mut Report,
) -> BoxResult<()> {
    // nginx's proxy-small figure is also the one proxy-solo is read against.
    let small = cfg.runs(Row::ProxySmall) || (kind == Kind::Nginx && cfg.runs(Row::ProxySolo));
    if small {
        let (w, p50) = proxy_small(cfg, site, kind, false, origin_port, report)?;
        let figures = report.figures_mut(kind);
        figures.proxy_small = w;
        figures.proxy_small_p50_us = p50;
    }
    if kind == Kind::Mpiweb && cfg.runs(Row::ProxySolo) {
        let (w, p50) = proxy_small(cfg, site, kind, true, origin_port, report)?;
        let figures = report.figures_mut(kind);
        figures.proxy_solo = w;
        figures.proxy_solo_p50_us = p50;
    }
    if cfg.runs(Row::ProxyBig) {
        proxy_big(cfg, site, kind, origin_port, report)?;
    }
    if cfg.runs(Row::ProxyIdle) {
        let mut server = Server::start_proxy(cfg, site, kind, false, origin_port)?;
        eprintln!(
            "bench: {}: proxy-idle, CPU over {IDLE_WINDOW:?} without requests",
            server.label
        );
        // A keep-alive connection, warmed up, kept through the window.
        let mut conn = TcpStream::connect(loopback(server.port))?;
        conn.set_nodelay(true)?;
        timed_get(&mut conn, server.port, "/small.html")?;
        let mut idle = measure_idle(&server);
        match timed_get(&mut conn, server.port, "/small.html") {
            Ok(took) => idle.first_after_ms = Some(took.as_secs_f64() * 1000.0),
            Err(e) => report.note(kind, format!("proxy-idle: the request after it: {e}")),
        }
        eprintln!(
            "bench: {}:   {:.1}% of one core (ticks per process {:?}), launcher {:.1}%, \
             the next request {:.2?} ms",
            server.label,
            idle.percent,
            idle.per_process,
            idle.launcher_percent,
            idle.first_after_ms
        );
        report.figures_mut(kind).idle = Some(idle);
        finish_proxy_row(&mut server, kind, Row::ProxyIdle, report);
    }
    Ok(())
}

/// One GET of `path` on an open keep-alive connection: how long until the
/// whole answer was in.
fn timed_get(conn: &mut TcpStream, port: u16, path: &str) -> BoxResult<Duration> {
    let t0 = Instant::now();
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: mpiweb-bench\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut block = [0u8; 16 * 1024];
    while complete_reply("GET", &buf, false).is_none() {
        match conn.read(&mut block)? {
            0 => return Err(format!("GET {path}: closed before a complete answer").into()),
            n => buf.extend_from_slice(&block[..n]),
        }
    }
    Ok(t0.elapsed())
}

/// Notes what the server complained about during a row, then stops it.
pub(super) fn finish_proxy_row(server: &mut Server, kind: Kind, row: Row, report: &mut Report) {
    finish_run(server, kind, row.name(), report);
}

/// The same for a run that is not a whole row (`what` names it in the note).
pub(super) fn finish_run(server: &mut Server, kind: Kind, what: &str, report: &mut Report) {
    if let Some(complaints) = server.complaints() {
        report.note(kind, format!("{what}: {} {complaints}", server.label));
    }
    eprintln!("bench: stopping {}", server.label);
    server.stop();
}

/// Rows proxy-small (`solo` false) and proxy-solo: the small file through the proxy, wrk at
/// SMALL_CONNS connections, then at one connection for the median latency (microseconds).
pub(super) fn proxy_small(
    cfg: &Config,
    site: &Site,
    kind: Kind,
    solo: bool,
    origin_port: u16,
    report: &mut Report,
) -> BoxResult<(Option<WrkFigures>, Option<f64>)> {
    let row = if solo {
        Row::ProxySolo
    } else {
        Row::ProxySmall
    };
    let mut server = Server::start_proxy(cfg, site, kind, solo, origin_port)?;
    for problem in sanity_check(server.port, false) {
        report.note(kind, format!("{}: {problem}", row.name()));
    }
    let label = server.label.clone();
    eprintln!(
        "bench: {label}: {}, wrk, {SMALL_CONNS} connections, {} s",
        row.name(),
        cfg.secs
    );
    let figures = match run_wrk_costed(
        cfg,
        server.child.id(),
        server.port,
        "/small.html",
        SMALL_CONNS,
    ) {
        Ok(w) => {
            eprintln!(
                "bench: {label}:   {:.0} req/s, {} µs CPU and {} context switches per request, errors: {}",
                w.req_per_sec,
                w.cpu_us_per_req.map_or("-".into(), |v| format!("{v:.1}")),
                w.cs_per_req.map_or("-".into(), |v| format!("{v:.2}")),
                w.errors_cell()
            );
            Some(w)
        }
        Err(e) => {
            report.note(kind, format!("{}: {e}", row.name()));
            None
        }
    };
    eprintln!(
        "bench: {label}: {}, wrk --latency, 1 connection, {} s",
        row.name(),
        cfg.secs
    );
    let p50 = match run_wrk_one_conn(cfg, server.port, "/small.html") {
        Ok(w) => {
            say_one_conn(&label, &w);
            if !w.errors.is_empty() {
                let errors = w.errors_cell();
                report.note(kind, format!("{}, 1 connection: {errors}", row.name()));
            }
            w.p50_us
        }
        Err(e) => {
            report.note(kind, format!("{}, 1 connection: {e}", row.name()));
            None
        }
    };
    finish_proxy_row(&mut server, kind, row, report);
    Ok((figures, p50))
}

/// Row proxy-big: full downloads of the 1 GiB file through the proxy, and peak RSS.
pub(super) fn proxy_big(
    cfg: &Config,
    site: &Site,
    kind: Kind,
    origin_port: u16,
    report: &mut Report,
) -> BoxResult<()> {
    let mut server = Server::start_proxy(cfg, site, kind, false, origin_port)?;
    for problem in sanity_check(server.port, true) {
        report.note(kind, format!("proxy-big: {problem}"));
    }
    let label = server.label.clone();
    eprintln!(
        "bench: {label}: proxy-big, full downloads, {BIG_CONNS} connections, {} s \
         (or until one is whole)",
        cfg.secs
    );
    let d = download_for(server.port, BIG_CONNS, cfg.secs, true);
    eprintln!(
        "bench: {label}:   {:.0} MiB/s, {} complete downloads, errors: {}",
        d.mib_per_sec,
        d.full,
        d.errors_cell()
    );
    if d.full == 0 {
        report.note(
            kind,
            format!("proxy-big: no download was whole within {PROXY_BIG_LIMIT:?}"),
        );
    }
    let figures = report.figures_mut(kind);
    figures.proxy_big = Some(d);
    figures.proxy_big_rss = server.front_peak_rss_mib();
    figures.proxy_big_rss_others = server.other_ranks_peak_rss_mib();
    finish_proxy_row(&mut server, kind, Row::ProxyBig, report);
    Ok(())
}

/// CPU used by a server's processes while it has nothing to do.
#[derive(Clone, Debug, Default)]
pub(super) struct IdleFigures {
    /// The server's own processes (nginx's master and worker, mpiweb's ranks), percent of one core.
    pub(super) percent: f64,
    /// Clock ticks each of them used in the window, by pid.
    pub(super) per_process: Vec<u64>,
    /// Everything else under the launched process (mpirun, hydra_pmi_proxy), percent of one core.
    pub(super) launcher_percent: f64,
    /// Processes that exited during the window (their last ticks are lost).
    pub(super) vanished: usize,
    /// A proxied request right after the window, on a keep-alive
    /// connection opened before it (ms): what a quiet spell costs the
    /// next request.
    pub(super) first_after_ms: Option<f64>,
}

/// Counts the CPU ticks of the server's process tree over IDLE_WINDOW.
///
/// The server's own processes are those with the command name of its main
/// process (rank 0 for mpiweb): the ranks under mpirun, or nginx's master and
/// worker. The rest of the tree is the MPI launcher, reported apart.
pub(super) fn measure_idle(server: &Server) -> IdleFigures {
    // Let the tail of startup (and of the readiness probe) pass first.
    thread::sleep(IDLE_SETTLE);
    let root = server.child.id();
    let main_pid = server.rank0_pid.unwrap_or(root);
    let comm = proc_stat(main_pid).map(|s| s.comm).unwrap_or_default();
    let mut tree: Vec<ProcId> = descendants(root);
    tree.push((root, proc_stat(root).map_or(0, |s| s.start)));
    tree.sort_unstable();
    let before: Vec<(ProcId, Stat)> = tree
        .into_iter()
        .filter_map(|(pid, start)| Some(((pid, start), proc_stat(pid)?)))
        .filter(|(id, stat)| stat.start == id.1)
        .collect();
    let started = Instant::now();
    thread::sleep(IDLE_WINDOW);
    let secs = started.elapsed().as_secs_f64();
    let hz = clock_ticks_per_sec() as f64;
    let mut figures = IdleFigures::default();
    let (mut own, mut launcher) = (0u64, 0u64);
    for ((pid, start), then) in &before {
        let Some(now) = proc_stat(*pid).filter(|s| s.start == *start) else {
            figures.vanished += 1;
            continue;
        };
        let used = now.cpu_ticks.saturating_sub(then.cpu_ticks);
        if then.comm == comm {
            own += used;
            figures.per_process.push(used);
        } else {
            launcher += used;
        }
    }
    let percent = |ticks: u64| ticks as f64 / (secs * hz) * 100.0;
    figures.percent = percent(own);
    figures.launcher_percent = percent(launcher);
    figures
}
