//! The table's rows, family by family: what each row shows of the figures in the report.

use super::*;

impl Report {
    pub(super) fn static_rows(&self) -> Vec<[String; 5]> {
        let (n, m) = (&self.nginx, &self.mpiweb);
        vec![
            number_row(
                format!("small file {SMALL_SIZE} B, {SMALL_CONNS} conns (req/s)"),
                n.small.as_ref().map(|w| w.req_per_sec),
                m.small.as_ref().map(|w| w.req_per_sec),
                0,
                ">= 1.0",
            ),
            text_row(
                "  wrk errors",
                n.small.as_ref().map(WrkFigures::errors_cell),
                m.small.as_ref().map(WrkFigures::errors_cell),
                "none",
            ),
            number_row(
                format!("1 GiB file, {BIG_CONNS} conns, full downloads (MiB/s)"),
                n.big.as_ref().map(|d| d.mib_per_sec),
                m.big.as_ref().map(|d| d.mib_per_sec),
                0,
                ">= 0.9",
            ),
            text_row(
                "  download errors",
                n.big.as_ref().map(DownloadFigures::errors_cell),
                m.big.as_ref().map(DownloadFigures::errors_cell),
                "none",
            ),
            number_row(
                format!("1 GiB file, {BIG_CONNS} conns, wrk -t1 (MiB/s)"),
                n.big_wrk.as_ref().map(|w| w.mib_per_sec),
                m.big_wrk.as_ref().map(|w| w.mib_per_sec),
                0,
                "(wrk-bound)",
            ),
            text_row(
                "  wrk errors",
                n.big_wrk.as_ref().map(WrkFigures::errors_cell),
                m.big_wrk.as_ref().map(WrkFigures::errors_cell),
                "none",
            ),
            number_row(
                "peak RSS after rows 1-2 (MiB)".into(),
                n.rss_rows12,
                m.rss_rows12,
                1,
                "-",
            ),
        ]
    }

    pub(super) fn many_rows(&self) -> Vec<[String; 5]> {
        let (n, m) = (&self.nginx, &self.mpiweb);
        let many_total = format!("{MANY_CONNS}/{MANY_CONNS}");
        vec![
            number_row(
                format!("{}k conns at once: answered", MANY_CONNS / 1000),
                n.many.as_ref().map(|f| f.ok as f64),
                m.many.as_ref().map(|f| f.ok as f64),
                0,
                &many_total,
            ),
            text_row(
                "  held open at once",
                n.many.as_ref().map(|f| format!("{}/{MANY_CONNS}", f.held)),
                m.many.as_ref().map(|f| format!("{}/{MANY_CONNS}", f.held)),
                &many_total,
            ),
            number_row(
                "  seconds to open them all".into(),
                n.many.as_ref().map(|f| f.connect_secs),
                m.many.as_ref().map(|f| f.connect_secs),
                1,
                "-",
            ),
            number_row(
                "  seconds until all read".into(),
                n.many.as_ref().map(|f| f.answer_secs),
                m.many.as_ref().map(|f| f.answer_secs),
                1,
                "-",
            ),
            number_row("  peak RSS (MiB)".into(), n.rss_row3, m.rss_row3, 1, "-"),
        ]
    }

    /// proxy-small and proxy-solo: both read against nginx's proxy-small figure.
    pub(super) fn proxy_small_rows(&self, cfg: &Config) -> Vec<[String; 5]> {
        let (n, m) = (&self.nginx, &self.mpiweb);
        let nginx_rps = n.proxy_small.as_ref().map(|w| w.req_per_sec);
        let mut rows = vec![
            number_row(
                format!("proxied {SMALL_SIZE} B file, {SMALL_CONNS} conns (req/s)"),
                nginx_rps,
                m.proxy_small.as_ref().map(|w| w.req_per_sec),
                0,
                ">= 0.5",
            ),
            number_row(
                "  CPU per request, whole process tree (µs)".into(),
                n.proxy_small.as_ref().and_then(|w| w.cpu_us_per_req),
                m.proxy_small.as_ref().and_then(|w| w.cpu_us_per_req),
                1,
                "<= 2.0",
            ),
            number_row(
                "  context switches per request, system-wide".into(),
                n.proxy_small.as_ref().and_then(|w| w.cs_per_req),
                m.proxy_small.as_ref().and_then(|w| w.cs_per_req),
                2,
                "mpiweb <= 5",
            ),
            text_row(
                "  wrk errors",
                n.proxy_small.as_ref().map(WrkFigures::errors_cell),
                m.proxy_small.as_ref().map(WrkFigures::errors_cell),
                "none",
            ),
        ];
        if cfg.runs(Row::ProxySolo) {
            rows.push(number_row(
                "  the same, mpiweb alone, no mpirun (req/s)".into(),
                nginx_rps,
                m.proxy_solo.as_ref().map(|w| w.req_per_sec),
                0,
                ">= 0.8",
            ));
            rows.push(number_row(
                "  CPU per request, mpiweb alone (µs)".into(),
                n.proxy_small.as_ref().and_then(|w| w.cpu_us_per_req),
                m.proxy_solo.as_ref().and_then(|w| w.cpu_us_per_req),
                1,
                "-",
            ));
            rows.push(number_row(
                "  context switches per request, mpiweb alone".into(),
                n.proxy_small.as_ref().and_then(|w| w.cs_per_req),
                m.proxy_solo.as_ref().and_then(|w| w.cs_per_req),
                2,
                "-",
            ));
            rows.push(text_row(
                "  wrk errors (mpiweb alone)",
                None,
                m.proxy_solo.as_ref().map(WrkFigures::errors_cell),
                "none",
            ));
        }
        rows.extend(self.proxy_latency_rows(cfg));
        rows
    }

