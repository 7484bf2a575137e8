//! nginx: what each instance is for (its role), its config file, and starting it.

use super::*;

/// What an nginx instance is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum NginxRole {
    /// Rows 1-3: serves the docroot.
    Static,
    /// The upstream of the proxy rows: serves the docroot, without an access log.
    Origin,
    /// A proxy rows' server: passes every request to the origin on `upstream`.
    Proxy { upstream: u16 },
    /// One of the pool rows' three origins: the origin's config in one process;
    /// `logged`: with an access log of the failover run's requests (B after its restart).
    PoolOrigin { member: Member, logged: bool },
    /// The pool rows' nginx: passes every request to the pool of the origins on `upstreams`.
    PoolProxy { upstreams: [u16; 3] },
    /// The store rows' nginx: WebDAV PUT and DELETE under STORE_PREFIX, in its own root.
    Store,
}

/// The three origins of the pool rows; B is the one killed and started again.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Member {
    A,
    B,
    C,
}

impl Member {
    fn letter(self) -> &'static str {
        match self {
            Member::A => "a",
            Member::B => "b",
            Member::C => "c",
        }
    }
}

impl NginxRole {
    fn label(self) -> &'static str {
        match self {
            NginxRole::Static => "nginx",
            NginxRole::Origin => "origin nginx",
            NginxRole::Proxy { .. } => "nginx proxy",
            NginxRole::PoolOrigin { member, .. } => match member {
                Member::A => "origin nginx A",
                Member::B => "origin nginx B",
                Member::C => "origin nginx C",
            },
            NginxRole::PoolProxy { .. } => "nginx pool proxy",
            NginxRole::Store => "nginx dav",
        }
    }

    /// Where its config, pid file and logs go: rows 1-3 keep the top of the temp dir.
    pub(super) fn dir(self, site: &Site) -> PathBuf {
        match self {
            NginxRole::Static => site.tmp().to_path_buf(),
            NginxRole::Origin => site.tmp().join("origin"),
            NginxRole::Proxy { .. } => site.tmp().join("proxy"),
            NginxRole::PoolOrigin { member, .. } => {
                site.tmp().join(format!("pool-{}", member.letter()))
            }
            NginxRole::PoolProxy { .. } => site.tmp().join("pool-proxy"),
            NginxRole::Store => site.tmp().join("store-nginx"),
        }
    }
}

