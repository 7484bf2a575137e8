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
fn connections_are_kept_and_reused() {
    let (addr, accepted) = upstream(false);
    let pool = Pool::new(Duration::from_secs(5));
    for round in 0..3 {
        let mut conn = pool.get(&addr).unwrap();
        assert_eq!(conn.reused, round > 0);
        conn.send_head(Method::Get, b"/", &fields(), BodyFraming::None)
            .unwrap();
        let (head, body) = answer(&mut conn, Method::Get);
        assert_eq!(
            (head.status, body.as_str(), head.keep_alive),
            (200, "0", true)
        );
        pool.put(conn);
        assert_eq!(pool.idle_count(&addr), 1);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
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