    /// The one-connection medians of proxy-small and proxy-solo, and what the hop adds to
    /// the origin's own median (measured in the same run).
    pub(super) fn proxy_latency_rows(&self, cfg: &Config) -> Vec<[String; 5]> {
        let (n, m) = (&self.nginx, &self.mpiweb);
        let origin = self.origin_p50_us;
        let us = |v: f64| format!("{v:.0}");
        let hop = |v: Option<f64>| Some(us(v? - origin?));
        let solo = cfg.runs(Row::ProxySolo);
        let mut rows = vec![number_row(
            "  median latency, 1 conn (µs)".into(),
            n.proxy_small_p50_us,
            m.proxy_small_p50_us,
            0,
            "-",
        )];
        if solo {
            rows.push(number_row(
                "  the same, mpiweb alone (µs)".into(),
                n.proxy_small_p50_us,
                m.proxy_solo_p50_us,
                0,
                "-",
            ));
        }
        // One origin for both servers: its figure stands in both columns.
        rows.push(text_row(
            "  straight to the origin, 1 conn (µs)",
            origin.map(us),
            origin.map(us),
            "-",
        ));
        rows.push(text_row(
            "  added by the hop over the origin (µs)",
            hop(n.proxy_small_p50_us),
            hop(m.proxy_small_p50_us),
            "< 100",
        ));
        if solo {
            rows.push(text_row(
                "  added by the hop, mpiweb alone (µs)",
                hop(n.proxy_small_p50_us),
                hop(m.proxy_solo_p50_us),
                "< 100",
            ));
        }
        rows
    }

    pub(super) fn proxy_big_rows(&self) -> Vec<[String; 5]> {
        let (n, m) = (&self.nginx, &self.mpiweb);
        let mib = |v: f64| format!("{v:.1}");
        let others = |f: &Figures| {
            (!f.proxy_big_rss_others.is_empty()).then(|| {
                let each: Vec<String> = f.proxy_big_rss_others.iter().map(|&v| mib(v)).collect();
                each.join(" + ")
            })
        };
        vec![
            number_row(
                format!("1 GiB via proxy, {BIG_CONNS} conns, full downloads (MiB/s)"),
                n.proxy_big.as_ref().map(|d| d.mib_per_sec),
                m.proxy_big.as_ref().map(|d| d.mib_per_sec),
                0,
                "-",
            ),
            text_row(
                "  complete downloads",
                n.proxy_big.as_ref().map(|d| d.full.to_string()),
                m.proxy_big.as_ref().map(|d| d.full.to_string()),
                ">= 1",
            ),
            text_row(
                "  download errors",
                n.proxy_big.as_ref().map(DownloadFigures::errors_cell),
                m.proxy_big.as_ref().map(DownloadFigures::errors_cell),
                "none",
            ),
            text_row(
                "  peak RSS, nginx worker / mpiweb rank 0 (MiB)",
                n.proxy_big_rss.map(mib),
                m.proxy_big_rss.map(mib),
                "-",
            ),
            text_row("  peak RSS of the other ranks (MiB)", None, others(m), "-"),
        ]
    }

