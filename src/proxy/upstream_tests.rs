//! The upstream client against a real upstream on loopback.

use super::*;
use crate::http::encode::ChunkedWriter;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

/// An upstream that answers every request on a connection with the number
/// of body bytes it received, and counts its connections. With `mute` it
/// accepts and never answers.
fn upstream(mute: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || serve(stream, mute));
        }
    });
    (addr, accepted)
}

fn serve(stream: TcpStream, mute: bool) {
    let mut input = io::BufReader::new(&stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match input.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push_str(&line),
            }
        }
        if mute {
            thread::sleep(Duration::from_secs(5));
            return;
        }
        let lower = head.to_ascii_lowercase();
        let framing = if lower.contains("transfer-encoding: chunked") {
            BodyFraming::Chunked
        } else if let Some(v) = lower.split("content-length: ").nth(1) {
            BodyFraming::Length(v.lines().next().unwrap().trim().parse().unwrap())
        } else {
            BodyFraming::None
        };
        let mut body = Vec::new();
        BodyReader::new(&mut input, framing, u64::MAX)
            .unwrap()
            .read_to_end(&mut body)
            .unwrap();
        let text = body.len().to_string();
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if (&stream).write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn fields() -> Vec<(String, Vec<u8>)> {
    vec![("Host".to_string(), b"up".to_vec())]
}

fn answer(conn: &mut Conn, method: Method) -> (ResponseHead, String) {
    let head = conn.read_head(method).unwrap();
    let mut body = String::new();
    conn.body(&head).unwrap().read_to_string(&mut body).unwrap();
    (head, body)
}

#[test]
fn connections_are_kept_and_reused_once_settled_then_at_once() {
    let (addr, accepted) = upstream(false);
    let pool = Pool::new(Duration::from_secs(5));
    let ask = |conn: &mut Conn| {
        conn.send_head(Method::Get, b"/", &fields(), BodyFraming::None)
            .unwrap();
        let (head, body) = answer(conn, Method::Get);
        assert_eq!(
            (head.status, body.as_str(), head.keep_alive),
            (200, "0", true)
        );
    };
    let mut first = pool.get(&addr).unwrap();
    assert!(!first.reused);
    ask(&mut first);
    pool.put(first);
    assert_eq!(pool.idle_count(&addr), 1);
    // Answered once, the upstream not proven: the next request waits out
    // SETTLE watching the connection, then takes it.
    let t0 = Instant::now();
    let mut conn = pool.get(&addr).unwrap();
    assert!(conn.reused);
    assert!(t0.elapsed() >= SETTLE - Duration::from_millis(1));
    ask(&mut conn);
    pool.put(conn);
    // Proven: reused at once from then on.
    for _ in 0..4 {
        let t0 = Instant::now();
        let mut conn = pool.get(&addr).unwrap();
        assert!(conn.reused);
        assert!(t0.elapsed() < SETTLE, "{:?}", t0.elapsed());
        ask(&mut conn);
        pool.put(conn);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_count(&addr), 1);
}

#[test]
fn bodies_go_up_with_a_length_or_chunked() {
    let (addr, _) = upstream(false);
    let pool = Pool::new(Duration::from_secs(5));
    let mut conn = pool.get(&addr).unwrap();
    conn.send_head(Method::Post, b"/", &fields(), BodyFraming::Length(5))
        .unwrap();
    conn.stream().write_all(b"hello").unwrap();
    assert_eq!(answer(&mut conn, Method::Post).1, "5");

    conn.send_head(Method::Put, b"/", &fields(), BodyFraming::Chunked)
        .unwrap();
    let mut chunked = ChunkedWriter::new(conn.stream());
    for _ in 0..100 {
        chunked.write_all(&[b'x'; 1000]).unwrap();
    }
    chunked.finish().unwrap();
    assert_eq!(answer(&mut conn, Method::Put).1, "100000");
}

