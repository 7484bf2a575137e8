//! The reverse proxy, through worker ranks (`mpirun -np 3`) and in-process
//! (alone), against real upstreams written in `common/upstream.rs`.

mod common;

use common::upstream::{fnv1a, pattern_mismatch, Fnv, Upstream};
use common::{both, read_one, read_to_close, Resp, Server};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

fn send(srv: &Server, req: &str) -> Resp {
    srv.one(req.as_bytes())
}

#[test]
fn reverse_proxy_header_and_framing_rules() {
    let up = Upstream::start();
    let route = format!("/app/={}/", up.url());
    both(&["--route", &route], |srv| {
        // The prefix is replaced by the upstream's path; hop-by-hop fields
        // stop here; the proxy's own fields are added.
        let r = send(
            srv,
            "GET /app/echo?x=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: close, X-Secret\r\n\
             X-Secret: s\r\nKeep-Alive: 5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
             Upgrade: h2c\r\nProxy-Authorization: Basic eA==\r\nX-Forwarded-Proto: https\r\n\
             Cookie: a=1\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let seen = up.requests().pop().expect("upstream saw the request");
        assert_eq!(seen.target, "/echo?x=1");
        assert_eq!(seen.header("host"), Some(up.authority().as_str()));
        assert_eq!(seen.header("cookie"), Some("a=1"));
        for gone in [
            "x-secret",
            "keep-alive",
            "proxy-connection",
            "te",
            "upgrade",
            "proxy-authorization",
        ] {
            assert_eq!(seen.header(gone), None, "{gone} went upstream");
        }
        assert_eq!(seen.header("via"), Some("1.1 mpiweb"));
        assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
        assert_eq!(seen.headers_named("x-forwarded-proto").len(), 1);
        assert_eq!(seen.header("x-forwarded-host"), Some("shop.example"));

        // Response side: hop-by-hop fields dropped, Via added, our Date and
        // Server only.
        let r = srv.get("/app/hop", "");
        assert_eq!((r.status, r.text().as_str()), (200, "hop"));
        for gone in [
            "x-private",
            "keep-alive",
            "proxy-authenticate",
            "trailer",
            "upgrade",
        ] {
            assert_eq!(r.header(gone), None, "{gone} came back");
        }
        assert_eq!(r.header("via"), Some("1.1 mpiweb"));
        assert_eq!(r.headers.iter().filter(|(n, _)| n == "server").count(), 1);
        assert!(r.header("x-upstream").is_some());

        // Files outside the route are still served by rank 0.
        let r = srv.get("/hello.txt", "");
        assert_eq!((r.status, r.text().as_str()), (200, "hello world\n"));
        // Dot segments never reach an upstream: those inside the root are
        // removed before routing (the request leaves the route), those
        // that would climb above it are refused.
        let r = srv.get("/app/../hello.txt", "");
        assert_eq!((r.status, r.text().as_str()), (200, "hello world\n"));
        assert_eq!(srv.get("/app/%2e%2e/x", "").status, 404);
        let r = srv.get("/app/x/%2e%2e/echo", "");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(up.requests().pop().unwrap().target, "/echo");
        assert_eq!(srv.get("/app/../../hello.txt", "").status, 400);
        assert_eq!(srv.get("/app/%2e%2e/%2E%2E/x", "").status, 400);
    });
}

#[test]
fn request_ids_are_passed_on_or_made_logged_and_returned() {
    let up = Upstream::start();
    let route = format!("/app/={}/", up.url());
    both(&["--route", &route], |srv| {
        // A sensible id goes upstream and comes back, whatever the upstream
        // answers with.
        let r = send(
            srv,
            "GET /app/echo HTTP/1.1\r\nHost: a\r\nX-Request-Id: trace-42\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-request-id"), Some("trace-42"));
        let seen = up.requests().pop().expect("upstream saw the request");
        assert_eq!(seen.headers_named("x-request-id"), ["trace-42"]);
        // The rank that served it: a worker's under mpirun.
        let ranks: &[&str] = match srv.is_mpi() {
            true => &[" rank=1", " rank=2"],
            false => &[" rank=0"],
        };
        assert!(
            srv.wait_log(|l| l.contains("\"GET /app/echo HTTP/1.1\" 200")
                && l.contains(" id=trace-42 rank=")
                && ranks.iter().any(|r| l.ends_with(r)))
        );

        // None, or one that is not a token: a new id, the same one upstream,
        // on the answer and in the log.
        for given in ["", "X-Request-Id: has space\r\n", "X-Request-Id: a\"b\r\n"] {
            let req =
                format!("GET /app/echo HTTP/1.1\r\nHost: a\r\n{given}Connection: close\r\n\r\n");
            let r = send(srv, &req);
            let id = r.header("x-request-id").expect("an id").to_string();
            assert_eq!(id.len(), 16, "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            let seen = up.requests().pop().expect("upstream saw the request");
            assert_eq!(seen.headers_named("x-request-id"), [id.as_str()]);
            assert!(srv.wait_log(|l| l.contains(&format!(" id={id} rank="))));
        }

        // Files and errors carry one too; two requests never share one.
        let a = srv.get("/hello.txt", "");
        let b = srv.get("/missing", "");
        assert_eq!((a.status, b.status), (200, 404));
        let (a, b) = (a.header("x-request-id"), b.header("x-request-id"));
        assert!(a.is_some() && b.is_some() && a != b, "{a:?} {b:?}");
    });
}

#[test]
fn every_framing_is_relayed_and_the_connection_stays_usable() {
    let up = Upstream::start();
    let route = format!("/={}", up.url());
    both(&["--route", &route], |srv| {
        let mut s = srv.connect();
        let mut ask = |req: String, head_only: bool| -> Resp {
            s.write_all(req.as_bytes()).unwrap();
            read_one(&mut s, head_only)
        };
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = ask(get("/big?n=100000"), false);
        assert_eq!(r.header("content-length"), Some("100000"));
        assert_eq!(pattern_mismatch(0, &r.body), None);
        // Chunked and close-delimited upstream bodies go out chunked.
        for path in ["/big-chunked?n=300000", "/big-close?n=300000"] {
            let r = ask(get(path), false);
            assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{path}");
            assert_eq!(
                (r.body.len(), pattern_mismatch(0, &r.body)),
                (300_000, None)
            );
        }
        // HEAD keeps the length but has no body; 204 and 304 have none.
        let r = ask(
            "HEAD /big?n=5000 HTTP/1.1\r\nHost: t\r\n\r\n".to_string(),
            true,
        );
        assert_eq!((r.status, r.header("content-length")), (200, Some("5000")));
        let r = ask(get("/status/204"), false);
        assert_eq!((r.status, r.header("content-length")), (204, None));
        let r = ask(get("/status/304"), false);
        assert_eq!((r.status, r.header("etag")), (304, Some("\"v1\"")));
        let r = ask(get("/status/404"), false);
        assert_eq!((r.status, r.text().as_str()), (404, "status 404"));
        // Interim 103 is not passed on; the final answer is.
        let body = "0123456789";
        let r = ask(
            format!("POST /continue?early HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n{body}"),
            false,
        );
        assert_eq!(
            r.text(),
            format!("len=10 fnv={:016x}", fnv1a(body.as_bytes()))
        );
        // Every method, bodies by length and by chunks.
        for method in ["PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"] {
            let r = ask(format!("{method} /m HTTP/1.1\r\nHost: t\r\n\r\n"), false);
            assert_eq!(r.text(), format!("ok {method} /m"));
        }
        let r = ask(
            "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                .into(),
            false,
        );
        assert_eq!(
            r.text(),
            format!("len=11 fnv={:016x}", fnv1a(b"hello world"))
        );
        let seen = up.requests().pop().unwrap();
        assert!(seen.chunked);
        // An HTTP/1.0 client gets an unknown length delimited by the close.
        let raw = srv.raw(b"GET /big-chunked?n=1000 HTTP/1.0\r\n\r\n");
        let (r, _) = Resp::parse(&raw, false).unwrap();
        assert_eq!(
            (r.header("connection"), r.body.len()),
            (Some("close"), 1000)
        );
        assert_eq!(r.header("transfer-encoding"), None);
    });
    // Upstream connections are kept alive and reused.
    let requests = up.requests().len();
    assert!(
        up.connections() * 2 < requests,
        "{} connections for {requests} requests",
        up.connections()
    );
}

#[test]
fn expect_continue_is_answered_before_the_body() {
    let up = Upstream::start();
    let route = format!("/={}", up.url());
    both(&["--route", &route], |srv| {
        let mut s = srv.connect();
        s.write_all(
            b"PUT /upload HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
        )
        .unwrap();
        let mut buf = [0u8; 25];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"abcd").unwrap();
        let r = read_one(&mut s, false);
        assert_eq!(r.text(), format!("len=4 fnv={:016x}", fnv1a(b"abcd")));
        assert_eq!(up.requests().pop().unwrap().header("expect"), None);
    });
}