    pub(super) fn proxy_idle_rows(&self) -> Vec<[String; 5]> {
        let (n, m) = (&self.nginx, &self.mpiweb);
        let secs = IDLE_WINDOW.as_secs();
        let percent = |i: &IdleFigures| {
            let gone = match i.vanished {
                0 => String::new(),
                k => format!(" ({k} exited)"),
            };
            format!("{:.1}%{gone}", i.percent)
        };
        let ticks = |i: &IdleFigures| {
            let each: Vec<String> = i.per_process.iter().map(u64::to_string).collect();
            each.join(" + ")
        };
        vec![
            text_row(
                &format!("idle CPU over {secs} s, server processes (% of a core)"),
                n.idle.as_ref().map(percent),
                m.idle.as_ref().map(percent),
                "~0",
            ),
            text_row(
                "  clock ticks per process, by pid",
                n.idle.as_ref().map(ticks),
                m.idle.as_ref().map(ticks),
                "-",
            ),
            text_row(
                "  launcher: mpirun, hydra (% of a core)",
                None,
                m.idle
                    .as_ref()
                    .map(|i| format!("{:.1}%", i.launcher_percent)),
                "-",
            ),
            text_row(
                "  the next proxied request, keep-alive (ms)",
                n.idle
                    .as_ref()
                    .and_then(|i| i.first_after_ms)
                    .map(|v| format!("{v:.2}")),
                m.idle
                    .as_ref()
                    .and_then(|i| i.first_after_ms)
                    .map(|v| format!("{v:.2}")),
                "mpiweb < 5",
            ),
        ]
    }

    pub(super) fn pool_rows(&self) -> Vec<[String; 5]> {
        let (n, m) = (&self.nginx, &self.mpiweb);
        let rps = |w: Option<&WrkFigures>| w.map(|w| w.req_per_sec);
        fn run(f: &Figures) -> Option<&WrkFigures> {
            f.failover.as_ref()?.wrk.as_ref()
        }
        let errors = |f: &Figures| {
            run(f).map(|w| match w.error_count {
                0 => "0".to_string(),
                k => format!("{k} ({})", w.errors_cell()),
            })
        };
        let back = |f: &Figures| {
            let requests = f.failover.as_ref()?.b_requests?;
            Some(match requests {
                0 => "no, 0".to_string(),
                k => format!("yes, {k}"),
            })
        };
        let first = |f: &Figures| {
            let secs = f.failover.as_ref()?.b_first_after_secs?;
            Some(format!("{secs:.1}"))
        };
        let (kill, restart) = (FAILOVER_KILL_AT.as_secs(), FAILOVER_RESTART_AT.as_secs());
        vec![
            number_row(
                format!("pool of 3, health checks on, {SMALL_CONNS} conns (req/s)"),
                rps(n.pool.as_ref()),
                rps(m.pool.as_ref()),
                0,
                "-",
            ),
            text_row(
                "  wrk errors",
                n.pool.as_ref().map(WrkFigures::errors_cell),
                m.pool.as_ref().map(WrkFigures::errors_cell),
                "none",
            ),
            number_row(
                format!(
                    "  failover run, {} s, {SMALL_CONNS} conns (req/s)",
                    FAILOVER_RUN.as_secs()
                ),
                rps(run(n)),
                rps(run(m)),
                0,
                "-",
            ),
            text_row(
                &format!("  errors, B killed at {kill} s, started at {restart} s"),
                errors(n),
                errors(m),
                "0",
            ),
            text_row(
                "  B back in rotation (requests after restart)",
                back(n),
                back(m),
                "yes",
            ),
            text_row(
                "  B's first request after it answers again (s)",
                first(n),
                first(m),
                "-",
            ),
        ]
    }

