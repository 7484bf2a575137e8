//! The report: each server's figures, the comparison table (its rows, family by
//! family, are in report_rows.rs), its ratios and notes.

use super::*;

/// Everything measured for one server.
#[derive(Clone, Debug, Default)]
pub(super) struct Figures {
    pub(super) small: Option<WrkFigures>,
    pub(super) big: Option<DownloadFigures>,
    pub(super) big_wrk: Option<WrkFigures>,
    pub(super) rss_rows12: Option<f64>,
    pub(super) many: Option<ManyFigures>,
    pub(super) rss_row3: Option<f64>,
    pub(super) proxy_small: Option<WrkFigures>,
    /// mpiweb only: proxy_small's run against mpiweb started without mpirun.
    pub(super) proxy_solo: Option<WrkFigures>,
    /// Median latency at one connection through the proxy, in the lifetime of proxy_small
    /// and of proxy_solo (microseconds).
    pub(super) proxy_small_p50_us: Option<f64>,
    pub(super) proxy_solo_p50_us: Option<f64>,
    pub(super) proxy_big: Option<DownloadFigures>,
    /// Peak RSS during proxy_big: nginx's worker, mpiweb's rank 0.
    pub(super) proxy_big_rss: Option<f64>,
    /// Peak RSS during proxy_big of mpiweb's other ranks.
    pub(super) proxy_big_rss_others: Vec<f64>,
    pub(super) idle: Option<IdleFigures>,
    /// The small file through the pool of three origins.
    pub(super) pool: Option<WrkFigures>,
    pub(super) failover: Option<FailoverFigures>,
    /// The store rows: PUT, then GET, of 4 KiB documents, wrk at STORE_CONNS connections,
    /// and at one (with the median latency).
    pub(super) store_put: Option<WrkFigures>,
    pub(super) store_put_one: Option<WrkFigures>,
    pub(super) store_get: Option<WrkFigures>,
    pub(super) store_get_one: Option<WrkFigures>,
    /// GETs with rank 0's cache off, every one served by a replica.
    pub(super) store_get_replica: Option<WrkFigures>,
    /// Document files on disk after the store rows, every copy counted.
    pub(super) store_files: Option<String>,
}

#[derive(Default)]
pub(super) struct Report {
    pub(super) nginx: Figures,
    pub(super) mpiweb: Figures,
    /// Median latency at one connection straight to the origin nginx (microseconds).
    pub(super) origin_p50_us: Option<f64>,
    /// The across-host rows (mpiweb only), when they ran.
    pub(super) hosts: Option<HostsFigures>,
    pub(super) notes: Vec<String>,
}

impl Report {
    pub(super) fn figures(&self, kind: Kind) -> &Figures {
        match kind {
            Kind::Nginx => &self.nginx,
            Kind::Mpiweb => &self.mpiweb,
        }
    }

    pub(super) fn figures_mut(&mut self, kind: Kind) -> &mut Figures {
        match kind {
            Kind::Nginx => &mut self.nginx,
            Kind::Mpiweb => &mut self.mpiweb,
        }
    }

    pub(super) fn note(&mut self, kind: Kind, text: String) {
        eprintln!("bench: {}: {text}", kind.name());
        self.notes.push(format!("{}: {text}", kind.name()));
    }

    /// The rows of the table, for the rows that ran.
    pub(super) fn rows(&self, cfg: &Config) -> Vec<[String; 5]> {
        let mut rows = Vec::new();
        if cfg.runs(Row::Static) {
            rows.extend(self.static_rows());
        }
        if cfg.runs(Row::Many) {
            rows.extend(self.many_rows());
        }
        if cfg.runs(Row::ProxySmall) || cfg.runs(Row::ProxySolo) {
            rows.extend(self.proxy_small_rows(cfg));
        }
        if cfg.runs(Row::ProxyBig) {
            rows.extend(self.proxy_big_rows());
        }
        if cfg.runs(Row::ProxyIdle) {
            rows.extend(self.proxy_idle_rows());
        }
        if cfg.runs(Row::Pool) {
            rows.extend(self.pool_rows());
        }
        if cfg.runs(Row::Store) {
            rows.extend(self.store_rows());
        }
        if cfg.runs(Row::Hosts) {
            rows.extend(self.hosts_rows());
        }
        rows
    }

