//! A server the harness started, nginx or mpiweb: readiness, peak RSS, what it
//! complained about, and stopping it with everything it spawned.

use super::*;

/// A server we started; stopped (with everything it spawned) when dropped.
pub(super) struct Server {
    pub(super) kind: Kind,
    /// What it is called in messages: "nginx", "origin nginx", "mpiweb proxy", ...
    pub(super) label: String,
    pub(super) child: Child,
    pub(super) port: u16,
    /// mpiweb's rank 0 as it reports itself; nginx's master is `child` itself.
    pub(super) rank0_pid: Option<u32>,
    /// Last bytes of mpiweb's output, for error messages.
    pub(super) output_tail: Option<Arc<Mutex<Vec<u8>>>>,
    /// nginx's error log.
    pub(super) error_log: Option<PathBuf>,
    pub(super) stopped: bool,
}

impl Server {
    /// Starts a server for rows 1-3: serving the docroot.
    pub(super) fn start(cfg: &Config, site: &Site, kind: Kind) -> BoxResult<Server> {
        match kind {
            Kind::Nginx => start_nginx(cfg, site, NginxRole::Static),
            Kind::Mpiweb => start_mpiweb(cfg, site, &MpiwebLaunch::static_files(cfg)),
        }
    }

    /// Starts a server for a proxy row: everything goes to the origin on `origin_port`.
    /// `solo` starts mpiweb without mpirun (MPIWEB_BENCH_SOLO=1 makes every start solo).
    pub(super) fn start_proxy(
        cfg: &Config,
        site: &Site,
        kind: Kind,
        solo: bool,
        origin_port: u16,
    ) -> BoxResult<Server> {
        match kind {
            Kind::Nginx => start_nginx(
                cfg,
                site,
                NginxRole::Proxy {
                    upstream: origin_port,
                },
            ),
            Kind::Mpiweb => {
                let launch = MpiwebLaunch {
                    solo: solo || cfg.solo,
                    route: Some(format!("/=http://127.0.0.1:{origin_port}")),
                    store: None,
                    store_cache_off: false,
                };
                start_mpiweb(cfg, site, &launch)
            }
        }
    }

    /// Starts a server for the pool rows: everything goes to a pool of the origins on `ports`.
    pub(super) fn start_pool(
        cfg: &Config,
        site: &Site,
        kind: Kind,
        ports: [u16; 3],
    ) -> BoxResult<Server> {
        match kind {
            Kind::Nginx => start_nginx(cfg, site, NginxRole::PoolProxy { upstreams: ports }),
            Kind::Mpiweb => {
                let urls: Vec<String> = ports
                    .iter()
                    .map(|p| format!("http://127.0.0.1:{p}"))
                    .collect();
                let launch = MpiwebLaunch {
                    solo: cfg.solo,
                    route: Some(format!(
                        "/ {} health=/small.html interval=1s timeout=1s",
                        urls.join(" ")
                    )),
                    store: None,
                    store_cache_off: false,
                };
                start_mpiweb(cfg, site, &launch)
            }
        }
    }

    /// Starts a server for the store rows, on an empty store: nginx with WebDAV
    /// PUT and DELETE under STORE_PREFIX, mpiweb with `--store` under `mpirun -np 4`.
    pub(super) fn start_store(cfg: &Config, site: &Site, kind: Kind) -> BoxResult<Server> {
        match kind {
            Kind::Nginx => {
                let root = store_nginx_root(site);
                if root.exists() {
                    fs::remove_dir_all(&root)?;
                }
                // Its worker runs as nobody when started as root: it creates the documents.
                let dir = root.join(STORE_PREFIX.trim_matches('/'));
                fs::create_dir_all(&dir)?;
                for (d, mode) in [
                    (NginxRole::Store.dir(site), 0o755),
                    (root, 0o755),
                    (dir, 0o777),
                ] {
                    fs::set_permissions(d, fs::Permissions::from_mode(mode))?;
                }
                start_nginx(cfg, site, NginxRole::Store)
            }
            Kind::Mpiweb => {
                let data = store_mpiweb_data(site);
                if data.exists() {
                    fs::remove_dir_all(&data)?;
                }
                let launch = MpiwebLaunch {
                    solo: false,
                    route: None,
                    store: Some(data),
                    store_cache_off: false,
                };
                start_mpiweb(cfg, site, &launch)
            }
        }
    }

    /// Polls until a GET of the small file is answered, failing if the process exits.
    pub(super) fn wait_ready(&mut self) -> BoxResult<()> {
        self.wait_ready_at(loopback(self.port))
    }