#[test]
fn upstream_failures_are_502_and_504_and_nothing_hangs() {
    let up = Upstream::start();
    // A port with nothing behind it: bind, read the port, close.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let routes = [
        format!("/={}", up.url()),
        format!("/dead/=http://{dead}"),
        "/nowhere/=http://no-such-host.invalid:80".to_string(),
    ];
    let mut args: Vec<&str> = vec!["--upstream-timeout", "1"];
    for r in &routes {
        args.extend(["--route", r]);
    }
    both(&args, |srv| {
        assert_eq!(srv.get("/dead/x", "").status, 502);
        assert_eq!(srv.get("/nowhere/x", "").status, 502);
        assert_eq!(srv.get("/broken", "").status, 502);
        let t0 = Instant::now();
        assert_eq!(srv.get("/silent", "").status, 504);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        // A body cut short upstream is cut short downstream: the client
        // sees fewer bytes than announced and the connection closes.
        let raw = srv.raw(b"GET /truncated HTTP/1.1\r\nHost: t\r\n\r\n");
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("Content-Length: 100"), "{text}");
        assert!(Resp::parse(&raw, false).is_none(), "complete? {text}");
        // And the proxy still answers.
        assert_eq!(srv.get("/fine", "").text(), "ok GET /fine");
    });
}

