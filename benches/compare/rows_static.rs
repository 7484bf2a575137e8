//! Rows 1-3: the small file, the 1 GiB file, and 10,000 connections held open.

use super::*;

pub(super) fn measure_rows12(
    cfg: &Config,
    site: &Site,
    kind: Kind,
    report: &mut Report,
) -> BoxResult<Figures> {
    let mut server = Server::start(cfg, site, kind)?;
    for problem in sanity_check(server.port, true) {
        report.note(kind, problem);
    }
    let name = kind.name();
    let secs = cfg.secs;
    let mut figures = Figures::default();

    eprintln!("bench: {name}: row 1, wrk, {SMALL_CONNS} connections, {secs} s");
    match run_wrk(cfg, server.port, "/small.html", SMALL_CONNS, 5) {
        Ok(w) => {
            eprintln!(
                "bench: {name}:   {:.0} req/s, errors: {}",
                w.req_per_sec,
                w.errors_cell()
            );
            figures.small = Some(w);
        }
        Err(e) => report.note(kind, format!("row 1: {e}")),
    }

    eprintln!("bench: {name}: row 2, full downloads, {BIG_CONNS} connections, {secs} s");
    let d = download_for(server.port, BIG_CONNS, secs, false);
    eprintln!(
        "bench: {name}:   {:.0} MiB/s, {} complete downloads, errors: {}",
        d.mib_per_sec,
        d.full,
        d.errors_cell()
    );
    figures.big = Some(d);

    eprintln!("bench: {name}: row 2, wrk, {BIG_CONNS} connections, {secs} s");
    // A 1 GiB response takes seconds per connection: a short timeout would count it as an error.
    match run_wrk(cfg, server.port, "/big.bin", BIG_CONNS, secs.max(30) * 2) {
        Ok(w) => {
            eprintln!(
                "bench: {name}:   {:.0} MiB/s, errors: {}",
                w.mib_per_sec,
                w.errors_cell()
            );
            figures.big_wrk = Some(w);
        }
        Err(e) => report.note(kind, format!("row 2 (wrk): {e}")),
    }

    figures.rss_rows12 = server.peak_rss_mib();
    eprintln!("bench: stopping {name}");
    server.stop();
    Ok(figures)
}

pub(super) fn measure_row3(
    cfg: &Config,
    site: &Site,
    kind: Kind,
    report: &mut Report,
) -> BoxResult<()> {
    let mut server = Server::start(cfg, site, kind)?;
    let name = kind.name();
    eprintln!("bench: {name}: row 3, {MANY_CONNS} connections at once");
    let many = many_connections(server.port);
    eprintln!(
        "bench: {name}:   answered {}/{MANY_CONNS} in {:.1} s",
        many.ok, many.answer_secs
    );
    let failures = many.failures();
    if !failures.is_empty() {
        report.note(kind, format!("row 3: {}", failures.join(", ")));
    }
    let figures = report.figures_mut(kind);
    figures.many = Some(many);
    figures.rss_row3 = server.peak_rss_mib();
    eprintln!("bench: stopping {name}");
    server.stop();
    Ok(())
}
