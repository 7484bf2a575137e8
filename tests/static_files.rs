//! Static file serving over real sockets: paths, listings, validators,
//! conditional and range requests, and files past 4 GiB.

mod common;

use common::{Server, Site};
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};

#[test]
fn traversal_and_symlink_escapes_are_refused() {
    let site = Site::new();
    let long_name = format!("/{}", "a".repeat(300));
    std::os::unix::fs::symlink("loop-b", site.root().join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", site.root().join("loop-b")).unwrap();
    let srv = Server::start(&site.root(), &[]);
    let cases: &[(&str, u16)] = &[
        ("/../secret.txt", 403),
        ("/%2e%2e/secret.txt", 403),
        ("/%2E%2E%2Fsecret.txt", 403),
        ("/list/../../secret.txt", 403),
        ("/..%5csecret.txt", 403),
        ("/list\\..\\..\\secret.txt", 403),
        ("/escape.txt", 403),
        ("/escape-dir/secret.txt", 403),
        ("/escape-dir/", 403),
        ("/hello.txt%00.html", 400),
        ("/%zz", 400),
        ("/inside-link.txt", 200),
        ("/loop-a", 403),
        ("/nope.txt", 404),
        ("/hello.txt/", 404),
        (long_name.as_str(), 404),
    ];
    for (path, want) in cases {
        let r = srv.get(path, "");
        assert_eq!(r.status, *want, "{path}");
        assert!(!r.text().contains("TOP SECRET"), "{path} leaked the secret");
    }
}

#[test]
fn dot_segments_inside_the_root_are_removed_as_nginx_does() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &[]);
    let home = srv.get("/", "").text();
    let cases: &[(&str, &str)] = &[
        ("/list/../", "home"),
        ("/list/..", "home"),
        ("/list/%2e%2e/", "home"),
        ("/./", "home"),
        ("/list/../hello.txt", "hello world"),
        ("/list/%2E%2e/hello.txt", "hello world"),
        ("/img/./../list/./plain.txt", "plain"),
        ("/list/subdir/../../withindex/./", "inner index"),
        ("/hello.txt?next=/../x", "hello world"),
    ];
    for (path, want) in cases {
        let r = srv.get(path, "");
        assert_eq!(r.status, 200, "{path}");
        assert!(r.text().contains(want), "{path}: {}", r.text());
    }
    assert!(home.contains("home"));
    // `/list/.` is the directory `list/`: its listing, not a redirect.
    let r = srv.get("/list/.", "");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("plain.txt"));
    // With curl as a user types it (curl would remove them itself).
    let out = std::process::Command::new("curl")
        .args(["-s", "--path-as-is", &srv.url("/withindex/../hello.txt")])
        .output()
        .expect("curl");
    assert_eq!(out.stdout, b"hello world\n");
}

#[test]
fn a_file_from_the_future_is_last_modified_now() {
    let site = Site::new();
    let file = site.root().join("future.txt");
    std::fs::write(&file, b"tomorrow\n").unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(4 * 365 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let srv = Server::start(&site.root(), &[]);
    let r = srv.get("/future.txt", "");
    assert_eq!(r.status, 200);
    let date = mpiweb::http::date::parse_http_date(r.header("date").unwrap()).unwrap();
    let modified = mpiweb::http::date::parse_http_date(r.header("last-modified").unwrap()).unwrap();
    assert!(
        modified <= date,
        "Last-Modified {modified:?} after Date {date:?}"
    );
}

#[test]
fn directories_index_redirect_and_listing() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &[]);
    let r = srv.get("/", "");
    assert_eq!((r.status, r.text().contains("home")), (200, true));
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));

    let r = srv.get("/withindex?x=1", "");
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("/withindex/?x=1"))
    );
    // Never `//withindex/`, which a browser would read as another host.
    let r = srv.get("//withindex", "");
    assert_eq!((r.status, r.header("location")), (301, Some("/withindex/")));
    let r = srv.get("/withindex/", "");
    assert_eq!(r.text(), "inner index\n");

    let r = srv.get("/list/", "");
    assert_eq!(r.status, 200);
    let page = r.text();
    assert!(
        page.contains("<a href=\"a%26b%20%3Cc%3E.txt\">a&amp;b &lt;c&gt;.txt</a>"),
        "{page}"
    );
    assert!(page.contains("<a href=\"subdir/\">subdir/</a>"), "{page}");
    assert!(!page.contains(".hidden"));
    assert!(page.contains("in-link.txt"), "{page}");
    assert!(
        !page.contains("out-link.txt"),
        "a link out of the root is not listed"
    );
    assert!(!page.contains("<c>"), "names are escaped");
    // The escaped link leads to the file.
    assert_eq!(srv.get("/list/a%26b%20%3Cc%3E.txt", "").text(), "escaped\n");

    let quiet = Server::start(&site.root(), &["--no-listing"]);
    assert_eq!(quiet.get("/list/", "").status, 403);
    assert_eq!(quiet.get("/withindex/", "").status, 200);
}