    pub(super) fn store_rows(&self) -> Vec<[String; 5]> {
        let (n, m) = (&self.nginx, &self.mpiweb);
        let rps = |w: &Option<WrkFigures>| w.as_ref().map(|w| w.req_per_sec);
        let p50 = |w: &Option<WrkFigures>| w.as_ref().and_then(|w| w.p50_us);
        // The errors of the run at STORE_CONNS connections, then of the run at one.
        let errors = |many: &Option<WrkFigures>, one: &Option<WrkFigures>| {
            let cell = |w: &Option<WrkFigures>| {
                w.as_ref()
                    .map_or_else(|| "-".to_string(), WrkFigures::errors_cell)
            };
            (many.is_some() || one.is_some()).then(|| format!("{} / {}", cell(many), cell(one)))
        };
        let kib = STORE_DOC_SIZE / 1024;
        let mut rows = Vec::new();
        for (method, (n_many, n_one), (m_many, m_one)) in [
            (
                "PUT",
                (&n.store_put, &n.store_put_one),
                (&m.store_put, &m.store_put_one),
            ),
            (
                "GET",
                (&n.store_get, &n.store_get_one),
                (&m.store_get, &m.store_get_one),
            ),
        ] {
            rows.push(number_row(
                format!(
                    "store: {method} {kib} KiB, {STORE_DOCS} docs, {STORE_CONNS} conns (req/s)"
                ),
                rps(n_many),
                rps(m_many),
                0,
                "-",
            ));
            rows.push(number_row(
                format!("  median {method} latency, 1 conn (µs)"),
                p50(n_one),
                p50(m_one),
                0,
                "-",
            ));
            rows.push(text_row(
                &format!("  wrk errors, {STORE_CONNS} conns / 1 conn"),
                errors(n_many, n_one),
                errors(m_many, m_one),
                "none / none",
            ));
        }
        rows.push(number_row(
            format!("store: GET {kib} KiB from a replica, rank 0's cache off (req/s)"),
            rps(&n.store_get),
            rps(&m.store_get_replica),
            0,
            ">= 0.4",
        ));
        rows.push(text_row(
            "  copies per document, on disk",
            Some("1, no fsync".to_string()),
            Some(format!("{STORE_REPLICAS}, each fsync'd")),
            "-",
        ));
        // The pre-fill's documents and the round trip check's one.
        let docs = STORE_DOCS + 1;
        rows.push(text_row(
            "  document files after the runs",
            n.store_files.clone(),
            m.store_files.clone(),
            &format!("{docs} / {}", docs * STORE_REPLICAS as usize),
        ));
        rows
    }

    /// The across-host figures beside the one-host ones, as "across / one host"
    /// in the mpiweb column (the one-host small answers are proxy-small's).
    pub(super) fn hosts_rows(&self) -> Vec<[String; 5]> {
        let (h, m) = (self.hosts.clone().unwrap_or_default(), &self.mpiweb);
        let pair = |across: Option<String>, one: Option<String>| {
            let dash = || "-".to_string();
            (across.is_some() || one.is_some()).then(|| {
                format!(
                    "{} / {}",
                    across.unwrap_or_else(dash),
                    one.unwrap_or_else(dash)
                )
            })
        };
        let rps = |w: &Option<WrkFigures>| w.as_ref().map(|w| format!("{:.0}", w.req_per_sec));
        let errors = |w: &Option<WrkFigures>| w.as_ref().map(WrkFigures::errors_cell);
        let p50 = |v: Option<f64>| v.map(|v| format!("{v:.0}"));
        let big = |d: &Option<DownloadFigures>| {
            d.as_ref()
                .map(|d| format!("{:.0} ({} whole)", d.mib_per_sec, d.full))
        };
        let kill = |p: &Placement| {
            let k = p.kill.as_ref()?;
            Some(format!("{:.1} ({} failed)", k.ms, k.failed))
        };
        let after = |p: &Placement| {
            let k = p.kill.as_ref()?;
            Some(format!("{:.1} ({} failed)", k.after_max_ms, k.after_failed))
        };
        let stop =
            |s: &Option<StopFigures>| s.as_ref().map(|s| format!("{:.2}, {}", s.secs, s.how));
        vec![
            text_row(
                &format!(
                    "across hosts / one host: proxied {SMALL_SIZE} B, {SMALL_CONNS} conns (req/s)"
                ),
                None,
                pair(rps(&h.small), rps(&m.proxy_small)),
                "-",
            ),
            text_row(
                "  wrk errors",
                None,
                pair(errors(&h.small), errors(&m.proxy_small)),
                "none / none",
            ),
            text_row(
                "  median latency, 1 conn (µs)",
                None,
                pair(
                    p50(h.one_conn.as_ref().and_then(|w| w.p50_us)),
                    p50(m.proxy_small_p50_us),
                ),
                "-",
            ),
            text_row(
                &format!("  1 GiB via proxy, {BIG_CONNS} conns, full downloads (MiB/s)"),
                None,
                pair(big(&h.big), big(&m.proxy_big)),
                "-",
            ),
            text_row(
                "  kill -9 of rank 1 to the next 200 (ms, polls failed)",
                None,
                pair(kill(&h.across), kill(&h.one_host)),
                "-",
            ),
            text_row(
                &format!("  the {AFTER_KILL_GETS} GETs after it: slowest (ms, failed)"),
                None,
                pair(after(&h.across), after(&h.one_host)),
                "-",
            ),
            text_row(
                "  stop: SIGTERM to mpirun until it exits (s)",
                None,
                pair(stop(&h.across.stop), stop(&h.one_host.stop)),
                "< 5",
            ),
            text_row(
                "  stop after rank 1 was killed (s)",
                None,
                pair(
                    stop(&h.across.stop_after_kill),
                    stop(&h.one_host.stop_after_kill),
                ),
                "< 5",
            ),
        ]
    }
}
