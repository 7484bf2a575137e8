//! Every HTTP/1.1 rule of the server, checked with raw bytes over loopback.

mod common;

use common::{read_one, read_to_close, Resp, Server, Site};
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

/// Each malformed request on its own connection: the status, and the
/// connection closed after the answer.
#[test]
fn malformed_requests_get_their_status_and_close() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &["--max-body", "100"]);
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(8200));
    let long_head = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(16_400)
    );
    let many_lines = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        "X-N: 1\r\n".repeat(101)
    );
    let cases: Vec<(&[u8], u16)> = vec![
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-F: a\r\n  folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-C: a\x01b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-N: a\x00b\r\n\r\n", 400),
        (b"GET /a\x00 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET / HTTP/1.1 extra\r\nHost: t\r\n\r\n", 400),
        (b"GET  /  HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),
        (b"GET / HTTP/0.9\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", 400),
        (b"BREW / HTTP/1.1\r\nHost: t\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"GET / HTTP/3.1\r\nHost: t\r\n\r\n", 505),
        (long_target.as_bytes(), 414),
        (long_head.as_bytes(), 431),
        (many_lines.as_bytes(), 431),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n", 413),
        (b"PUT / HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\n\r\n", 417),
    ];
    for (req, want) in cases {
        // A second, valid request follows: it must never be answered.
        let mut bytes = req.to_vec();
        bytes.extend_from_slice(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        let out = srv.raw(&bytes);
        let resps = Resp::parse_all(&out);
        let shown = String::from_utf8_lossy(&req[..req.len().min(80)]).into_owned();
        assert_eq!(resps.len(), 1, "{shown}: {}", String::from_utf8_lossy(&out));
        let r = &resps[0];
        assert_eq!(r.status, want, "{shown}");
        assert_eq!(r.header("connection"), Some("close"), "{shown}");
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
        assert!(
            r.text().contains(&want.to_string()),
            "error page names its status"
        );
    }
}

#[test]
fn keep_alive_and_pipelining() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &[]);
    // Three pipelined requests in one write, answered in order; the GET
    // with a body has it drained so the next request is read right.
    let out = srv.raw(
        b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /style.css HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nHELLO\
          POST /data.json HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nbody\r\n0\r\nTrailer-A: 1\r\n\r\n\
          HEAD /data.json HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let mut rest = &out[..];
    let mut statuses = Vec::new();
    for head_only in [false, false, false, true, false] {
        let (r, used) = Resp::parse(rest, head_only).expect("a response");
        statuses.push(r.status);
        rest = &rest[used..];
        if statuses.len() == 1 {
            assert_eq!(r.body, b"hello world\n");
        }
    }
    assert_eq!(statuses, [200, 200, 405, 200, 200]);
    assert!(rest.is_empty(), "nothing after the close");

    // HTTP/1.0 closes by default, and stays open with keep-alive.
    let out = srv.raw(b"GET /hello.txt HTTP/1.0\r\n\r\nGET /hello.txt HTTP/1.0\r\n\r\n");
    assert_eq!(Resp::parse_all(&out).len(), 1);
    let mut s = srv.connect();
    s.write_all(b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let r = read_one(&mut s, false);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    s.write_all(b"GET /hello.txt HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(read_one(&mut s, false).header("connection"), Some("close"));
}

#[test]
fn options_trace_absolute_form_and_methods() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &[]);
    let r = srv.one(b"OPTIONS * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(
        (r.status, r.header("allow")),
        (200, Some("GET, HEAD, OPTIONS"))
    );

    // TRACE never echoes the request (a cookie must not come back).
    let r = srv.one(b"TRACE / HTTP/1.1\r\nHost: t\r\nCookie: s3cr3t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 405);
    assert!(!r.text().contains("s3cr3t"));

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let req = format!("{method} /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let r = srv.one(req.as_bytes());
        assert_eq!(
            (r.status, r.header("allow")),
            (405, Some("GET, HEAD, OPTIONS")),
            "{method}"
        );
    }

    // Absolute-form is accepted; without --forward-proxy it is served locally.
    let r = srv.one(b"GET http://elsewhere.example/hello.txt HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world\n"[..]));
}

#[test]
fn expect_continue_without_a_reader_closes_instead_of_waiting() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &[]);
    let mut s = srv.connect();
    s.write_all(
        b"PUT /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n",
    )
    .unwrap();
    let out = read_to_close(&mut s);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 405 "), "{text}");
    assert!(!text.contains("100 Continue"));
    assert!(text.contains("Connection: close"));
}

