//! The across-host rows (`hosts`): mpiweb with rank 0 in network namespace A
//! and its two workers in B, set up as tests/hosts.rs does (netns.rs: a veth
//! between 10.77.0.1 and 10.77.0.2, `mpirun` with hydra's rsh launcher, MPI
//! over TCP), each figure beside the same on one host.
//!
//! Across hosts, the origin is a small std server in B that answers every
//! request with the 512-byte file; one host, the origin nginx of the proxy
//! rows on loopback. (1) The proxied small answer, wrk run in A, 50
//! connections, req/s, beside proxy-small's mpiweb figure when that row ran;
//! (2) wrk at one connection, the median latency, beside proxy-small's;
//! (2b) full downloads of 1 GiB (zeros from a second origin in B) through
//! the proxy from A, MiB/s, beside proxy-big's; (3)
//! `kill -9` of worker rank 1, then short GETs until the first 200 (served by
//! the other worker), ms, across hosts and in a job on one host (`mpirun
//! -disable-auto-cleanup -np 3` on loopback); (4) SIGTERM to mpirun until it
//! exits, s, with its status, for a job whose ranks are all up and for the
//! job of (3) after the kill. Every job runs with `--grace 3`. Without root
//! or `ip`, one note says why and the rows show `-`; the namespaces and what
//! runs in them are removed at the end, also on error.

use super::netns::{self, in_netns, Answer, Hosts, Origin, A_ADDR, B_ADDR};
use super::*;

/// `--grace` of every job of these rows.
const HOSTS_GRACE: &str = "3";
/// How long after the kill a proxied answer may take, and one poll's GET.
const KILL_LIMIT: Duration = Duration::from_secs(30);
const KILL_POLL_GET: Duration = Duration::from_secs(2);
/// GETs one at a time after the first 200, half of which the round robin
/// would have given rank 1: the slowest says whether they wait for it.
pub(super) const AFTER_KILL_GETS: usize = 20;

/// What the first proxied answer after `kill -9` of rank 1 took.
#[derive(Clone, Debug)]
pub(super) struct KillFigures {
    pub(super) ms: f64,
    /// Polls before it that failed or got another status.
    pub(super) failed: usize,
    /// The AFTER_KILL_GETS GETs after it: the slowest (ms), and those not a 200.
    pub(super) after_max_ms: f64,
    pub(super) after_failed: usize,
}

/// SIGTERM to mpirun until it exits.
#[derive(Clone, Debug)]
pub(super) struct StopFigures {
    pub(super) secs: f64,
    /// "exit 0", "signal 15", or "killed after 10s".
    pub(super) how: String,
}

/// The figures of one placement: across hosts, or on one host.
#[derive(Clone, Debug, Default)]
pub(super) struct Placement {
    pub(super) kill: Option<KillFigures>,
    pub(super) stop: Option<StopFigures>,
    /// The stop of the job whose rank 1 was killed.
    pub(super) stop_after_kill: Option<StopFigures>,
}

#[derive(Clone, Debug, Default)]
pub(super) struct HostsFigures {
    /// Proxied small answers across hosts: SMALL_CONNS connections, then one.
    pub(super) small: Option<WrkFigures>,
    pub(super) one_conn: Option<WrkFigures>,
    /// Full downloads of 1 GiB through the proxy across hosts.
    pub(super) big: Option<DownloadFigures>,
    pub(super) across: Placement,
    pub(super) one_host: Placement,
}

/// Measures the across-host rows, then the one-host ones; notes, and leaves
/// the rows `-`, when namespaces cannot be made.
pub(super) fn measure_hosts_rows(cfg: &Config, site: &Site, report: &mut Report) -> BoxResult<()> {
    let mut figures = HostsFigures::default();
    let hosts = match Hosts::create("bench-") {
        Ok(h) => Some(h),
        Err(why) => {
            eprintln!("bench: hosts rows: cannot create network namespaces: {why}");
            report.notes.push(format!(
                "hosts rows: across hosts skipped, cannot create network namespaces: {why}"
            ));
            None
        }
    };
    let mut result = Ok(());
    if let Some(hosts) = &hosts {
        result = measure_across(cfg, site, hosts, &mut figures, report);
    }
    // The namespaces go before the one-host runs, and on error.
    drop(hosts);
    let one = measure_one_host(cfg, site, &mut figures.one_host, report);
    report.hosts = Some(figures);
    result.and(one)
}