#[test]
fn mime_types_and_head() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &[]);
    let cases = [
        ("/hello.txt", "text/plain; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/data.json", "application/json; charset=utf-8"),
        ("/img/dot.png", "image/png"),
    ];
    for (path, ctype) in cases {
        let get = srv.get(path, "");
        assert_eq!(get.header("content-type"), Some(ctype), "{path}");
        let head = srv.one(
            format!("HEAD {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let raw = srv.raw(
            format!("HEAD {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(raw.ends_with(b"\r\n\r\n"), "HEAD sent a body");
        for h in [
            "content-type",
            "content-length",
            "etag",
            "last-modified",
            "accept-ranges",
        ] {
            assert_eq!(head.header(h), get.header(h), "{path} {h}");
        }
    }
}

#[test]
fn conditional_requests() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &[]);
    let r = srv.get("/hello.txt", "");
    let etag = r.header("etag").unwrap().to_string();
    let modified = r.header("last-modified").unwrap().to_string();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong: {etag}"
    );

    let cases: Vec<(String, u16)> = vec![
        (format!("If-None-Match: {etag}\r\n"), 304),
        (format!("If-None-Match: \"other\", {etag}\r\n"), 304),
        ("If-None-Match: *\r\n".into(), 304),
        ("If-None-Match: \"other\"\r\n".into(), 200),
        (format!("If-Modified-Since: {modified}\r\n"), 304),
        (
            "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n".into(),
            200,
        ),
        ("If-Modified-Since: not a date\r\n".into(), 200),
        (
            format!("If-None-Match: \"other\"\r\nIf-Modified-Since: {modified}\r\n"),
            200,
        ),
        (format!("If-Match: {etag}\r\n"), 200),
        ("If-Match: \"other\"\r\n".into(), 412),
        (
            "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n".into(),
            412,
        ),
    ];
    for (hdr, want) in cases {
        let r = srv.get("/hello.txt", &hdr);
        assert_eq!(r.status, want, "{hdr}");
        if want == 304 {
            assert!(r.body.is_empty());
            assert_eq!(r.header("etag"), Some(etag.as_str()));
        }
    }
}