    /// The same at `addr` (a call from another network namespace).
    pub(super) fn wait_ready_at(&mut self, addr: SocketAddr) -> BoxResult<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("{} exited during startup ({status})", self.label).into());
            }
            if http_get_at(addr, "/small.html", true, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not answer at {addr} within {START_TIMEOUT:?}",
                    self.label
                )
                .into());
            }
            thread::sleep(POLL);
        }
    }

    /// Peak RSS in MiB: nginx's master plus its workers, or mpiweb's rank 0.
    pub(super) fn peak_rss_mib(&self) -> Option<f64> {
        let pids = match self.kind {
            Kind::Nginx => {
                let master = self.child.id();
                let mut pids = children_of(master);
                pids.push(master);
                pids
            }
            Kind::Mpiweb => vec![self.rank0_pid.unwrap_or_else(|| self.child.id())],
        };
        let kib: Option<u64> = pids.iter().map(|&p| vm_hwm_kib(p)).sum();
        kib.map(|k| k as f64 / 1024.0)
    }

    /// Peak RSS in MiB of what faces the clients: nginx's worker, or mpiweb's rank 0.
    pub(super) fn front_peak_rss_mib(&self) -> Option<f64> {
        let pids = match self.kind {
            Kind::Nginx => children_of(self.child.id()),
            Kind::Mpiweb => vec![self.rank0_pid.unwrap_or_else(|| self.child.id())],
        };
        let kib: Option<u64> = pids.iter().map(|&p| vm_hwm_kib(p)).sum();
        kib.filter(|_| !pids.is_empty()).map(|k| k as f64 / 1024.0)
    }

    /// Peak RSS in MiB of each mpiweb rank but rank 0 (none for nginx or a world of one).
    pub(super) fn other_ranks_peak_rss_mib(&self) -> Vec<f64> {
        let Some(rank0) = self.rank0_pid.filter(|_| self.kind == Kind::Mpiweb) else {
            return Vec::new();
        };
        let comm = proc_stat(rank0).map(|s| s.comm).unwrap_or_default();
        let mut ranks: Vec<u32> = descendants(self.child.id())
            .into_iter()
            .map(|(pid, _)| pid)
            .filter(|&pid| pid != rank0 && proc_stat(pid).is_some_and(|s| s.comm == comm))
            .collect();
        ranks.sort_unstable();
        ranks
            .into_iter()
            .filter_map(|pid| Some(vm_hwm_kib(pid)? as f64 / 1024.0))
            .collect()
    }

    /// What the server complained about: nginx's error log lines at level error
    /// or worse, mpiweb's warn and error lines (from the last 4 KiB of its output).
    pub(super) fn complaints(&self) -> Option<String> {
        let (text, source) = match &self.error_log {
            Some(path) => (fs::read_to_string(path).unwrap_or_default(), "error.log"),
            None => (self.output_tail(), "output"),
        };
        let marks = ["[error]", "[crit]", "[alert]", "[emerg]", " WARN", " ERROR"];
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| marks.iter().any(|m| l.contains(m)))
            .collect();
        let last = lines.last()?;
        Some(format!(
            "{} complaint line(s) in its {source}, the last: {}",
            lines.len(),
            last.trim()
        ))
    }

    pub(super) fn output_tail(&self) -> String {
        let Some(tail) = &self.output_tail else {
            return String::new();
        };
        let bytes = tail.lock().map(|t| t.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// SIGTERM, a grace period, then SIGKILL; then reaps whatever it had spawned.
    ///
    /// nginx's master and mpirun both stop their children on SIGTERM, but a
    /// hard kill would orphan them (still holding the port, or spinning), so
    /// the process tree is noted first and leftovers are killed by pid.
    pub(super) fn stop(&mut self) {
        self.stop_timed();
    }

    /// `stop`, timed: how long the launched process took to exit after
    /// SIGTERM, and its status (None: killed after STOP_GRACE). None when
    /// it was stopped before.
    pub(super) fn stop_timed(&mut self) -> Option<(Duration, Option<ExitStatus>)> {
        if self.stopped {
            return None;
        }
        self.stopped = true;
        let pid = self.child.id();
        let tree = descendants(pid);
        signal(pid, "TERM");
        let t0 = Instant::now();
        let exited = wait_child(&mut self.child, STOP_GRACE);
        let took = t0.elapsed();
        let status = self.child.try_wait().ok().flatten().filter(|_| exited);
        if !exited {
            eprintln!(
                "bench: {} ignored SIGTERM for {STOP_GRACE:?}; killing it",
                self.label
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        kill_leftovers(&tree);
        Some((took, status))
    }

    /// SIGKILL to the server's own pid, with no grace, then reaps it.
    ///
    /// Only for a server that is one process (the pool origins run with
    /// `master_process off`): a killed nginx master would orphan its workers.
    pub(super) fn kill(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        // Child::kill sends SIGKILL to this child's pid, still ours as it is not
        // reaped yet; `stopped` keeps stop() from signalling the pid once it is.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reserves a free loopback port: bind port 0, read it, let it go.
pub(super) fn free_port() -> BoxResult<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