#[test]
fn routes_take_upstreams_in_turn_and_the_longest_prefix_wins() {
    let (a, b, c) = (Upstream::start(), Upstream::start(), Upstream::start());
    let pool = format!("/={},{}", a.url(), b.url());
    let api = format!("/api/={}", c.url());
    both(&["--route", &pool, "--route", &api], |srv| {
        let ports: Vec<String> = (0..6)
            .map(|_| srv.get("/x", "").header("x-upstream").unwrap().to_string())
            .collect();
        for p in [a.port(), b.port()] {
            assert_eq!(
                ports.iter().filter(|x| **x == p.to_string()).count(),
                3,
                "{ports:?}"
            );
        }
        let r = srv.get("/api/y", "");
        assert_eq!(r.header("x-upstream"), Some(c.port().to_string().as_str()));
    });
}

#[test]
fn hundred_megabytes_each_way() {
    const N: u64 = 100_000_000;
    let up = Upstream::start();
    let route = format!("/={}", up.url());
    both(&["--route", &route], |srv| {
        // Download, checked against the pattern as it arrives.
        let mut s = srv.connect();
        write!(
            s,
            "GET /big?n={N} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let data = read_to_close(&mut s);
        let at = data.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!((data.len() - at) as u64, N);
        assert_eq!(pattern_mismatch(0, &data[at..]), None);
        // Upload, chunked, checked by the upstream's hash.
        let mut s = srv.connect();
        s.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut fnv = Fnv::new();
        let mut block = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        while sent < N {
            let n = (N - sent).min(block.len() as u64) as usize;
            common::upstream::pattern_fill(sent, &mut block[..n]);
            fnv.update(&block[..n]);
            write!(s, "{n:x}\r\n").unwrap();
            s.write_all(&block[..n]).unwrap();
            s.write_all(b"\r\n").unwrap();
            sent += n as u64;
        }
        s.write_all(b"0\r\n\r\n").unwrap();
        let r = read_one(&mut s, false);
        assert_eq!(r.text(), format!("len={N} fnv={:016x}", fnv.finish()));
    });
}

#[test]
fn sixteen_slow_requests_run_side_by_side() {
    let up = Upstream::start();
    let route = format!("/={}", up.url());
    both(&["--route", &route], |srv| {
        let t0 = Instant::now();
        thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| s.spawn(|| srv.get("/slow?ms=1000", "")))
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap().text(), "slow");
            }
        });
        let took = t0.elapsed();
        assert!(
            took < Duration::from_millis(2500),
            "16 requests of 1 s took {took:?}"
        );
    });
}