/// Rows 1-4 across hosts: one job for wrk and the stop, one for the kill.
fn measure_across(
    cfg: &Config,
    site: &Site,
    hosts: &Hosts,
    figures: &mut HostsFigures,
    report: &mut Report,
) -> BoxResult<()> {
    hosts.wait_up()?;
    let origin = Origin::start(&hosts.b, Some(small_html()))?;
    let big_origin = Origin::answering(&hosts.b, Answer::Zeros(BIG_SIZE))?;
    let script = netns::launcher(site.tmp(), hosts)?;
    let route = format!("/=http://{B_ADDR}:{}", origin.port);
    let big_route = format!("/big.bin=http://{B_ADDR}:{}", big_origin.port);
    let start = || -> BoxResult<Server> {
        eprintln!("bench: starting mpiweb across hosts (rank 0 in A, ranks 1-2 in B)");
        let mut cmd = hosts.mpirun(&script, 3);
        cmd.arg(&cfg.mpiweb)
            .args(["-l", &format!("{A_ADDR}:0"), "--grace", HOSTS_GRACE])
            .args(["--route", &route, "--route", &big_route])
            .arg(&site.docroot);
        let (child, output) = spawn_piped(cmd)?;
        let mut server = listening_mpiweb("mpiweb across hosts".into(), child, output)?;
        let addr = SocketAddr::new(A_ADDR.parse()?, server.port);
        if let Err(e) = in_netns(&hosts.a, || server.wait_ready_at(addr))? {
            return Err(
                format!("{e}\nmpiweb output (last lines):\n{}", server.output_tail()).into(),
            );
        }
        Ok(server)
    };

    let mut server = start()?;
    let url = format!("http://{A_ADDR}:{}/small.html", server.port);
    let wrk_in_a = |conns: u32, extra: &[&str]| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &hosts.a]).arg(&cfg.wrk);
        run_wrk_cmd(cmd, &url, conns, cfg.secs, 5, extra)
    };
    eprintln!(
        "bench: across hosts: wrk in A, {SMALL_CONNS} connections, {} s",
        cfg.secs
    );
    match wrk_in_a(SMALL_CONNS, &[]) {
        Ok(w) => figures.small = Some(w),
        Err(e) => report.note(Kind::Mpiweb, format!("hosts, {SMALL_CONNS} conns: {e}")),
    }
    eprintln!("bench: across hosts: wrk --latency in A, 1 connection");
    match wrk_in_a(1, &["--latency"]) {
        Ok(w) => figures.one_conn = Some(w),
        Err(e) => report.note(Kind::Mpiweb, format!("hosts, 1 conn: {e}")),
    }
    eprintln!(
        "bench: across hosts: 1 GiB through the proxy, {BIG_CONNS} connections, {} s \
         (or until one is whole)",
        cfg.secs
    );
    let addr = SocketAddr::new(A_ADDR.parse()?, server.port);
    let big = in_netns(&hosts.a, || download_at(addr, BIG_CONNS, cfg.secs, true))?;
    eprintln!(
        "bench:   {:.0} MiB/s, {} complete downloads, errors: {}",
        big.mib_per_sec,
        big.full,
        big.errors_cell()
    );
    if big.full == 0 {
        report.note(
            Kind::Mpiweb,
            format!("hosts, 1 GiB: no download was whole within {PROXY_BIG_LIMIT:?}"),
        );
    }
    figures.big = Some(big);
    figures.across.stop = timed_stop(&mut server, report);

    let mut server = start()?;
    let addr = SocketAddr::new(A_ADDR.parse()?, server.port);
    let victim = netns::rank_pid(&hosts.pids(&hosts.b), 1).ok_or("no rank 1 in B")?;
    match in_netns(&hosts.a, || kill_and_poll(addr, victim))? {
        Ok(k) => figures.across.kill = Some(k),
        Err(e) => report.note(Kind::Mpiweb, format!("hosts, kill -9: {e}")),
    }
    figures.across.stop_after_kill = timed_stop(&mut server, report);
    drop(origin);
    drop(big_origin);
    Ok(())
}

