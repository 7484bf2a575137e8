//! Pooled upstream connections never carry one client's answer to another,
//! and a request that meets a stale pooled connection is sent again on a
//! fresh one: against misbehaving upstreams written here, under `mpirun -np
//! 3` and alone.

mod common;

use common::upstream::fnv1a;
use common::{both, eventually, Resp, Server};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How one of these upstreams misbehaves.
#[derive(Clone, Copy)]
enum Fault {
    /// After each answer, writes the same answer again: a duplicated
    /// response, bytes nobody asked for.
    Duplicate,
    /// Closes a keep-alive connection after it sat idle this long (as
    /// gunicorn does after 2 s).
    IdleClose(Duration),
    /// Answers the first request of each connection; on the second, reads
    /// it whole and closes without a byte of answer: an idle close that
    /// crossed the request on the wire.
    CloseOnSecond,
}

/// A keep-alive HTTP/1.1 upstream on 127.0.0.1:0 with one fault. Every
/// answer is `answer for PATH len=N fnv=HEX` (N and HEX of the body).
struct Faulty {
    port: u16,
    /// Connections accepted.
    conns: Arc<AtomicUsize>,
    /// Connections the upstream closed itself.
    closed: Arc<AtomicUsize>,
    /// Requests read whole, as `(path, body length)`.
    seen: Arc<Mutex<Vec<(String, usize)>>>,
}

impl Faulty {
    fn start(fault: Fault) -> Faulty {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, d, s) = (conns.clone(), closed.clone(), seen.clone());
        // The acceptor lives as long as the test process: tests end it.
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (d, s) = (d.clone(), s.clone());
                thread::spawn(move || {
                    serve(stream, fault, &s);
                    d.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Faulty {
            port,
            conns,
            closed,
            seen,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Serve one connection until the fault ends it or the peer leaves.
fn serve(stream: TcpStream, fault: Fault, seen: &Mutex<Vec<(String, usize)>>) {
    if let Fault::IdleClose(idle) = fault {
        let _ = stream.set_read_timeout(Some(idle));
    }
    let mut input = BufReader::new(&stream);
    let mut out = &stream;
    for nth in 0.. {
        let Some((path, length)) = read_head(&mut input) else {
            return; // closed by the peer, or idle too long
        };
        let mut body = vec![0u8; length];
        if input.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock().unwrap().push((path.clone(), body.len()));
        if matches!(fault, Fault::CloseOnSecond) && nth == 1 {
            return;
        }
        let text = format!(
            "answer for {path} len={} fnv={:016x}",
            body.len(),
            fnv1a(&body)
        );
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
        if matches!(fault, Fault::Duplicate) && out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A request head: its path and Content-Length. `None` at the end of the
/// connection, on a read timeout, or on anything this upstream does not
/// take (it has no chunked decoding: the proxy sends lengths here).
fn read_head(input: &mut impl BufRead) -> Option<(String, usize)> {
    let mut line = String::new();
    input.read_line(&mut line).ok().filter(|&n| n > 0)?;
    let path = line.split(' ').nth(1)?.to_string();
    let mut length = 0;
    loop {
        let mut field = String::new();
        input.read_line(&mut field).ok().filter(|&n| n > 0)?;
        if field == "\r\n" {
            return Some((path, length));
        }
        let lower = field.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
        if lower.starts_with("transfer-encoding:") {
            return None;
        }
    }
}

/// What the upstream answers for `path` and `body`.
fn expected(path: &str, body: &[u8]) -> String {
    format!(
        "answer for {path} len={} fnv={:016x}",
        body.len(),
        fnv1a(body)
    )
}

fn post(srv: &Server, path: &str, body: &[u8]) -> Resp {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    srv.one(&req)
}

#[test]
fn an_upstream_that_writes_after_its_answer_never_answers_another_client() {
    let up = Faulty::start(Fault::Duplicate);
    let route = format!("/={}", up.url());
    both(&["--route", &route], |srv| {
        for round in 0..3 {
            // 40 clients at once, one fresh connection each, distinct paths.
            let answers: Vec<(String, Resp)> = thread::scope(|s| {
                let handles: Vec<_> = (0..40)
                    .map(|i| {
                        let path = format!("/r{round}-{i}");
                        s.spawn(move || {
                            let r = srv.get(&path, "");
                            (path, r)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let wrong: Vec<String> = answers
                .iter()
                .filter(|(path, r)| r.status != 200 || r.text() != expected(path, b""))
                .map(|(path, r)| format!("{path}: {} {:?}", r.status, r.text()))
                .collect();
            assert!(wrong.is_empty(), "round {round}: {wrong:#?}");
        }
        // And one after another, where every request could reuse the last.
        for i in 0..20 {
            let path = format!("/seq{i}");
            let r = srv.get(&path, "");
            assert_eq!(r.text(), expected(&path, b""), "{}", r.status);
        }
    });
}

#[test]
fn a_post_after_the_upstream_closed_its_idle_connections_is_answered() {
    let up = Faulty::start(Fault::IdleClose(Duration::from_millis(150)));
    let route = format!("/={}", up.url());
    both(&["--route", &route], |srv| {
        for i in 0..10 {
            let body = format!("body number {i} ").repeat(100 + i).into_bytes();
            let path = format!("/form{i}");
            let r = post(srv, &path, &body);
            assert_eq!((r.status, r.text()), (200, expected(&path, &body)));
            // Wait until the upstream has closed every connection it had:
            // the next POST meets only connections closed while idle.
            assert!(
                eventually(Duration::from_secs(10), || up.closed.load(Ordering::SeqCst)
                    == up.conns.load(Ordering::SeqCst)),
                "the upstream never closed its idle connections"
            );
        }
    });
}

#[test]
fn a_request_that_meets_a_stale_connection_is_sent_again_once_on_a_fresh_one() {
    let up = Faulty::start(Fault::CloseOnSecond);
    let route = format!("/={}", up.url());
    both(&["--route", &route], |srv| {
        let before = up.seen.lock().unwrap().len();
        // Each worker's second request on a connection is cut unanswered;
        // POST, PATCH and DELETE with bodies all go again, on a new one.
        for i in 0..12 {
            let method = ["POST", "PATCH", "DELETE"][i % 3];
            let body = format!("{method} {i};").repeat(50 + i).into_bytes();
            let path = format!("/item{i}");
            let mut req = format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            req.extend_from_slice(&body);
            let r = srv.one(&req);
            assert_eq!((r.status, r.text()), (200, expected(&path, &body)));
        }
        // Some requests were sent twice, each time whole.
        let seen = up.seen.lock().unwrap()[before..].to_vec();
        assert!(
            seen.len() > 12,
            "no request met a stale connection: {seen:?}"
        );
        for (path, len) in &seen {
            let i: usize = path.trim_start_matches("/item").parse().unwrap();
            let method = ["POST", "PATCH", "DELETE"][i % 3];
            assert_eq!(*len, format!("{method} {i};").len() * (50 + i), "{path}");
        }

        // A body beyond the replay limit (1 MiB) is not kept: the request
        // is not sent again, and the client gets 502.
        let big = vec![b'x'; 3 << 20];
        let mut saw_502 = false;
        for _ in 0..4 {
            let r = post(srv, "/big", &big);
            match r.status {
                200 => assert_eq!(r.text(), expected("/big", &big)),
                502 => saw_502 = true,
                other => panic!("big POST: {other} {}", r.text()),
            }
        }
        assert!(
            saw_502,
            "a stale connection was retried with a body not kept"
        );
    });
}
