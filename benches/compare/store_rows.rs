//! The store rows: PUT and GET of 4 KiB documents against nginx's WebDAV.

use super::*;

/// The store rows' nginx keeps its documents under this root (STORE_PREFIX is a directory in it).
pub(super) fn store_nginx_root(site: &Site) -> PathBuf {
    NginxRole::Store.dir(site).join("root")
}

/// mpiweb's `--data` in the store rows: each worker rank keeps its replica in `rank-N/` under it.
pub(super) fn store_mpiweb_data(site: &Site) -> PathBuf {
    site.tmp().join("data")
}

/// Exactly STORE_DOC_SIZE bytes: lines of 63 letters.
pub(super) fn store_body() -> Vec<u8> {
    (0..STORE_DOC_SIZE)
        .map(|i| match i % 64 {
            63 => b'\n',
            k => b'a' + (k % 26) as u8,
        })
        .collect()
}

/// The path of the store rows' document `n` (0 to STORE_DOCS - 1).
pub(super) fn store_doc_path(n: usize) -> String {
    format!("{STORE_PREFIX}doc-{n}")
}

/// A wrk script that sends `method` to the STORE_DOCS document paths in turn, from the
/// first (a counter per wrk thread), with the bytes of the file `body` when given.
/// The requests are formatted once, in `init`, so that wrk spends little time in Lua.
pub(super) fn store_script(method: &str, body: Option<&Path>) -> String {
    let body = match body {
        Some(path) => format!(
            "local f = assert(io.open([==[{}]==], \"rb\"))\n\
             local body = f:read(\"*a\")\n\
             f:close()\n",
            path.display()
        ),
        None => "local body = nil\n".to_string(),
    };
    let first = store_doc_path(0);
    let last = store_doc_path(STORE_DOCS - 1);
    format!(
        "-- mpiweb bench, store rows: {method} {first} to {last} in turn.\n\
         {body}\
         local docs = {STORE_DOCS}\n\
         local requests = {{}}\n\
         local n = 0\n\
         \n\
         function init(args)\n\
         \x20 for i = 1, docs do\n\
         \x20   local headers = {{}}\n\
         \x20   if body then headers[\"Content-Type\"] = \"application/octet-stream\" end\n\
         \x20   requests[i] = wrk.format(\"{method}\", \"{STORE_PREFIX}doc-\" .. (i - 1), headers, body)\n\
         \x20 end\n\
         end\n\
         \n\
         function request()\n\
         \x20 n = n % docs + 1\n\
         \x20 return requests[n]\n\
         end\n"
    )
}

/// The store rows' wrk scripts, written to the temp dir with the body the PUTs send.
pub(super) struct StoreScripts {
    put: String,
    get: String,
}

impl StoreScripts {
    fn write(site: &Site, body: &[u8]) -> BoxResult<StoreScripts> {
        let dir = site.tmp();
        let body_path = dir.join("store-body.bin");
        fs::write(&body_path, body)?;
        let mut paths = Vec::new();
        for (method, body) in [("PUT", Some(body_path.as_path())), ("GET", None)] {
            let path = dir.join(format!("store-{}.lua", method.to_ascii_lowercase()));
            fs::write(&path, store_script(method, body))?;
            let path = path
                .to_str()
                .ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
            paths.push(path.to_string());
        }
        let get = paths.pop().unwrap_or_default();
        let put = paths.pop().unwrap_or_default();
        Ok(StoreScripts { put, get })
    }
}

/// Checks one document's round trip before measuring: a PUT of `body` (201 or 204), then a
/// GET that must give back the same bytes (and the PUT's ETag, when both have one). A store
/// still starting (503, or no answer yet) is waited for, up to STORE_READY_TIMEOUT.
/// Returns what is wrong, if anything.
pub(super) fn store_sanity_check(port: u16, body: &[u8]) -> Vec<String> {
    let path = format!("{STORE_PREFIX}bench-check");
    let deadline = Instant::now() + STORE_READY_TIMEOUT;
    let put = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let put = http_request(
            port,
            "PUT",
            &path,
            Some(body),
            left.max(Duration::from_secs(1)),
        );
        let starting = match &put {
            Ok(r) => r.status == 503,
            Err(_) => true,
        };
        if !starting || Instant::now() >= deadline {
            break put;
        }
        thread::sleep(Duration::from_millis(200));
    };
    let put = match put {
        Ok(r) if matches!(r.status, 201 | 204) => r,
        Ok(r) => {
            return vec![format!(
                "PUT {path} gave status {} (expected 201 or 204)",
                r.status
            )]
        }
        Err(e) => return vec![format!("PUT {path} failed: {e}")],
    };
    let get = match http_request(port, "GET", &path, None, Duration::from_secs(10)) {
        Ok(r) => r,
        Err(e) => return vec![format!("GET {path} after its PUT failed: {e}")],
    };
    let mut problems = Vec::new();
    if get.status != 200 {
        problems.push(format!(
            "GET {path} after its PUT gave status {}",
            get.status
        ));
    } else if get.body != body {
        problems.push(format!(
            "GET {path} gave back {} bytes that differ from the {} PUT",
            get.body.len(),
            body.len()
        ));
    }
    if let (Some(a), Some(b)) = (put.header("etag"), get.header("etag")) {
        if a != b {
            problems.push(format!("PUT {path} gave ETag {a}, its GET {b}"));
        }
    }
    problems
}