/// Rows 3-4 on one host, in front of the origin nginx on loopback.
fn measure_one_host(
    cfg: &Config,
    site: &Site,
    figures: &mut Placement,
    report: &mut Report,
) -> BoxResult<()> {
    let mut origin = start_nginx(cfg, site, NginxRole::Origin)?;
    let route = format!("/=http://127.0.0.1:{}", origin.port);
    let start = || -> BoxResult<Server> {
        eprintln!("bench: starting mpiweb on one host (mpirun -disable-auto-cleanup)");
        let mut cmd = Command::new("mpirun");
        cmd.args(["-disable-auto-cleanup", "-np", RANKS])
            .arg(&cfg.mpiweb)
            .args(["-l", "127.0.0.1:0", "--grace", HOSTS_GRACE])
            .args(["--route", &route])
            .arg(&site.docroot);
        let (child, output) = spawn_piped(cmd)?;
        let mut server = listening_mpiweb("mpiweb on one host".into(), child, output)?;
        if let Err(e) = server.wait_ready() {
            return Err(
                format!("{e}\nmpiweb output (last lines):\n{}", server.output_tail()).into(),
            );
        }
        Ok(server)
    };
    let result = one_host_jobs(&start, figures, report);
    origin.stop();
    result
}

/// The one-host jobs: one for the stop, one for the kill and its stop.
fn one_host_jobs(
    start: &dyn Fn() -> BoxResult<Server>,
    figures: &mut Placement,
    report: &mut Report,
) -> BoxResult<()> {
    let mut server = start()?;
    figures.stop = timed_stop(&mut server, report);
    let mut server = start()?;
    let pids: Vec<u32> = descendants(server.child.id())
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let victim = netns::rank_pid(&pids, 1).ok_or("no rank 1 under mpirun")?;
    match kill_and_poll(loopback(server.port), victim) {
        Ok(k) => figures.kill = Some(k),
        Err(e) => report.note(Kind::Mpiweb, format!("hosts, one host, kill -9: {e}")),
    }
    figures.stop_after_kill = timed_stop(&mut server, report);
    Ok(())
}

/// `kill -9` of `victim`, then GETs of the small file at `addr` every few
/// milliseconds until one is a 200.
fn kill_and_poll(addr: SocketAddr, victim: u32) -> BoxResult<KillFigures> {
    eprintln!("bench: kill -9 of rank 1 (pid {victim}), then GETs at {addr}");
    // SAFETY: kill(2) with a pid and a signal number.
    if unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) } != 0 {
        return Err(format!("kill -9 {victim}: {}", io::Error::last_os_error()).into());
    }
    let t0 = Instant::now();
    let mut failed = 0;
    loop {
        match http_get_at(addr, "/small.html", true, KILL_POLL_GET) {
            Ok(r) if r.status == 200 => {
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                let (mut after_max_ms, mut after_failed) = (0f64, 0);
                for _ in 0..AFTER_KILL_GETS {
                    let t = Instant::now();
                    let ok = http_get_at(addr, "/small.html", true, KILL_POLL_GET)
                        .is_ok_and(|r| r.status == 200);
                    after_max_ms = after_max_ms.max(t.elapsed().as_secs_f64() * 1000.0);
                    after_failed += usize::from(!ok);
                }
                eprintln!(
                    "bench:   the first 200 after {ms:.1} ms, {failed} failed before; \
                     the next {AFTER_KILL_GETS}: slowest {after_max_ms:.1} ms, {after_failed} failed"
                );
                return Ok(KillFigures {
                    ms,
                    failed,
                    after_max_ms,
                    after_failed,
                });
            }
            _ => failed += 1,
        }
        if t0.elapsed() >= KILL_LIMIT {
            return Err(format!("no 200 within {KILL_LIMIT:?} ({failed} tries)").into());
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Stops `server` (SIGTERM to mpirun), timed, and notes what it complained about.
fn timed_stop(server: &mut Server, report: &mut Report) -> Option<StopFigures> {
    if let Some(complaints) = server.complaints() {
        report.note(
            Kind::Mpiweb,
            format!("hosts: {} {complaints}", server.label),
        );
    }
    eprintln!("bench: stopping {} (SIGTERM to mpirun)", server.label);
    let (took, status) = server.stop_timed()?;
    let how = match status {
        Some(s) => match s.code() {
            Some(code) => format!("exit {code}"),
            None => format!("{s}"),
        },
        None => format!("killed after {STOP_GRACE:?}"),
    };
    eprintln!("bench:   {:.2} s, {how}", took.as_secs_f64());
    Some(StopFigures {
        secs: took.as_secs_f64(),
        how,
    })
}
