//! A small HTTP client on std: one-shot GETs and requests, reading responses, and
//! the sanity check each server passes before it is measured.

use super::*;

pub(super) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub(super) fn get_request(port: u16, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: mpiweb-bench\r\n\r\n")
}

/// What the status line and headers of a response say.
pub(super) struct Head {
    pub(super) status: u16,
    pub(super) content_length: Option<u64>,
    chunked: bool,
    /// Bytes up to and including the blank line.
    pub(super) len: usize,
}

/// Parses a response head once it is complete; a malformed one gets status 0.
pub(super) fn parse_head(buf: &[u8]) -> Option<Head> {
    let len = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..len]);
    let mut lines = text.split("\r\n");
    let mut status_line = lines.next().unwrap_or("").split_whitespace();
    let status = match (status_line.next(), status_line.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code.parse().unwrap_or(0),
        _ => 0,
    };
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
        len,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    Some(head)
}

/// How one response ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// 200 with the whole body of the expected length.
    Ok,
    /// A complete response with another status.
    BadStatus(u16),
    /// A complete 200 whose body length is not the file's.
    BadLength,
    /// The connection closed before the response was complete.
    Truncated,
    /// Reset or another socket error.
    Error,
    /// No complete response by the deadline.
    TimedOut,
}

/// Judges the bytes read so far; None while more are needed.
pub(super) fn judge(buf: &[u8], eof: bool, expected: u64) -> Option<Outcome> {
    let Some(head) = parse_head(buf) else {
        return eof.then_some(Outcome::Truncated);
    };
    if head.status == 0 {
        // Not HTTP: no point waiting for a body.
        return Some(Outcome::BadStatus(0));
    }
    let body = (buf.len() - head.len) as u64;
    let verdict = |len_ok: bool| {
        if head.status != 200 {
            Outcome::BadStatus(head.status)
        } else if len_ok {
            Outcome::Ok
        } else {
            Outcome::BadLength
        }
    };
    if let Some(len) = head.content_length {
        return if body >= len {
            Some(verdict(len == expected))
        } else {
            eof.then_some(Outcome::Truncated)
        };
    }
    if head.chunked {
        // Not decoded: the last-chunk marker is enough to know it is complete.
        return if buf.ends_with(b"0\r\n\r\n") {
            Some(verdict(true))
        } else {
            eof.then_some(Outcome::Truncated)
        };
    }
    // Neither: the body runs to the end of the connection.
    eof.then(|| verdict(body == expected))
}

/// Result of a single GET, used to check a server before measuring it.
pub(super) struct Reply {
    pub(super) status: u16,
    content_length: Option<u64>,
    body_len: u64,
}

/// One GET on a fresh connection; with `want_body` false it returns once the head is in.
fn http_get(port: u16, path: &str, want_body: bool, timeout: Duration) -> BoxResult<Reply> {
    http_get_at(loopback(port), path, want_body, timeout)
}

/// The same at `addr`.
pub(super) fn http_get_at(
    addr: SocketAddr,
    path: &str,
    want_body: bool,
    timeout: Duration,
) -> BoxResult<Reply> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(get_request(addr.port(), path).as_bytes())?;
    let mut buf = Vec::new();
    let mut block = [0u8; 16 * 1024];
    loop {
        if let Some(head) = parse_head(&buf) {
            let body_len = (buf.len() - head.len) as u64;
            let done = !want_body || head.content_length.is_some_and(|n| body_len >= n);
            if done {
                return Ok(Reply {
                    status: head.status,
                    content_length: head.content_length,
                    body_len,
                });
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("GET {path}: no complete response within {timeout:?}").into());
        }
        let n = stream.read(&mut block)?;
        if n == 0 {
            return Err(format!("GET {path}: connection closed before a complete response").into());
        }
        buf.extend_from_slice(&block[..n]);
    }
}

/// A whole response of `http_request`.
pub(super) struct FullReply {
    pub(super) status: u16,
    /// Header fields in the order received, names as sent.
    headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub(super) body: Vec<u8>,
}

impl FullReply {
    /// The first header field of that name (any case).
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`), with a body by Content-Length
/// when given; reads the whole response, within `timeout`.
pub(super) fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> BoxResult<FullReply> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&loopback(port), timeout)?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: mpiweb-bench\r\n\
         Connection: close\r\n"
    );
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/octet-stream\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&bytes)?;
    let mut buf = Vec::new();
    let mut block = [0u8; 16 * 1024];
    loop {
        if let Some(reply) = complete_reply(method, &buf, false) {
            return Ok(reply);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{method} {path}: no complete response within {timeout:?}").into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut block) {
            Ok(0) => {
                return complete_reply(method, &buf, true).ok_or_else(|| {
                    format!("{method} {path}: connection closed before a complete response").into()
                });
            }
            Ok(n) => buf.extend_from_slice(&block[..n]),
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{method} {path}: {e}").into()),
        }
    }
}

/// The response in `buf` once it is complete (`eof`: the connection has closed).
pub(super) fn complete_reply(method: &str, buf: &[u8], eof: bool) -> Option<FullReply> {
    let head = parse_head(buf)?;
    let rest = &buf[head.len..];
    let no_body =
        method == "HEAD" || matches!(head.status, 100..=199 | 204 | 304) || head.status == 0;
    let body = if no_body {
        Vec::new()
    } else if let Some(len) = head.content_length {
        let len = usize::try_from(len).ok()?;
        rest.get(..len)?.to_vec()
    } else if head.chunked {
        dechunk(rest)?
    } else if eof {
        rest.to_vec()
    } else {
        return None;
    };
    let text = String::from_utf8_lossy(&buf[..head.len]);
    let headers = text
        .split("\r\n")
        .skip(1)
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_string(), value.trim().to_string()))
        })
        .collect();
    Some(FullReply {
        status: head.status,
        headers,
        body,
    })
}

/// The body of a chunked message once it is whole (None while more is needed, or malformed).
pub(super) fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = line.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            // The trailer section: empty, or fields up to a blank line.
            let done = data.starts_with(b"\r\n") || data.windows(4).any(|w| w == b"\r\n\r\n");
            return done.then_some(body);
        }
        if data.len() < size + 2 || &data[size..size + 2] != b"\r\n" {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Checks that the small file (and with `with_big` the head of the big one) is
/// served as expected; returns what is wrong, if anything.
pub(super) fn sanity_check(port: u16, with_big: bool) -> Vec<String> {
    let timeout = Duration::from_secs(5);
    let mut problems = Vec::new();
    match http_get(port, "/small.html", true, timeout) {
        Ok(r) if r.status == 200 && r.body_len == SMALL_SIZE as u64 => {}
        Ok(r) => problems.push(format!(
            "GET /small.html gave status {} with a {}-byte body (expected 200, {SMALL_SIZE})",
            r.status, r.body_len
        )),
        Err(e) => problems.push(format!("GET /small.html failed: {e}")),
    }
    if !with_big {
        return problems;
    }
    match http_get(port, "/big.bin", false, timeout) {
        Ok(r) if r.status == 200 && r.content_length == Some(BIG_SIZE) => {}
        Ok(r) => problems.push(format!(
            "GET /big.bin gave status {} with Content-Length {:?} (expected 200, {BIG_SIZE})",
            r.status, r.content_length
        )),
        Err(e) => problems.push(format!("GET /big.bin failed: {e}")),
    }
    problems
}

/// A read timeout shows as WouldBlock or TimedOut depending on the platform.
pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