/// Writes the STORE_DOCS documents one at a time, within STORE_PREFILL_LIMIT: how many were
/// stored, and the first failure (which ends it).
pub(super) fn store_prefill(port: u16, body: &[u8]) -> (usize, Option<String>) {
    let deadline = Instant::now() + STORE_PREFILL_LIMIT;
    for n in 0..STORE_DOCS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (n, Some(format!("out of time ({STORE_PREFILL_LIMIT:?})")));
        }
        let path = store_doc_path(n);
        let timeout = left.min(Duration::from_secs(10));
        match http_request(port, "PUT", &path, Some(body), timeout) {
            Ok(r) if matches!(r.status, 201 | 204) => {}
            Ok(r) => return (n, Some(format!("PUT {path} gave status {}", r.status))),
            Err(e) => return (n, Some(format!("PUT {path}: {e}"))),
        }
    }
    (STORE_DOCS, None)
}

/// Regular files below `dir` (all depths) whose name ends with `suffix`; None when unreadable.
pub(super) fn count_files(dir: &Path, suffix: &str) -> Option<usize> {
    let mut count = 0;
    for entry in fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let kind = entry.file_type().ok()?;
        if kind.is_dir() {
            count += count_files(&entry.path(), suffix)?;
        } else if kind.is_file() && entry.file_name().to_string_lossy().ends_with(suffix) {
            count += 1;
        }
    }
    Some(count)
}

/// Document files on disk after the store rows, every copy counted: nginx's files under its
/// root; mpiweb's `*.doc` files under `rank-N/docs/`, with the count of each rank.
pub(super) fn store_files_on_disk(site: &Site, kind: Kind) -> Option<String> {
    match kind {
        Kind::Nginx => count_files(&store_nginx_root(site), "").map(|n| n.to_string()),
        Kind::Mpiweb => {
            let mut ranks: Vec<(String, usize)> = fs::read_dir(store_mpiweb_data(site))
                .ok()?
                .filter_map(|e| {
                    let e = e.ok()?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !name.starts_with("rank-") {
                        return None;
                    }
                    let docs = count_files(&e.path().join("docs"), ".doc").unwrap_or(0);
                    Some((name, docs))
                })
                .collect();
            ranks.sort();
            let total: usize = ranks.iter().map(|(_, n)| n).sum();
            let each: Vec<String> = ranks.iter().map(|(r, n)| format!("{r} {n}")).collect();
            Some(format!("{total} ({})", each.join(", ")))
        }
    }
}

/// The file system type of the mount holding `path`, from the text of /proc/mounts: the
/// longest mount point that contains it (the last listed, when mounts are stacked).
pub(super) fn mount_fs_type(mounts: &str, path: &Path) -> Option<String> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let point = Path::new(fields.nth(1)?);
            let fs_type = fields.next()?;
            path.starts_with(point)
                .then_some((point.as_os_str().len(), fs_type))
        })
        .max_by_key(|&(len, _)| len)
        .map(|(_, fs_type)| fs_type.to_string())
}

/// What the store figures are to be read with: who replicates and who fsyncs, and where.
pub(super) fn store_note(site: &Site) -> String {
    let dir = fs::canonicalize(site.tmp()).unwrap_or_else(|_| site.tmp().to_path_buf());
    let fs_type = fs::read_to_string("/proc/mounts")
        .ok()
        .and_then(|m| mount_fs_type(&m, &dir))
        .unwrap_or_else(|| "an unknown file system".to_string());
    let workers = STORE_RANKS.parse::<u32>().map_or(0, |n| n - 1);
    format!(
        "store: nginx (WebDAV PUT) neither replicates nor fsyncs: one copy, written to a \
         temp file and renamed; mpiweb (mpirun -np {STORE_RANKS}, {workers} worker ranks, \
         --replicas {STORE_REPLICAS}) answers a PUT once {STORE_REPLICAS} ranks have each \
         written it to a temp file, fsync'd and renamed it. Both write to {fs_type} under {}.",
        dir.display()
    )
}

