//! Table tests for `parse_request_head`.

use super::*;

fn parse(raw: &[u8]) -> Result<Option<(usize, RequestHead)>, Error> {
    parse_request_head(raw, &HeadLimits::default())
}

fn status_of(raw: &[u8]) -> Option<u16> {
    match parse(raw) {
        Ok(Some(_)) => Some(200),
        Ok(None) => None,
        Err(e) => e.status(),
    }
}

#[test]
fn status_table() {
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
        "X-A: b\r\n".repeat(100)
    );
    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
        "b".repeat(17000)
    );
    let cases: Vec<(&[u8], Option<u16>)> = vec![
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Some(200)),
        (b"GET / HTTP/1.1\nHost: a\n\n", Some(200)),
        (b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Some(200)),
        (b"GET / HTTP/1.0\r\n\r\n", Some(200)),
        (b"GET / HTTP/1.9\r\nHost: a\r\n\r\n", Some(200)),
        (
            b"GET http://x.example/p HTTP/1.1\r\nHost: x\r\n\r\n",
            Some(200),
        ),
        (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Some(200)),
        (
            b"CONNECT x.example:443 HTTP/1.1\r\nHost: x.example:443\r\n\r\n",
            Some(200),
        ),
        // incomplete heads ask for more
        (b"GET / HTTP/1.1\r\nHost: a\r\n", None),
        (b"GET / HT", None),
        (b"", None),
        // 400: Host rules
        (b"GET / HTTP/1.1\r\n\r\n", Some(400)),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Some(400)),
        (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Some(400)),
        (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Some(400)),
        // 400: header syntax
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", Some(400)),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
            Some(400),
        ),
        (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", Some(400)),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", Some(400)),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", Some(400)),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", Some(400)),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX\x00: a\r\n\r\n", Some(400)),
        (b"GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n", Some(400)),
        (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", Some(400)),
        // 400: request line
        (b"GET /\r\n\r\n", Some(400)),
        (b"GET\r\n\r\n", Some(400)),
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
        (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", Some(400)),
        (b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
        (b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
        (b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
        (b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
        (b"GET / http/1.1\r\nHost: a\r\n\r\n", Some(400)),
        (b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", Some(400)),
        (b"GET / HTTP/1\r\nHost: a\r\n\r\n", Some(400)),
        (b"GET / HTTP/0.9\r\n\r\n", Some(400)),
        (b"GET x HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
        (b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
        (b"GET ftp://x/ HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
        (b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n", Some(400)),
        // 505 and 501
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", Some(505)),
        (b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", Some(505)),
        (b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n", Some(501)),
        (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", Some(501)),
        // 414, 431
        (long_target.as_bytes(), Some(414)),
        (&long_target.as_bytes()[..8500], Some(414)),
        (many_headers.as_bytes(), Some(431)),
        (huge_header.as_bytes(), Some(431)),
        (&huge_header.as_bytes()[..16500], Some(431)),
        // 417
        (
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n",
            Some(417),
        ),
        // HTTP/1.0 ignores Expect
        (b"PUT / HTTP/1.0\r\nExpect: magic\r\n\r\n", Some(200)),
        // an empty port is allowed in Host; letters are not
        (b"GET / HTTP/1.1\r\nHost: a:\r\n\r\n", Some(200)),
        (b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", Some(400)),
        (b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", Some(200)),
    ];
    for (raw, want) in cases {
        assert_eq!(status_of(raw), want, "{:?}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn framing_table() {
    use BodyFraming::{Chunked, Length};
    let cases: &[(&[u8], Result<BodyFraming, u16>)] = &[
        (b"", Ok(BodyFraming::None)),
        (b"Content-Length: 5\r\n", Ok(Length(5))),
        (b"Content-Length: 0\r\n", Ok(Length(0))),
        (b"Content-Length:  7 \r\n", Ok(Length(7))),
        (b"Content-Length: +5\r\n", Err(400)),
        (b"Content-Length: -1\r\n", Err(400)),
        (b"Content-Length: 5, 5\r\n", Err(400)),
        (b"Content-Length: 0x5\r\n", Err(400)),
        (b"Content-Length: \r\n", Err(400)),
        (b"Content-Length: 99999999999999999999\r\n", Err(400)),
        (b"Content-Length: 5\r\nContent-Length: 5\r\n", Err(400)),
        (b"Content-Length: 5\r\nContent-Length: 6\r\n", Err(400)),
        (b"Transfer-Encoding: chunked\r\n", Ok(Chunked)),
        (b"Transfer-Encoding: Chunked\r\n", Ok(Chunked)),
        (
            b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            Err(400),
        ),
        (b"Transfer-Encoding: chunked, chunked\r\n", Err(400)),
        (b"Transfer-Encoding: gzip, chunked\r\n", Err(501)),
        (b"Transfer-Encoding: chunked, gzip\r\n", Err(501)),
        (b"Transfer-Encoding: identity\r\n", Err(501)),
        (
            b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            Err(501),
        ),
    ];
    for (extra, want) in cases {
        let mut raw = b"POST / HTTP/1.1\r\nHost: a\r\n".to_vec();
        raw.extend_from_slice(extra);
        raw.extend_from_slice(b"\r\n");
        let got = match parse(&raw) {
            Ok(Some((_, h))) => Ok(h.framing),
            Ok(None) => panic!("incomplete: {:?}", String::from_utf8_lossy(extra)),
            Err(e) => Err(e.status().unwrap_or(0)),
        };
        assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(extra));
    }
}

#[test]
fn transfer_encoding_in_http_1_0_is_refused() {
    let raw = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(status_of(raw), Some(400));
}

#[test]
fn keep_alive_table() {
    let cases: &[(&[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, Close\r\n\r\n",
            false,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
        (
            b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
            false,
        ),
    ];
    for (raw, want) in cases {
        let (_, head) = parse(raw).unwrap().unwrap();
        assert_eq!(head.keep_alive, *want, "{:?}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn parts_are_exposed() {
    let raw =
        b"GET /a/b?x=1 HTTP/1.1\r\nHost: h:80\r\nUser-Agent: t\r\nExpect: 100-continue\r\n\r\nNEXT";
    let (n, head) = parse(raw).unwrap().unwrap();
    assert_eq!(&raw[n..], b"NEXT");
    assert_eq!(head.method, Method::Get);
    assert_eq!(head.path_query(), "/a/b?x=1");
    assert_eq!(head.header_str("user-agent"), Some("t"));
    assert_eq!(head.header_str("HOST"), Some("h:80"));
    assert!(head.expect_continue);
    assert_eq!(head.request_line(), "GET /a/b?x=1 HTTP/1.1");
}

#[test]
fn absolute_form_targets() {
    let cases: &[(&[u8], &str, &str)] = &[
        (b"http://Example.COM/x?y", "example.com", "/x?y"),
        (b"http://example.com", "example.com", "/"),
        (b"http://example.com:8080?q", "example.com:8080", "/"),
        (b"HTTPS://e.x/", "e.x", "/"),
    ];
    for (target, authority, path) in cases {
        let mut raw = b"GET ".to_vec();
        raw.extend_from_slice(target);
        raw.extend_from_slice(b" HTTP/1.1\r\nHost: e\r\n\r\n");
        let (_, head) = parse(&raw).unwrap().unwrap();
        assert_eq!(
            head.target,
            Target::Absolute {
                authority: authority.to_string()
            }
        );
        assert_eq!(head.path_query(), *path);
    }
}

#[test]
fn split_at_every_byte_gives_the_same_head() {
    let raw = b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
    let (full_n, _) = parse(raw).unwrap().unwrap();
    for cut in 0..full_n {
        assert!(parse(&raw[..cut]).unwrap().is_none(), "cut at {cut}");
    }
    for cut in full_n..=raw.len() {
        let (n, head) = parse(&raw[..cut]).unwrap().unwrap();
        assert_eq!(n, full_n);
        assert_eq!(head.framing, BodyFraming::Length(3));
    }
}