    pub(super) fn print(&self, cfg: &Config) {
        let store_only = cfg.rows.iter().all(|&r| r == Row::Store);
        let mut launch = match (cfg.only, cfg.solo) {
            (Some(Kind::Nginx), _) => "nginx only (BENCH_ONLY=nginx)".to_string(),
            (_, _) if store_only => format!("mpiweb under mpirun -np {STORE_RANKS}"),
            (_, true) => "mpiweb alone (MPIWEB_BENCH_SOLO=1)".to_string(),
            (_, false) => format!("mpiweb under mpirun -np {RANKS}"),
        };
        if cfg.runs(Row::Store) && !store_only && cfg.wants(Kind::Mpiweb) {
            launch.push_str(&format!(" (store rows: mpirun -np {STORE_RANKS})"));
        }
        println!();
        println!(
            "mpiweb vs nginx on 127.0.0.1: {} s per run, {launch}, {} CPUs",
            cfg.secs,
            thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!();
        print_table(&self.rows(cfg));
        for kind in [Kind::Nginx, Kind::Mpiweb] {
            if let Some(many) = &self.figures(kind).many {
                println!("{}: answered {}/{MANY_CONNS}", kind.name(), many.ok);
            }
        }
        self.print_verdicts(cfg);
        if !self.notes.is_empty() {
            println!();
            println!("notes:");
            for note in &self.notes {
                println!("- {note}");
            }
        }
    }

    /// One line per target of rows 1-3: met, missed, or not measured.
    pub(super) fn print_verdicts(&self, cfg: &Config) {
        if !cfg.runs(Row::Static) && !cfg.runs(Row::Many) {
            return;
        }
        let small = ratio(
            self.nginx.small.as_ref().map(|w| w.req_per_sec),
            self.mpiweb.small.as_ref().map(|w| w.req_per_sec),
        );
        let big = ratio(
            self.nginx.big.as_ref().map(|w| w.mib_per_sec),
            self.mpiweb.big.as_ref().map(|w| w.mib_per_sec),
        );
        println!();
        for (what, r, target) in [
            ("small file req/s", small, 1.0),
            ("1 GiB full downloads MiB/s", big, 0.9),
        ]
        .into_iter()
        .filter(|_| cfg.runs(Row::Static))
        {
            match r {
                Some(r) if r >= target => println!("target met: {what} ratio {r:.2} >= {target}"),
                Some(r) => println!("target MISSED: {what} ratio {r:.2} < {target}"),
                None => println!("target not measured: {what}"),
            }
        }
        if let Some(many) = &self.mpiweb.many {
            let verdict = if many.ok == MANY_CONNS {
                "met"
            } else {
                "MISSED"
            };
            println!(
                "target {verdict}: mpiweb answered {}/{MANY_CONNS} at once",
                many.ok
            );
        }
    }
}

/// mpiweb / nginx, when both are there and nginx's is not zero.
pub(super) fn ratio(nginx: Option<f64>, mpiweb: Option<f64>) -> Option<f64> {
    match (nginx, mpiweb) {
        (Some(n), Some(m)) if n > 0.0 => Some(m / n),
        _ => None,
    }
}

pub(super) fn number_row(
    label: String,
    nginx: Option<f64>,
    mpiweb: Option<f64>,
    decimals: usize,
    target: &str,
) -> [String; 5] {
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"));
    let r = ratio(nginx, mpiweb).map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
    [label, cell(nginx), cell(mpiweb), r, target.to_string()]
}

pub(super) fn text_row(
    label: &str,
    nginx: Option<String>,
    mpiweb: Option<String>,
    target: &str,
) -> [String; 5] {
    let dash = || "-".to_string();
    [
        label.to_string(),
        nginx.unwrap_or_else(dash),
        mpiweb.unwrap_or_else(dash),
        String::new(),
        target.to_string(),
    ]
}

/// Prints rows as a markdown table with padded columns.
pub(super) fn print_table(rows: &[[String; 5]]) {
    let header = ["row", "nginx", "mpiweb", "ratio", "target"].map(String::from);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |row: &[String; 5]| {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        println!("| {} |", cells.join(" | "));
    };
    line(&header);
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    println!("|-{}-|", rule.join("-|-"));
    for row in rows {
        line(row);
    }
}
