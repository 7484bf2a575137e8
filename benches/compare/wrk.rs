//! wrk: running it (bounded in time; costed: with the server's CPU time and
//! `perf stat`'s context switches) and reading its output.

use super::*;

/// What one wrk run reported.
#[derive(Clone, Debug, Default)]
pub(super) struct WrkFigures {
    pub(super) req_per_sec: f64,
    pub(super) mib_per_sec: f64,
    /// "Non-2xx or 3xx responses" and the nonzero "Socket errors", e.g. "non-2xx 3, read 2".
    pub(super) errors: Vec<String>,
    /// The same as one number: non-2xx responses plus connect, read, write and timeout errors.
    pub(super) error_count: u64,
    /// Median latency in microseconds: the "50%" line of "Latency Distribution" (`--latency`).
    pub(super) p50_us: Option<f64>,
    /// Requests wrk completed ("N requests in ...").
    requests: u64,
    /// CPU time of the server's whole process tree per request, in µs (`run_wrk_costed`).
    pub(super) cpu_us_per_req: Option<f64>,
    /// Context switches of the whole machine per request (`perf stat -a`).
    pub(super) cs_per_req: Option<f64>,
}

impl WrkFigures {
    pub(super) fn errors_cell(&self) -> String {
        if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors.join(", ")
        }
    }
}

pub(super) fn run_wrk(
    cfg: &Config,
    port: u16,
    path: &str,
    conns: u32,
    timeout_secs: u64,
) -> BoxResult<WrkFigures> {
    run_wrk_with(cfg, port, path, conns, timeout_secs, &[])
}

/// Prints what a one-connection run measured, under `label`.
pub(super) fn say_one_conn(label: &str, w: &WrkFigures) {
    eprintln!(
        "bench: {label}:   median {:.0} µs, {:.0} req/s, errors: {}",
        w.p50_us.unwrap_or_default(),
        w.req_per_sec,
        w.errors_cell()
    );
}

/// One connection, one request at a time, for cfg.secs: the figures with the median latency.
pub(super) fn run_wrk_one_conn(cfg: &Config, port: u16, path: &str) -> BoxResult<WrkFigures> {
    run_wrk_one_conn_with(cfg, port, path, &[])
}

/// The same with more arguments for wrk (a Lua script).
pub(super) fn run_wrk_one_conn_with(
    cfg: &Config,
    port: u16,
    path: &str,
    extra: &[&str],
) -> BoxResult<WrkFigures> {
    let mut args = extra.to_vec();
    args.push("--latency");
    let w = run_wrk_with(cfg, port, path, 1, 5, &args)?;
    if w.p50_us.is_none() {
        return Err("wrk --latency printed no median".into());
    }
    Ok(w)
}

pub(super) fn run_wrk_with(
    cfg: &Config,
    port: u16,
    path: &str,
    conns: u32,
    timeout_secs: u64,
    extra: &[&str],
) -> BoxResult<WrkFigures> {
    run_wrk_for(cfg, port, path, conns, cfg.secs, timeout_secs, extra)
}

/// One wrk run of `secs` seconds (BENCH_SECS but for the failover run), bounded in time.
pub(super) fn run_wrk_for(
    cfg: &Config,
    port: u16,
    path: &str,
    conns: u32,
    secs: u64,
    timeout_secs: u64,
    extra: &[&str],
) -> BoxResult<WrkFigures> {
    let url = format!("http://127.0.0.1:{port}{path}");
    run_wrk_cmd(
        Command::new(&cfg.wrk),
        &url,
        conns,
        secs,
        timeout_secs,
        extra,
    )
}

/// `cmd` (wrk, or a command that runs it) with wrk's arguments, bounded in time.
pub(super) fn run_wrk_cmd(
    mut cmd: Command,
    url: &str,
    conns: u32,
    secs: u64,
    timeout_secs: u64,
    extra: &[&str],
) -> BoxResult<WrkFigures> {
    // One wrk thread: on a 2-core machine a second one would take the server's core.
    cmd.arg("-t1")
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg(format!("{timeout_secs}s"))
        .args(extra)
        .arg(url);
    let limit = Duration::from_secs(secs + timeout_secs + 30);
    let (status, out) = run_bounded(&mut cmd, limit)?;
    if !status.success() {
        return Err(format!("wrk failed ({status}): {}", out.trim()).into());
    }
    parse_wrk(&out).ok_or_else(|| format!("cannot read wrk's output:\n{out}").into())
}