#[test]
fn range_requests() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &[]);
    let etag = srv
        .get("/hello.txt", "")
        .header("etag")
        .unwrap()
        .to_string();
    // hello.txt is "hello world\n": 12 bytes.
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        (
            "Range: bytes=0-4\r\n".into(),
            206,
            "hello",
            Some("bytes 0-4/12"),
        ),
        (
            "Range: bytes=6-\r\n".into(),
            206,
            "world\n",
            Some("bytes 6-11/12"),
        ),
        (
            "Range: bytes=-6\r\n".into(),
            206,
            "world\n",
            Some("bytes 6-11/12"),
        ),
        (
            "Range: bytes=-100\r\n".into(),
            206,
            "hello world\n",
            Some("bytes 0-11/12"),
        ),
        (
            "Range: bytes=6-100\r\n".into(),
            206,
            "world\n",
            Some("bytes 6-11/12"),
        ),
        ("Range: bytes=12-\r\n".into(), 416, "", Some("bytes */12")),
        ("Range: bytes=-0\r\n".into(), 416, "", Some("bytes */12")),
        ("Range: bytes=5-2\r\n".into(), 200, "hello world\n", None),
        (
            "Range: bytes=0-1,4-5\r\n".into(),
            200,
            "hello world\n",
            None,
        ),
        ("Range: lines=1-2\r\n".into(), 200, "hello world\n", None),
        (
            format!("Range: bytes=0-4\r\nIf-Range: {etag}\r\n"),
            206,
            "hello",
            Some("bytes 0-4/12"),
        ),
        (
            "Range: bytes=0-4\r\nIf-Range: \"old\"\r\n".into(),
            200,
            "hello world\n",
            None,
        ),
    ];
    for (hdr, status, body, range) in cases {
        let r = srv.get("/hello.txt", &hdr);
        assert_eq!(r.status, status, "{hdr}");
        assert_eq!(r.header("content-range"), range, "{hdr}");
        if status != 416 {
            assert_eq!(r.text(), body, "{hdr}");
            assert_eq!(r.header("accept-ranges"), Some("bytes"));
        }
    }
    // An empty file has no satisfiable range.
    assert_eq!(srv.get("/empty.txt", "Range: bytes=0-\r\n").status, 416);
    assert_eq!(srv.get("/empty.txt", "").status, 200);
}

#[test]
fn files_over_4_gib_and_offsets_past_2_32() {
    let site = Site::new();
    let path = site.root().join("huge.bin");
    let len: u64 = 5 << 30; // 5 GiB, sparse: only the marker takes disk
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.set_len(len).unwrap();
    let at = (1u64 << 32) + 5;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(b"MARK").unwrap();
    drop(f);
    let srv = Server::start(&site.root(), &[]);
    let head = srv.one(b"HEAD /huge.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(
        head.header("content-length"),
        Some(len.to_string().as_str())
    );
    let r = srv.get("/huge.bin", &format!("Range: bytes={at}-{}\r\n", at + 3));
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"MARK");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {at}-{}/{len}", at + 3).as_str())
    );
    let r = srv.get("/huge.bin", "Range: bytes=-2\r\n");
    assert_eq!((r.status, r.body.as_slice()), (206, &[0u8, 0][..]));
}

#[test]
fn cached_files_follow_the_disk() {
    let site = Site::new();
    let srv = Server::start(&site.root(), &[]);
    let page = site.root().join("page.txt");
    std::fs::write(&page, b"version one\n").unwrap();
    for _ in 0..3 {
        assert_eq!(srv.get("/page.txt", "").text(), "version one\n");
    }
    let old_etag = srv.get("/page.txt", "").header("etag").unwrap().to_string();
    // Same length, new content: the modification time tells them apart.
    std::fs::write(&page, b"version two\n").unwrap();
    let r = srv.get("/page.txt", "");
    assert_eq!(r.text(), "version two\n");
    assert_ne!(r.header("etag"), Some(old_etag.as_str()));
    // A range of a cached file.
    assert_eq!(srv.get("/page.txt", "Range: bytes=8-10\r\n").text(), "two");

    // A cached path replaced by a symlink that leaves the root.
    std::fs::remove_file(&page).unwrap();
    std::os::unix::fs::symlink(site.dir.path().join("secret.txt"), &page).unwrap();
    let r = srv.get("/page.txt", "");
    assert_eq!(r.status, 403);
    assert!(!r.text().contains("TOP SECRET"));

    // Deleted: 404.
    std::fs::remove_file(&page).unwrap();
    assert_eq!(srv.get("/page.txt", "").status, 404);
}

#[test]
fn special_files_are_refused_without_opening_them() {
    let site = Site::new();
    let fifo = site.root().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let srv = Server::start(&site.root(), &[]);
    // Opening a FIFO for reading would block until a writer came.
    assert_eq!(srv.get("/pipe", "").status, 403);
}
