//! Which header fields a proxy passes on (RFC 9110 §7.6): hop-by-hop
//! fields are dropped, the framing is re-made by the sender, and the
//! `Via`/`X-Forwarded-*` fields are added. Pure: fields in, fields out.

use crate::http::{list_items, trim_ows};

/// Fields that describe one connection, never the message (RFC 9110
/// §7.6.1, RFC 9112 §6.1 for Transfer-Encoding, and the legacy
/// `Keep-Alive` and `Proxy-Connection`). `Content-Length` is re-made from
/// the body by whoever writes the next hop, so it is dropped too.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "transfer-encoding",
    "content-length",
];

/// The pseudonym this proxy gives itself in `Via` (RFC 9110 §7.6.3).
pub const VIA_NAME: &str = "mpiweb";

/// Where a message came from, for the fields a proxy adds.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The downstream peer's address (`X-Forwarded-For`).
    pub client_ip: &'a str,
    /// `http` or `https` as the client spoke to us (`X-Forwarded-Proto`).
    pub proto: &'a str,
    /// The `Host` the client asked for (`X-Forwarded-Host`).
    pub host: Option<&'a str>,
    /// The HTTP minor version of the message received (`Via: 1.x mpiweb`).
    pub minor: u8,
    /// The request's id (`X-Request-Id`).
    pub request_id: &'a str,
}

/// The end-to-end fields of a request, in order, with the proxy's own
/// fields appended. Fields named in `Connection` are dropped as well.
pub fn forward_request_fields<'a, I>(fields: I, origin: &Origin<'_>) -> Vec<(String, Vec<u8>)>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let mut out = forward_response_fields(fields.clone(), origin.minor);
    append_list(
        &mut out,
        "X-Forwarded-For",
        origin.client_ip.as_bytes(),
        fields,
    );
    // These two describe this hop only: a client's own values are replaced.
    out.retain(|(n, _)| {
        !n.eq_ignore_ascii_case("x-forwarded-proto") && !n.eq_ignore_ascii_case("x-forwarded-host")
    });
    out.push(("X-Forwarded-Proto".into(), origin.proto.as_bytes().to_vec()));
    if let Some(host) = origin.host {
        out.push(("X-Forwarded-Host".into(), host.as_bytes().to_vec()));
    }
    // One id, the one this request goes by (the client's, if sensible).
    out.retain(|(n, _)| !n.eq_ignore_ascii_case("x-request-id"));
    out.push(("X-Request-Id".into(), origin.request_id.as_bytes().to_vec()));
    out
}

/// The end-to-end fields of a message, with `Via` added: all a response
/// needs, and where a request's fields start.
pub fn forward_response_fields<'a, I>(fields: I, minor: u8) -> Vec<(String, Vec<u8>)>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let mut out = end_to_end(fields.clone());
    append_list(
        &mut out,
        "Via",
        format!("1.{minor} {VIA_NAME}").as_bytes(),
        fields,
    );
    out
}

/// Every field that is not hop-by-hop, nor named by a `Connection` field.
fn end_to_end<'a, I>(fields: I) -> Vec<(String, Vec<u8>)>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let named: Vec<Vec<u8>> = fields
        .clone()
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| list_items(v).map(|t| t.to_ascii_lowercase()))
        .collect();
    fields
        .into_iter()
        .filter(|(n, _)| {
            let lower = n.to_ascii_lowercase();
            !HOP_BY_HOP.iter().any(|h| h.as_bytes() == lower.as_slice()) && !named.contains(&lower)
        })
        .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), v.to_vec()))
        .collect()
}

/// Add `value` to the list field `name`: after the values it already has
/// (joined into one line, RFC 9110 §5.3), or as a new field.
fn append_list<'a, I>(out: &mut Vec<(String, Vec<u8>)>, name: &str, value: &[u8], fields: I)
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let before: Vec<&[u8]> = fields
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| trim_ows(v))
        .filter(|v| !v.is_empty())
        .collect();
    out.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    let mut joined = before.join(&b", "[..]);
    if !joined.is_empty() {
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(value);
    out.push((name.to_string(), joined));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(raw: &[(&'static str, &'static str)]) -> Vec<(&'static [u8], &'static [u8])> {
        raw.iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect()
    }

    fn names(out: &[(String, Vec<u8>)]) -> Vec<String> {
        out.iter().map(|(n, _)| n.to_ascii_lowercase()).collect()
    }

    fn value<'a>(out: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
        out.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    const ORIGIN: Origin<'static> = Origin {
        client_ip: "127.0.0.9",
        proto: "http",
        host: Some("shop.example"),
        minor: 1,
        request_id: "rid-7",
    };

    #[test]
    fn hop_by_hop_fields_are_dropped() {
        let input = fields(&[
            ("Host", "shop.example"),
            ("Connection", "keep-alive, X-Secret"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-T"),
            ("Upgrade", "websocket"),
            ("Proxy-Authorization", "Basic abc"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "5"),
            ("X-Secret", "hidden"),
            ("Accept", "*/*"),
            ("Cookie", "a=1"),
        ]);
        let out = forward_request_fields(input, &ORIGIN);
        assert_eq!(
            names(&out),
            [
                "host",
                "accept",
                "cookie",
                "via",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-request-id"
            ]
        );
        assert_eq!(value(&out, "x-request-id"), Some("rid-7"));
        assert_eq!(value(&out, "via"), Some("1.1 mpiweb"));
        assert_eq!(value(&out, "x-forwarded-for"), Some("127.0.0.9"));
        assert_eq!(value(&out, "x-forwarded-proto"), Some("http"));
        assert_eq!(value(&out, "x-forwarded-host"), Some("shop.example"));
    }

    #[test]
    fn existing_lists_are_extended() {
        let input = fields(&[
            ("Via", "1.0 edge"),
            ("X-Forwarded-For", "127.0.0.2"),
            ("x-forwarded-for", " 127.0.0.3 "),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "spoofed.example"),
            ("X-Request-Id", "from-the-client"),
        ]);
        let mut origin = ORIGIN;
        origin.minor = 0;
        origin.host = None;
        let out = forward_request_fields(input, &origin);
        assert_eq!(value(&out, "via"), Some("1.0 edge, 1.0 mpiweb"));
        assert_eq!(
            value(&out, "x-forwarded-for"),
            Some("127.0.0.2, 127.0.0.3, 127.0.0.9")
        );
        assert_eq!(
            out.iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
                .count(),
            1
        );
        assert_eq!(value(&out, "x-forwarded-host"), None);
        assert_eq!(value(&out, "x-forwarded-proto"), Some("http"));
        // The id the request goes by replaces the client's field.
        assert_eq!(
            names(&out).iter().filter(|n| *n == "x-request-id").count(),
            1
        );
        assert_eq!(value(&out, "x-request-id"), Some("rid-7"));
    }

    #[test]
    fn responses_keep_end_to_end_fields_and_gain_via() {
        let input = fields(&[
            ("Content-Type", "text/plain"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "close"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ]);
        let out = forward_response_fields(input, 1);
        assert_eq!(
            names(&out),
            ["content-type", "set-cookie", "set-cookie", "via"]
        );
    }
}