/// `run_wrk`, with what each request cost: the CPU time of the server's
/// whole process tree (`root` and below: mpirun, its proxies, every rank;
/// nginx's master and workers), and the context switches of the whole
/// machine (wrk and the origin included) counted by `perf stat -a` around
/// wrk. Both drift less with a noisy machine than req/s does.
pub(super) fn run_wrk_costed(
    cfg: &Config,
    root: u32,
    port: u16,
    path: &str,
    conns: u32,
) -> BoxResult<WrkFigures> {
    let before = tree_ticks(root);
    let counts = env::temp_dir().join(format!("mpiweb-bench-perf-{}.txt", std::process::id()));
    let mut figures = match &cfg.perf {
        Some(perf) => {
            let mut cmd = Command::new(perf);
            cmd.args(["stat", "-e", "context-switches", "-a", "-x", ","])
                .arg("-o")
                .arg(&counts)
                .arg("--")
                .arg(&cfg.wrk)
                .arg("-t1")
                .arg(format!("-c{conns}"))
                .arg(format!("-d{}s", cfg.secs))
                .args(["--timeout", "5s"])
                .arg(format!("http://127.0.0.1:{port}{path}"));
            let (status, out) = run_bounded(&mut cmd, Duration::from_secs(cfg.secs + 35))?;
            if !status.success() {
                return Err(format!("perf stat wrk failed ({status}): {}", out.trim()).into());
            }
            parse_wrk(&out).ok_or_else(|| format!("cannot read wrk's output:\n{out}"))?
        }
        None => run_wrk(cfg, port, path, conns, 5)?,
    };
    let used = tree_ticks(root).saturating_sub(before);
    if figures.requests > 0 {
        let n = figures.requests as f64;
        figures.cpu_us_per_req = Some(used as f64 * 1e6 / clock_ticks_per_sec() as f64 / n);
        figures.cs_per_req = fs::read_to_string(&counts).ok().and_then(|text| {
            let line = text.lines().find(|l| l.contains("context-switches"))?;
            Some(line.split(',').next()?.trim().parse::<f64>().ok()? / n)
        });
    }
    let _ = fs::remove_file(&counts);
    Ok(figures)
}

/// Runs a command to completion, killing it after `limit`; returns stdout and stderr together.
fn run_bounded(cmd: &mut Command, limit: Duration) -> BoxResult<(ExitStatus, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let readers = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        thread::spawn(move || {
            let mut text = Vec::new();
            let _ = r.read_to_end(&mut text);
            text
        })
    })
    .collect::<Vec<_>>();
    if !wait_child(&mut child, limit) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{cmd:?} did not finish within {limit:?}").into());
    }
    let status = child.wait()?;
    let mut out = Vec::new();
    for r in readers {
        out.extend(r.join().unwrap_or_default());
    }
    Ok((status, String::from_utf8_lossy(&out).into_owned()))
}

pub(super) fn parse_wrk(out: &str) -> Option<WrkFigures> {
    let mut figures = WrkFigures::default();
    let (mut have_reqs, mut have_transfer) = (false, false);
    // The "50%" line counts only under "Latency Distribution", which `--latency` adds.
    let mut in_distribution = false;
    for line in out.lines().map(str::trim) {
        if line == "Latency Distribution" {
            in_distribution = true;
        } else if let Some(v) = line.strip_prefix("50%").filter(|_| in_distribution) {
            figures.p50_us = Some(parse_wrk_time_us(v.trim())?);
        } else if let Some(n) = line
            .split_once(" requests in ")
            .and_then(|(n, _)| n.trim().parse::<u64>().ok())
        {
            figures.requests = n;
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            figures.req_per_sec = v.trim().parse().ok()?;
            have_reqs = true;
        } else if let Some(v) = line.strip_prefix("Transfer/sec:") {
            figures.mib_per_sec = parse_wrk_size(v.trim())? / (1024.0 * 1024.0);
            have_transfer = true;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            figures.error_count += v.trim().parse::<u64>().ok()?;
            figures.errors.push(format!("non-2xx {}", v.trim()));
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 12, write 0, timeout 3": keep the nonzero ones.
            for part in v.split(',') {
                let mut words = part.split_whitespace();
                if let (Some(what), Some(n)) = (words.next(), words.next()) {
                    figures.error_count += n.parse::<u64>().ok()?;
                    if n != "0" {
                        figures.errors.push(format!("{what} {n}"));
                    }
                }
            }
        }
    }
    (have_reqs && have_transfer).then_some(figures)
}

/// Microseconds in a wrk time such as "78.00us", "1.02ms", "2.00s", "1.50m" or "1.00h".
pub(super) fn parse_wrk_time_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(number.trim().parse::<f64>().ok()? * scale)
}

/// Bytes in a wrk size such as "1.23GB", "456.78MB", "12.00KB", "512.00B" (wrk's units are binary).
fn parse_wrk_size(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number.trim().parse::<f64>().ok()? * scale)
}