/// Writes the scripts, then measures each server in turn, each in a fresh start.
/// Fails only when the scripts cannot be written.
pub(super) fn measure_store_rows(
    cfg: &Config,
    site: &Site,
    report: &mut Report,
    failed: &mut Vec<Kind>,
) -> BoxResult<()> {
    let body = store_body();
    let scripts = StoreScripts::write(site, &body)?;
    report.notes.push(store_note(site));
    for kind in cfg.kinds() {
        if failed.contains(&kind) {
            continue;
        }
        if let Err(e) = measure_store_kind(cfg, site, kind, &scripts, &body, report) {
            report.note(kind, format!("store: failed to start: {e}"));
            failed.push(kind);
        }
    }
    Ok(())
}

/// The store rows of one server: round trip check, pre-fill, then PUT and GET with wrk.
pub(super) fn measure_store_kind(
    cfg: &Config,
    site: &Site,
    kind: Kind,
    scripts: &StoreScripts,
    body: &[u8],
    report: &mut Report,
) -> BoxResult<()> {
    let mut server = Server::start_store(cfg, site, kind)?;
    let (label, port) = (server.label.clone(), server.port);
    eprintln!("bench: {label}: store, PUT then GET of one document");
    for problem in store_sanity_check(port, body) {
        report.note(kind, format!("store: {problem}"));
    }
    eprintln!("bench: {label}: store, pre-fill: {STORE_DOCS} documents, one PUT at a time");
    let started = Instant::now();
    let (stored, failure) = store_prefill(port, body);
    eprintln!(
        "bench: {label}:   {stored} stored in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    if let Some(failure) = failure {
        report.note(
            kind,
            format!("store pre-fill: {failure} ({stored}/{STORE_DOCS} stored)"),
        );
    }
    let (put, put_one) = store_wrk(cfg, &label, port, "PUT", &scripts.put, kind, report);
    let (get, get_one) = store_wrk(cfg, &label, port, "GET", &scripts.get, kind, report);
    let files = store_files_on_disk(site, kind);
    eprintln!(
        "bench: {label}:   document files on disk: {}",
        files.as_deref().unwrap_or("unknown")
    );
    let figures = report.figures_mut(kind);
    figures.store_put = put;
    figures.store_put_one = put_one;
    figures.store_get = get;
    figures.store_get_one = get_one;
    figures.store_files = files;
    finish_run(&mut server, kind, "store", report);
    if kind == Kind::Mpiweb {
        store_replica_reads(cfg, site, scripts, body, report)?;
    }
    Ok(())
}

/// mpiweb again on the same documents with rank 0's cache off: every GET
/// is served by a replica, the hop's cost for documents above the cache's
/// bound.
fn store_replica_reads(
    cfg: &Config,
    site: &Site,
    scripts: &StoreScripts,
    body: &[u8],
    report: &mut Report,
) -> BoxResult<()> {
    let launch = MpiwebLaunch {
        solo: false,
        route: None,
        store: Some(store_mpiweb_data(site)),
        store_cache_off: true,
    };
    let mut server = start_mpiweb(cfg, site, &launch)?;
    let (label, port) = (format!("{} (cache off)", server.label), server.port);
    for problem in store_sanity_check(port, body) {
        report.note(Kind::Mpiweb, format!("store, cache off: {problem}"));
    }
    let kind = Kind::Mpiweb;
    let (get, _) = store_wrk(cfg, &label, port, "GET", &scripts.get, kind, report);
    report.figures_mut(kind).store_get_replica = get;
    finish_run(&mut server, kind, "store (cache off)", report);
    Ok(())
}

/// One method's wrk runs with its script: STORE_CONNS connections for req/s, then one
/// connection for the median latency.
pub(super) fn store_wrk(
    cfg: &Config,
    label: &str,
    port: u16,
    method: &str,
    script: &str,
    kind: Kind,
    report: &mut Report,
) -> (Option<WrkFigures>, Option<WrkFigures>) {
    // The script sets every request's path: the URL's is not used.
    let path = store_doc_path(0);
    let extra = ["-s", script];
    let secs = cfg.secs;
    eprintln!("bench: {label}: store {method}, wrk, {STORE_CONNS} connections, {secs} s");
    let many = match run_wrk_with(cfg, port, &path, STORE_CONNS, 5, &extra) {
        Ok(w) => {
            eprintln!(
                "bench: {label}:   {:.0} req/s, {:.1} MiB/s read, errors: {}",
                w.req_per_sec,
                w.mib_per_sec,
                w.errors_cell()
            );
            Some(w)
        }
        Err(e) => {
            report.note(kind, format!("store {method}: {e}"));
            None
        }
    };
    eprintln!("bench: {label}: store {method}, wrk --latency, 1 connection, {secs} s");
    let one = match run_wrk_one_conn_with(cfg, port, &path, &extra) {
        Ok(w) => {
            say_one_conn(label, &w);
            Some(w)
        }
        Err(e) => {
            report.note(kind, format!("store {method}, 1 connection: {e}"));
            None
        }
    };
    (many, one)
}
