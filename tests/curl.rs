//! The server as curl sees it: real curl, real sockets.

mod common;

use common::{Server, Site};
use std::process::Command;

/// Run curl with `args`; return (stdout, stderr).
fn curl(args: &[&str]) -> (Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl is installed (make test installs it)");
    (
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn code(args: &[&str]) -> String {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    all.extend_from_slice(args);
    String::from_utf8(curl(&all).0).unwrap()
}

#[test]
fn curl_gets_pages_ranges_and_conditionals() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &[]);
    let (body, _) = curl(&[&srv.url("/hello.txt")]);
    assert_eq!(body, b"hello world\n");
    assert_eq!(code(&[&srv.url("/")]), "200");
    assert_eq!(code(&[&srv.url("/nope")]), "404");
    assert_eq!(code(&["--path-as-is", &srv.url("/../secret.txt")]), "403");
    assert_eq!(code(&["-0", &srv.url("/hello.txt")]), "200");
    let (body, _) = curl(&["-r", "0-4", &srv.url("/hello.txt")]);
    assert_eq!(body, b"hello");
    let (head, _) = curl(&["-I", &srv.url("/hello.txt")]);
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .expect("ETag")
        .to_string();
    assert_eq!(
        code(&[
            "-H",
            &format!("If-None-Match: {etag}"),
            &srv.url("/hello.txt")
        ]),
        "304"
    );
    // -L follows the directory redirect.
    let (body, _) = curl(&["-L", &srv.url("/withindex")]);
    assert_eq!(body, b"inner index\n");
}

#[test]
fn curl_reuses_the_connection() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &[]);
    let (body, err) = curl(&["-v", &srv.url("/hello.txt"), &srv.url("/style.css")]);
    assert_eq!(body, b"hello world\nbody{}\n");
    assert!(err.contains("Re-using existing connection"), "{err}");
}

#[test]
fn curl_downloads_a_large_file_intact() {
    let site = Site::new();
    // 48 MiB of a pattern that differs at every offset modulo a prime.
    let data: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
        .collect();
    std::fs::write(site.root().join("big.bin"), &data).unwrap();
    let srv = Server::start(&site.root(), &[]);
    let (body, err) = curl(&[&srv.url("/big.bin")]);
    assert_eq!(body.len(), data.len(), "{err}");
    assert!(body == data, "content differs");
    let (part, _) = curl(&["-r", "40000000-40000099", &srv.url("/big.bin")]);
    assert_eq!(part, &data[40_000_000..40_000_100]);
}
