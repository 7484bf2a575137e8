//! A store PUT too big for rank 0's cache streams to its replicas as it
//! comes, within each replica's credit: rank 0 never holds it whole (its
//! peak memory grows by far less than the body), the copies are whole and
//! read back byte for byte, and a body cut short leaves nothing behind.
//! Under `mpirun -np 3` (two replicas) and alone (rank 0 its own replica).

mod common;

use common::upstream::{pattern_fill, pattern_mismatch};
use common::{eventually, read_to_close, Resp, Server, Site};
use std::io::{Read, Write};
use std::path::Path;
use std::thread;
use std::time::Duration;

/// The big document: four times what rank 0 may grow by.
const BIG: u64 = 256 << 20;
/// How much rank 0's peak resident memory may grow while it streams.
const GROWTH_LIMIT_KIB: u64 = 64 << 10;

/// Peak resident memory of `pid`, KiB (`VmHWM`).
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// PUT `sent` pattern bytes of a body announced as `length`, written from
/// another thread while this one reads the answer (or the close).
fn put_pattern(srv: &Server, path: &str, length: u64, sent: u64) -> Option<Resp> {
    let mut s = srv.connect();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut w = s.try_clone().unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n"
    );
    let writer = thread::spawn(move || {
        w.write_all(head.as_bytes()).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < sent {
            let n = (sent - at).min(buf.len() as u64) as usize;
            pattern_fill(at, &mut buf[..n]);
            if w.write_all(&buf[..n]).is_err() {
                return;
            }
            at += n as u64;
        }
        if sent < length {
            // Cut short: the client leaves.
            let _ = w.shutdown(std::net::Shutdown::Both);
        }
    });
    let out = read_to_close(&mut s);
    writer.join().unwrap();
    Resp::parse(&out, false).map(|(r, _)| r)
}

/// GET `path` and check it is `BIG` pattern bytes, reading as it comes.
fn get_pattern(srv: &Server, path: &str) {
    let mut s = srv.connect();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let body_start = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the head");
        head.extend_from_slice(&buf[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..body_start]).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(&format!("Content-Length: {BIG}")), "{text}");
    let mut at = 0u64;
    let first = head[body_start..].to_vec();
    let check = |data: &[u8], at: &mut u64| {
        assert_eq!(pattern_mismatch(*at, data), None, "at {at}");
        *at += data.len() as u64;
    };
    check(&first, &mut at);
    while at < BIG {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {at} bytes");
        check(&buf[..n], &mut at);
    }
    assert_eq!(at, BIG);
}

/// Files under `dir/rank-*/tmp`: writes not committed.
fn temporary(data: &Path) -> usize {
    std::fs::read_dir(data)
        .into_iter()
        .flatten()
        .flatten()
        .map(|r| {
            std::fs::read_dir(r.path().join("tmp"))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn a_big_put_streams_through_rank_0_without_being_held_there() {
    let site = Site::new();
    for mpi in [true, false] {
        let data = tempfile::tempdir().unwrap();
        let data_arg = data.path().to_string_lossy().into_owned();
        let args = [
            "--store",
            "/store/",
            "--data",
            &data_arg,
            "--store-max-size",
            "1073741824",
        ];
        let srv = match mpi {
            true => Server::start_mpi(3, &site.root(), &args),
            false => Server::start(&site.root(), &args),
        };
        assert!(eventually(Duration::from_secs(30), || srv
            .get("/store/", "")
            .status
            == 200));
        let before = peak_kib(srv.rank0_pid);
        let r = put_pattern(&srv, "/store/big.bin", BIG, BIG).expect("an answer");
        assert_eq!(r.status, 201, "mpi={mpi}: {}", r.text());
        let grew = peak_kib(srv.rank0_pid).saturating_sub(before);
        eprintln!(
            "mpi={mpi}: rank 0's peak grew by {grew} KiB for {} MiB",
            BIG >> 20
        );
        assert!(
            grew < GROWTH_LIMIT_KIB,
            "mpi={mpi}: rank 0 grew by {grew} KiB for a {} MiB body",
            BIG >> 20
        );
        get_pattern(&srv, "/store/big.bin");

        // Cut short: no answer but the close, nothing stored, no
        // temporary file left.
        let cut = put_pattern(&srv, "/store/cut.bin", BIG, 8 << 20);
        if let Some(r) = cut {
            assert!(r.status >= 400, "mpi={mpi}: {}", r.status);
        }
        assert_eq!(srv.get("/store/cut.bin", "").status, 404);
        assert!(
            eventually(Duration::from_secs(10), || temporary(data.path()) == 0),
            "mpi={mpi}: temporary files left"
        );
        // The big one is still whole.
        get_pattern(&srv, "/store/big.bin");
    }
}
