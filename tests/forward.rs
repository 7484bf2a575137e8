//! The forward proxy: absolute-form requests for other hosts and CONNECT
//! tunnels, with real curl, under `mpirun -np 3` and alone.

mod common;

use common::upstream::{EchoTcp, Upstream};
use common::{both, read_one, Server, Site};
use std::io::{Read, Write};
use std::process::Command;

/// `curl -s ARGS`: status code and body.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn curl_through_the_forward_proxy_and_connect() {
    let up = Upstream::start();
    let echo = EchoTcp::start();
    both(&["--forward-proxy", "--connect-ports", "any"], |srv| {
        let proxy = srv.url("");
        // Plain HTTP through the proxy: the upstream sees origin-form and
        // its own Host.
        let (code, body) = curl(&["-x", &proxy, &format!("{}/echo", up.url())]);
        assert_eq!(code, 200, "{body}");
        assert!(body.starts_with("GET /echo\n"), "{body}");
        assert!(
            body.contains(&format!("host: {}", up.authority()).to_lowercase())
                || body.contains(&format!("Host: {}", up.authority())),
            "{body}"
        );
        // The same through a CONNECT tunnel (curl -p).
        let (code, body) = curl(&["-p", "-x", &proxy, &format!("{}/tunneled", up.url())]);
        assert_eq!((code, body.as_str()), (200, "ok GET /tunneled"));
        // A request for mpiweb itself is answered from the document root.
        let (code, body) = curl(&["-x", &proxy, &srv.url("/hello.txt")]);
        assert_eq!((code, body.as_str()), (200, "hello world\n"));
        // A raw tunnel carries bytes both ways, half-close included.
        let mut s = srv.connect();
        write!(
            s,
            "CONNECT {} HTTP/1.1\r\nHost: {}\r\n\r\n",
            echo.authority(),
            echo.authority()
        )
        .unwrap();
        let r = read_one(&mut s, true);
        assert_eq!(r.status, 200);
        s.write_all(b"ping through the tunnel").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"ping through the tunnel");
        // Unreachable targets are 502.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = srv.one(
            format!("CONNECT {dead} HTTP/1.1\r\nHost: {dead}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(r.status, 502);
        let r = srv.one(
            format!("GET http://{dead}/x HTTP/1.1\r\nHost: {dead}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(r.status, 502);
    });
}

#[test]
fn connect_is_limited_to_its_ports_and_the_proxy_is_off_by_default() {
    let up = Upstream::start();
    let site = Site::new();
    // Default ports: 443 only.
    let srv = Server::start(&site.root(), &["--forward-proxy"]);
    let req = format!(
        "CONNECT {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        up.authority()
    );
    assert_eq!(srv.one(req.as_bytes()).status, 403);
    drop(srv);
    let srv = Server::start_mpi(
        3,
        &site.root(),
        &["--forward-proxy", "--connect-ports", "1,2"],
    );
    assert_eq!(srv.one(req.as_bytes()).status, 403);
    drop(srv);
    // Without --forward-proxy: no relay at all.
    let srv = Server::start(&site.root(), &[]);
    let (code, body) = curl(&["-x", &srv.url(""), &format!("{}/hello.txt", up.url())]);
    assert_eq!(
        (code, body.as_str()),
        (200, "hello world\n"),
        "served from the docroot"
    );
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    assert_eq!(srv.one(req.as_bytes()).status, 405);
}