fn nginx_conf(site: &Site, role: NginxRole, dir: &Path, port: u16) -> String {
    let tmp = dir.display();
    let root = site.docroot.display();
    // The origin logs nothing: its log would cost both proxies' rows the same,
    // and only the proxies' own logging is compared (mpiweb's stderr).
    let access_log = match role {
        NginxRole::Static
        | NginxRole::Proxy { .. }
        | NginxRole::PoolProxy { .. }
        | NginxRole::Store => format!("access_log {tmp}/access.log;"),
        NginxRole::Origin | NginxRole::PoolOrigin { logged: false, .. } => {
            "access_log off;".to_string()
        }
        // Only what the failover run's wrk sent counts, by its header: not the
        // readiness probe, not mpiweb's health checks. See parse_failover_log.
        NginxRole::PoolOrigin { logged: true, .. } => format!(
            "log_format failover '$msec $http_x_bench';\n\
             \x20   access_log {tmp}/access.log failover;"
        ),
    };
    // A pool origin is one process, so that killing its pid kills the whole server.
    let master_process = match role {
        NginxRole::PoolOrigin { .. } => "off",
        NginxRole::Static
        | NginxRole::Origin
        | NginxRole::Proxy { .. }
        | NginxRole::PoolProxy { .. }
        | NginxRole::Store => "on",
    };
    let server = match role {
        NginxRole::Static | NginxRole::Origin | NginxRole::PoolOrigin { .. } => {
            format!("server {{ listen 127.0.0.1:{port}; root {root}; }}")
        }
        // Connections to the origin are kept alive (HTTP/1.1, no "Connection:
        // close"), as mpiweb's pool does. proxy_max_temp_file_size 0: a 1 GiB
        // response is passed on as it arrives instead of being spooled to a
        // temp file on disk; every other proxy setting is nginx's default
        // (proxy_buffering on, proxy_buffers 8 4k|8k).
        NginxRole::Proxy { upstream } => format!(
            "proxy_temp_path {tmp}/proxy_temp;\n\
             \x20   upstream up {{ server 127.0.0.1:{upstream}; keepalive 32; }}\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port};\n\
             \x20       location / {{\n\
             \x20           proxy_pass http://up;\n\
             \x20           proxy_http_version 1.1;\n\
             \x20           proxy_set_header Connection \"\";\n\
             \x20           proxy_max_temp_file_size 0;\n\
             \x20       }}\n\
             \x20   }}"
        ),
        // The proxy row's settings, to a pool of three with nginx's passive
        // checks set as mpiweb's defaults are (max-fails=1 fail-timeout=10s).
        NginxRole::PoolProxy {
            upstreams: [a, b, c],
        } => format!(
            "proxy_temp_path {tmp}/proxy_temp;\n\
             \x20   upstream pool {{\n\
             \x20       server 127.0.0.1:{a} max_fails=1 fail_timeout=10s;\n\
             \x20       server 127.0.0.1:{b} max_fails=1 fail_timeout=10s;\n\
             \x20       server 127.0.0.1:{c} max_fails=1 fail_timeout=10s;\n\
             \x20       keepalive 32;\n\
             \x20   }}\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port};\n\
             \x20       location / {{\n\
             \x20           proxy_pass http://pool;\n\
             \x20           proxy_http_version 1.1;\n\
             \x20           proxy_set_header Connection \"\";\n\
             \x20           proxy_max_temp_file_size 0;\n\
             \x20       }}\n\
             \x20   }}"
        ),
        // WebDAV's PUT writes the body to a file under client_body_temp_path (on
        // the same file system), then renames it into place: no fsync anywhere.
        // The docroot elsewhere, so that the readiness probe finds the small file.
        NginxRole::Store => format!(
            "server {{\n\
             \x20       listen 127.0.0.1:{port};\n\
             \x20       root {root};\n\
             \x20       location {STORE_PREFIX} {{\n\
             \x20           root {store_root};\n\
             \x20           dav_methods PUT DELETE;\n\
             \x20           create_full_put_path on;\n\
             \x20           client_max_body_size 1m;\n\
             \x20       }}\n\
             \x20   }}",
            store_root = store_nginx_root(site).display()
        ),
    };
    format!(
        "daemon off;\n\
         master_process {master_process};\n\
         worker_processes 1;\n\
         worker_rlimit_nofile 20000;\n\
         pid {tmp}/nginx.pid;\n\
         error_log {tmp}/error.log;\n\
         events {{ worker_connections 20000; }}\n\
         http {{\n\
         \x20   types {{ text/html html; }}\n\
         \x20   default_type application/octet-stream;\n\
         \x20   {access_log}\n\
         \x20   client_body_temp_path {tmp}/client_body;\n\
         \x20   sendfile on;\n\
         \x20   tcp_nopush on;\n\
         \x20   keepalive_requests 100000;\n\
         \x20   keepalive_timeout 65;\n\
         \x20   {server}\n\
         }}\n"
    )
}

pub(super) fn start_nginx(cfg: &Config, site: &Site, role: NginxRole) -> BoxResult<Server> {
    start_nginx_on(cfg, site, role, free_port()?)
}

/// Starts nginx on a given port: a free one, or the port of a pool origin started again.
pub(super) fn start_nginx_on(
    cfg: &Config,
    site: &Site,
    role: NginxRole,
    port: u16,
) -> BoxResult<Server> {
    eprintln!("bench: starting {}", role.label());
    let nginx = cfg.nginx.as_ref().ok_or("nginx was not looked up")?;
    let dir = role.dir(site);
    fs::create_dir_all(&dir)?;
    // Workers run as nobody when started as root: they create the temp dirs below.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    if role != NginxRole::Static {
        // A fresh log per start, so that its complaints are this row's.
        let _ = fs::remove_file(dir.join("error.log"));
    }
    if let NginxRole::PoolOrigin { logged: true, .. } = role {
        // The same for B's access log: what it holds is this failover run's.
        let _ = fs::remove_file(dir.join("access.log"));
    }
    let conf = dir.join("nginx.conf");
    fs::write(&conf, nginx_conf(site, role, &dir, port))?;
    // Its output goes to a file: nothing reads it unless startup fails.
    let out_path = dir.join("nginx.out");
    let out = File::create(&out_path)?;
    let mut cmd = Command::new(nginx);
    cmd.arg("-c").arg(&conf).arg("-p").arg(&dir);
    if cfg.nginx_has_e {
        cmd.arg("-e").arg(dir.join("error.log"));
    }
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let child = cmd.spawn()?;
    let mut server = Server {
        kind: Kind::Nginx,
        label: role.label().to_string(),
        child,
        port,
        rank0_pid: None,
        output_tail: None,
        error_log: Some(dir.join("error.log")),
        stopped: false,
    };
    server.wait_ready().map_err(|e| {
        let out = fs::read_to_string(&out_path).unwrap_or_default();
        let log = fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        format!("{e}\nnginx output:\n{out}\nnginx error.log:\n{log}")
    })?;
    Ok(server)
}