/// Read a request head from an upstream socket.
fn read_head(up: &mut std::net::TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(up.read(&mut byte).unwrap(), 1, "request head cut short");
        head.push(byte[0]);
    }
}

#[test]
fn a_client_that_leaves_aborts_its_upstream_request() {
    // A hand-driven upstream, to see its side of the connection close.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let route = format!("/=http://{}", listener.local_addr().unwrap());
    both(&["--route", &route], |srv| {
        // Waiting for the answer: the client leaves, the upstream's
        // connection is closed long before the 30 s upstream timeout.
        let mut c = srv.connect();
        c.write_all(b"GET /wait HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let (mut up, _) = listener.accept().unwrap();
        read_head(&mut up);
        drop(c);
        let t0 = Instant::now();
        up.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let end = up.read(&mut [0u8; 16]);
        assert!(
            matches!(&end, Ok(0))
                || end
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{end:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

        // Mid-body: an endless answer stops being written once the client
        // is gone, instead of running on or filling memory.
        let mut c = srv.connect();
        c.write_all(b"GET /endless HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let (mut up, _) = listener.accept().unwrap();
        read_head(&mut up);
        up.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let writer = thread::spawn(move || {
            let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
            let t0 = Instant::now();
            let mut sent = 0u64;
            while t0.elapsed() < Duration::from_secs(20) {
                if up.write_all(chunk.as_bytes()).is_err() {
                    return Some((sent, t0.elapsed()));
                }
                sent += 0x10000;
            }
            None
        });
        let mut got = vec![0u8; 1 << 20];
        c.read_exact(&mut got).unwrap();
        drop(c);
        let (sent, took) = writer
            .join()
            .unwrap()
            .expect("the upstream write never failed");
        assert!(took < Duration::from_secs(10), "{took:?}");
        // Windows and socket buffers hold a few MiB at most, not the lot.
        assert!(
            sent < 64 << 20,
            "{sent} bytes written after the client left"
        );
    });
}

/// Names of the threads of process `pid` now.
fn thread_names(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn alone_a_request_without_a_body_runs_on_its_connection_thread() {
    let up = Upstream::start();
    let route = format!("/={}/", up.url());
    let site = common::Site::new();
    let srv = Server::start(&site.root(), &["--route", &route]);
    // Keep-alive and not, small and 3 MiB, every framing: all of it read
    // by the connection threads themselves.
    let mut c = srv.connect();
    for i in 0..20 {
        c.write_all(format!("GET /echo?i={i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_one(&mut c, false);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.text().contains(&format!("GET /echo?i={i}")),
            "{}",
            r.text()
        );
    }
    for path in [
        "/big?n=3145728",
        "/big-chunked?n=3145728",
        "/big-close?n=3145728",
    ] {
        let r = srv.get(path, "");
        assert_eq!((r.status, r.body.len()), (200, 3 << 20), "{path}");
        assert_eq!(pattern_mismatch(0, &r.body), None, "{path}");
    }
    let r = send(
        &srv,
        "HEAD /hop HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let names = thread_names(srv.pid());
    assert!(!names.is_empty(), "cannot read the server's threads");
    assert!(
        !names.iter().any(|n| n == "upstream"),
        "a pool thread ran a request without a body: {names:?}"
    );
    // A body still goes through the pool, whose thread shows up: the
    // check above can see one.
    let r = send(
        &srv,
        "POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let names = thread_names(srv.pid());
    assert!(names.iter().any(|n| n == "upstream"), "{names:?}");
}