#[test]
fn head_timeout_answers_408_and_idle_keep_alive_closes_quietly() {
    let site = Site::new();
    let srv = Server::start(
        &site.root(),
        &["--header-timeout", "1", "--keepalive-timeout", "1"],
    );
    // A head that never completes.
    let mut s = srv.connect();
    let t0 = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    let out = read_to_close(&mut s);
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408 "));
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );

    // Bytes dribbled in below the timeout do not extend it.
    let mut s = srv.connect();
    let t0 = Instant::now();
    let mut answer = Vec::new();
    for b in b"GET / HTTP/1.1\r\nHost: t\r\nX: ".iter().cycle().take(40) {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(50));
        if t0.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    answer.extend(read_to_close(&mut s));
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408 "));
    assert!(t0.elapsed() < Duration::from_secs(3));

    // An idle keep-alive connection is closed without a response.
    let mut s = srv.connect();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let _ = read_one(&mut s, false);
    let rest = read_to_close(&mut s);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[test]
fn connection_cap_answers_503_then_recovers() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &["--max-connections", "2"]);
    let mut held: Vec<_> = (0..2).map(|_| srv.connect()).collect();
    // Make sure both are accepted and served before the third arrives.
    for s in &mut held {
        s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(read_one(s, false).status, 200);
    }
    let r = srv.get("/hello.txt", "");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("connection"), Some("close"));
    drop(held);
    // Slots free as the held threads notice the close; poll until served.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let r = srv.get("/hello.txt", "");
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < until, "never recovered: {}", r.status);
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_response_has_date_server_and_exact_length() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &[]);
    for path in [
        "/",
        "/hello.txt",
        "/missing",
        "/list/",
        "/list",
        "/empty.txt",
    ] {
        let out = srv
            .raw(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
        // Resp::parse checks Date and Server; the length must be exact.
        let (r, used) = Resp::parse(&out, false).unwrap();
        assert_eq!(used, out.len(), "{path}: trailing bytes");
        assert!(r.header("content-length").is_some(), "{path}");
    }
}

#[test]
fn access_log_has_one_combined_line_per_request() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &[]);
    srv.get(
        "/hello.txt?q=1",
        "User-Agent: probe/1\r\nReferer: http://r.example/\r\n",
    );
    let found = srv.wait_log(|l| {
        l.starts_with("127.0.0.1 - - [")
            && l.contains(
                "] \"GET /hello.txt?q=1 HTTP/1.1\" 200 12 \"http://r.example/\" \"probe/1\" ",
            )
            && l.ends_with(" rank=0")
    });
    assert!(found, "{}", srv.log_text());
}

#[test]
fn access_log_file_gets_the_lines() {
    let site = Site::new();
    let path = site.dir.path().join("access.log");
    let srv = Server::start(&site.root(), &["--access-log", path.to_str().unwrap()]);
    srv.get("/hello.txt", "User-Agent: filed/1\r\n");
    srv.get("/nope", "");
    let until = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 2 || Instant::now() > until {
            break text;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("\"GET /hello.txt HTTP/1.1\" 200 12 \"-\" \"filed/1\""),
        "{text}"
    );
    assert!(lines[1].contains("\"GET /nope HTTP/1.1\" 404 "), "{text}");
    assert!(
        !srv.log_text().contains("GET /hello.txt"),
        "not also on stderr"
    );
}

#[test]
fn unread_bodies_are_drained_only_when_small_and_prompt() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &["--header-timeout", "1"]);
    // A huge declared body the handler does not want: answered at once,
    // and the connection closes rather than wait for a gigabyte.
    let mut s = srv.connect();
    let t0 = Instant::now();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000\r\n\r\npartial")
        .unwrap();
    let r = read_one(&mut s, false);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // A small body that stops arriving: answered within the header timeout.
    let mut s = srv.connect();
    let t0 = Instant::now();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
        .unwrap();
    let r = read_one(&mut s, false);
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn a_stray_crlf_after_a_request_is_not_a_new_request() {
    let site = Site::new();
    let srv = Server::start(
        &site.root(),
        &["--header-timeout", "0.5", "--keepalive-timeout", "3"],
    );
    let mut s = srv.connect();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n\r\n")
        .unwrap();
    assert_eq!(read_one(&mut s, false).status, 200);
    // Past the header timeout nothing arrives (no 408); the connection is
    // still usable.
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 64];
    match std::io::Read::read(&mut s, &mut buf) {
        Err(e) => assert!(matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        Ok(n) => panic!(
            "unexpected {n} bytes: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_one(&mut s, false).status, 200);
}
