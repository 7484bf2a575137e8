//! The parsers' tests. This bench has no libtest harness (`harness = false`), so
//! `cargo test --bench compare` reaches them through `main` and `run_all`.

use super::*;

/// Each test by name; a test fails by panicking.
const ALL: &[(&str, fn())] = &[
    ("parse_wrk_time_us", parse_wrk_time_us_table),
    ("parse_wrk_with_latency", parse_wrk_with_latency),
    ("parse_wrk_without_latency", parse_wrk_without_latency),
    ("parse_wrk_error_count", parse_wrk_error_count),
    ("parse_failover_log", parse_failover_log_table),
    ("parse_only_pool", parse_only_pool),
    ("parse_only_store", parse_only_store),
    ("store_body_and_scripts", store_body_and_scripts),
    ("dechunk", dechunk_table),
    ("complete_reply", complete_reply_table),
    ("mount_fs_type", mount_fs_type_table),
];

pub(super) fn run_all() -> ExitCode {
    let mut failed = 0;
    for (name, test) in ALL {
        let ok = std::panic::catch_unwind(test).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        failed += usize::from(!ok);
    }
    println!(
        "test result: {} passed, {failed} failed",
        ALL.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_wrk_time_us_table() {
    let table: &[(&str, Option<f64>)] = &[
        ("78.00us", Some(78.0)),
        ("1.02ms", Some(1020.0)),
        ("2.00s", Some(2_000_000.0)),
        ("1.50m", Some(90_000_000.0)),
        ("1.00h", Some(3_600_000_000.0)),
        ("0.00us", Some(0.0)),
        ("78.00", None),
        ("78.00ns", None),
        ("us", None),
        ("", None),
    ];
    for &(text, want) in table {
        let got = parse_wrk_time_us(text);
        let close = match (got, want) {
            (Some(g), Some(w)) => (g - w).abs() < 1e-6 * w.max(1.0),
            (None, None) => true,
            _ => false,
        };
        assert!(close, "{text:?}: got {got:?}, want {want:?}");
    }
}

/// wrk 4.1.0's output with `--latency`, one connection.
const WITH_LATENCY: &str = "\
Running 3s test @ http://127.0.0.1:8080/small.html
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    80.12us   25.40us   1.02ms   97.50%
    Req/Sec    12.10k   400.00    12.80k    70.00%
  Latency Distribution
     50%   78.00us
     75%   82.00us
     90%   90.00us
     99%    1.02ms
  36300 requests in 3.00s, 26.30MB read
Requests/sec:  12099.80
Transfer/sec:      8.77MB
";

fn parse_wrk_with_latency() {
    let w = parse_wrk(WITH_LATENCY).expect("figures");
    assert_eq!(w.p50_us, Some(78.0));
    assert!((w.req_per_sec - 12099.8).abs() < 1e-9);
    assert!(w.errors.is_empty());
    // A median in milliseconds, and a bad unit that makes the output unreadable.
    let slow = WITH_LATENCY.replace("50%   78.00us", "50%    1.25ms");
    assert_eq!(parse_wrk(&slow).and_then(|w| w.p50_us), Some(1250.0));
    let bad = WITH_LATENCY.replace("50%   78.00us", "50%   78.00xs");
    assert!(parse_wrk(&bad).is_none());
}

fn parse_wrk_without_latency() {
    // No "Latency Distribution": no median, even though "+/- Stdev" has percents.
    let plain: String = WITH_LATENCY
        .lines()
        .filter(|l| !l.contains("Latency Distribution") && !l.trim_start().starts_with("50%"))
        .map(|l| format!("{l}\n"))
        .collect();
    let w = parse_wrk(&plain).expect("figures");
    assert_eq!(w.p50_us, None);
    // A "50%" line outside the section is not a median.
    let stray = format!("50%   1.00ms\n{plain}");
    assert_eq!(parse_wrk(&stray).and_then(|w| w.p50_us), None);
}

fn parse_wrk_error_count() {
    let w = parse_wrk(WITH_LATENCY).expect("figures");
    assert_eq!(w.error_count, 0);
    let with_errors = WITH_LATENCY.replace(
        "Requests/sec:",
        "  Socket errors: connect 2, read 12, write 0, timeout 3\n  \
         Non-2xx or 3xx responses: 5\nRequests/sec:",
    );
    let w = parse_wrk(&with_errors).expect("figures");
    assert_eq!(w.error_count, 22);
    assert_eq!(w.errors_cell(), "connect 2, read 12, timeout 3, non-2xx 5");
    // A count that is not a number makes the output unreadable rather than undercounted.
    let bad = WITH_LATENCY.replace(
        "Requests/sec:",
        "Non-2xx or 3xx responses: many\nRequests/sec:",
    );
    assert!(parse_wrk(&bad).is_none());
}

fn parse_failover_log_table() {
    let table: &[(&str, u64, Option<f64>)] = &[
        ("", 0, None),
        // The readiness probe and health checks send no X-Bench header.
        ("1700000012.100 -\n1700000012.900 -\n", 0, None),
        (
            "1700000012.100 -\n1700000013.250 failover\n1700000013.200 failover\n",
            2,
            Some(1_700_000_013.2),
        ),
        ("1700000013.250 failover-not\nfailover\n\n", 0, None),
        ("bad failover\n", 1, None),
    ];
    for &(text, want_count, want_first) in table {
        let (count, first) = parse_failover_log(text);
        assert_eq!(count, want_count, "{text:?}");
        let close = match (first, want_first) {
            (Some(g), Some(w)) => (g - w).abs() < 1e-3,
            (None, None) => true,
            _ => false,
        };
        assert!(close, "{text:?}: got {first:?}, want {want_first:?}");
    }
}

fn parse_only_pool() {
    let (only, rows) = parse_only("pool").expect("pool");
    assert_eq!((only, rows), (None, vec![Row::Pool]));
    let (only, rows) = parse_only("pool,mpiweb").expect("pool,mpiweb");
    assert_eq!((only, rows), (Some(Kind::Mpiweb), vec![Row::Pool]));
    let (_, rows) = parse_only("proxy").expect("proxy");
    assert!(!rows.contains(&Row::Pool));
    let (_, rows) = parse_only("").expect("all");
    assert!(rows.contains(&Row::Pool));
    assert!(parse_only("pools").is_err());
}

fn parse_only_store() {
    let (only, rows) = parse_only("store,nginx").expect("store,nginx");
    assert_eq!((only, rows), (Some(Kind::Nginx), vec![Row::Store]));
    let (_, rows) = parse_only("").expect("all");
    assert!(rows.contains(&Row::Store));
    assert!(Row::Store.needs_mpirun() && Row::Store.uses_mpirun());
    assert!(!Row::Pool.needs_mpirun());
}

fn store_body_and_scripts() {
    let body = store_body();
    assert_eq!(body.len(), STORE_DOC_SIZE);
    assert_eq!(&body[..3], b"abc");
    assert_eq!(body[63], b'\n');
    assert!(body.iter().all(|b| b.is_ascii_lowercase() || *b == b'\n'));
    let put = store_script("PUT", Some(Path::new("/tmp/x/store-body.bin")));
    assert!(put.contains("io.open([==[/tmp/x/store-body.bin]==], \"rb\")"));
    assert!(put.contains("wrk.format(\"PUT\", \"/store/doc-\" .. (i - 1), headers, body)"));
    assert!(put.contains("local docs = 1000\n"));
    assert!(put.contains("-- mpiweb bench, store rows: PUT /store/doc-0 to /store/doc-999"));
    let get = store_script("GET", None);
    assert!(get.contains("local body = nil\n") && !get.contains("io.open"));
    assert!(get.contains("wrk.format(\"GET\""));
}

fn dechunk_table() {
    let table: &[(&[u8], Option<&[u8]>)] = &[
        (b"0\r\n\r\n", Some(b"")),
        (b"3\r\nabc\r\n0\r\n\r\n", Some(b"abc")),
        (
            b"3;x=1\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n",
            Some(b"abc0123456789"),
        ),
        (b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", Some(b"abc")),
        (b"3\r\nabc\r\n0\r\n", None),
        (b"3\r\nab", None),
        (b"3\r\nabcd\r\n0\r\n\r\n", None),
        (b"zz\r\n", None),
        (b"", None),
    ];
    for &(data, want) in table {
        let got = dechunk(data);
        assert_eq!(got.as_deref(), want, "{:?}", String::from_utf8_lossy(data));
    }
}

fn complete_reply_table() {
    let ok = b"HTTP/1.1 200 OK\r\nETag: \"5f\"\r\nContent-Length: 3\r\n\r\nabc";
    let r = complete_reply("GET", ok, false).expect("complete");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
    assert_eq!(r.header("etag"), Some("\"5f\""));
    assert!(complete_reply("GET", &ok[..ok.len() - 1], false).is_none());
    // No body for 204, nor for HEAD whatever Content-Length says.
    let created = b"HTTP/1.1 204 No Content\r\nETag: \"60\"\r\n\r\n";
    let r = complete_reply("PUT", created, false).expect("204");
    assert_eq!((r.status, r.body.len()), (204, 0));
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
    assert!(complete_reply("HEAD", head, false).is_some());
    // A body to the end of the connection is complete only at EOF.
    let to_eof = b"HTTP/1.1 200 OK\r\n\r\nabc";
    assert!(complete_reply("GET", to_eof, false).is_none());
    assert_eq!(
        complete_reply("GET", to_eof, true).map(|r| r.body),
        Some(b"abc".to_vec())
    );
    let chunked = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
    assert_eq!(
        complete_reply("PUT", chunked, false).map(|r| r.body),
        Some(b"ok".to_vec())
    );
}

fn mount_fs_type_table() {
    let mounts = "\
/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
tmpfs /tmp tmpfs rw 0 0
tmpfs /tmpx tmpfs rw 0 0
overlay /tmp overlay rw 0 0
";
    let table: &[(&str, Option<&str>)] = &[
        ("/work/main", Some("ext4")),
        ("/tmp/mpiweb-bench-1", Some("overlay")),
        ("/tmpfoo/a", Some("ext4")),
        ("/proc/1", Some("proc")),
        ("/", Some("ext4")),
    ];
    for &(path, want) in table {
        assert_eq!(
            mount_fs_type(mounts, Path::new(path)).as_deref(),
            want,
            "{path}"
        );
    }
    assert_eq!(mount_fs_type("", Path::new("/a")), None);
}