#[test]
fn failures_map_to_502_and_504() {
    // Refused: a port that was just free.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pool = Pool::new(Duration::from_millis(300));
    let refused = pool.get(&format!("127.0.0.1:{port}")).err().unwrap();
    assert_eq!(refused.status(), Some(502), "{refused}");
    // Not an address at all: no lookup goes out.
    let bad = pool.get("no-port-here").err().unwrap();
    assert_eq!(bad.status(), Some(502), "{bad}");
    // Accepted but never answered: 504 after the timeout.
    let (addr, _) = upstream(true);
    let mut conn = pool.get(&addr).unwrap();
    conn.send_head(Method::Get, b"/", &fields(), BodyFraming::None)
        .unwrap();
    let t0 = Instant::now();
    let silent = conn.read_head(Method::Get).err().unwrap();
    assert_eq!(silent.status(), Some(504), "{silent}");
    assert!(t0.elapsed() < Duration::from_secs(3));
}

/// An upstream that answers one request on its first connection with
/// `answer`, then, when told through the returned sender, writes `after`
/// and closes that connection if `close`. Later connections are accepted
/// by the kernel and never served.
fn one_shot(
    answer: &'static [u8],
    after: &'static [u8],
    close: bool,
) -> (String, std::sync::mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut input = io::BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while input.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            line.clear();
        }
        let _ = stream.write_all(answer);
        let _ = rx.recv();
        let _ = stream.write_all(after);
        if close {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        // The listener stays open: a new connection is still accepted.
        thread::sleep(Duration::from_secs(5));
        drop(listener);
    });
    (addr, tx)
}

/// Send a GET on `conn` and read its answer to the end.
fn exchange_once(conn: &mut Conn) -> String {
    conn.send_head(Method::Get, b"/", &fields(), BodyFraming::None)
        .unwrap();
    answer(conn, Method::Get).1
}

/// Wait until something (bytes or the close) is readable on `conn`: a
/// blocking peek returns as soon as it is.
fn wait_readable(conn: &Conn) {
    let mut byte = [0u8; 1];
    let _ = conn.stream().peek(&mut byte);
}

#[test]
fn a_connection_with_bytes_after_its_answer_is_never_pooled() {
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nr1";
    let (addr, tx) = one_shot(ANSWER, ANSWER, false);
    let pool = Pool::new(Duration::from_secs(5));
    let mut conn = pool.get(&addr).unwrap();
    assert_eq!(exchange_once(&mut conn), "r1");
    tx.send(()).unwrap();
    // The duplicate answer waits on the socket, not in the buffer.
    wait_readable(&conn);
    assert!(conn.input.pending().is_empty());
    pool.put(conn);
    assert_eq!(pool.idle_count(&addr), 0);
    // The upstream writes after its answers: none of its connections is
    // kept for a while, however quiet.
    assert!(pool.is_chatty(&addr));
    let (quiet, _) = upstream(false);
    let mut conn = pool.get(&quiet).unwrap();
    assert_eq!(exchange_once(&mut conn), "0");
    pool.put(conn);
    assert_eq!(pool.idle_count(&quiet), 1, "another upstream is not marked");
}

#[test]
fn an_idle_connection_that_became_readable_is_closed_not_reused() {
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    const LATE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n";
    // A close while idle, and unsolicited bytes (a late 408) on a
    // connection left open.
    for (after, close) in [(&b""[..], true), (LATE, false)] {
        let (addr, tx) = one_shot(ANSWER, after, close);
        let pool = Pool::new(Duration::from_secs(5));
        let mut conn = pool.get(&addr).unwrap();
        assert_eq!(exchange_once(&mut conn), "ok");
        pool.put(conn);
        assert_eq!(pool.idle_count(&addr), 1, "quiet when put back: pooled");
        // Settled and quiet: the upstream is proven.
        thread::sleep(SETTLE);
        let conn = pool.get(&addr).unwrap();
        assert!(conn.reused);
        pool.put(conn);
        tx.send(()).unwrap();
        // Until the upstream's move arrives, the pooled connection is
        // quiet and handed out again; after, a new one takes its place.
        let until = Instant::now() + Duration::from_secs(5);
        let conn = loop {
            let conn = pool.get(&addr).unwrap();
            if !conn.reused || Instant::now() > until {
                break conn;
            }
            // Still quiet: the upstream's bytes are not here yet.
            pool.put(conn);
            thread::sleep(Duration::from_millis(5));
        };
        assert!(!conn.reused, "after {:?}", String::from_utf8_lossy(after));
        assert_eq!(pool.idle_count(&addr), 0);
    }
}
