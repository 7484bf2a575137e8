//! One stored document on disk: its file name, derived from its path, and
//! the text header before its body. Pure: bytes in, bytes out.
//!
//! ```text
//! mpiweb-doc 1
//! path: /store/a%20b.txt
//! version: 1795000000000123
//! time: 1795000000000
//! type: text/plain
//! length: 5
//! deleted: 0
//!
//! hello
//! ```
//!
//! File names are 32 hex digits of two hashes of the path, so no request
//! path can name a file outside the replica's directory, and `/a` and
//! `/a/b` never collide; the path itself is kept in the header.

use crate::hash::hash64;
use crate::static_files::path::{percent_decode, percent_encode_segment};
use crate::stream::wire::DocMeta;

/// The first line of every document file.
const MAGIC: &[u8] = b"mpiweb-doc 1\n";
/// Longest header accepted when reading a file back.
pub const MAX_HEADER: usize = 80 * 1024;

/// The file name of the document at `path`.
pub fn file_name(path: &[u8]) -> String {
    let a = hash64(&[path]);
    let b = hash64(&[b"mpiweb-doc\0", path]);
    format!("{a:016x}{b:016x}.doc")
}

/// The header of a document file.
pub fn header(path: &[u8], meta: &DocMeta) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(b"path: ");
    for seg in path.split(|&b| b == b'/').enumerate() {
        if seg.0 > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(percent_encode_segment(seg.1).as_bytes());
    }
    // The type came from a request header: no control characters.
    let content_type: String = meta
        .content_type
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let text = format!(
        "\nversion: {}\ntime: {}\ntype: {}\nlength: {}\ndeleted: {}\n\n",
        meta.version,
        meta.time_ms,
        content_type,
        meta.length,
        u8::from(meta.deleted)
    );
    out.extend_from_slice(text.as_bytes());
    out
}

/// The path and metadata in the header at the start of `buf`, and the
/// header's length. `None` if `buf` does not start with a whole header.
pub fn parse_header(buf: &[u8]) -> Option<(Vec<u8>, DocMeta, usize)> {
    let rest = buf.strip_prefix(MAGIC)?;
    let end = rest.windows(2).position(|w| w == b"\n\n")?;
    let mut path = None;
    let mut meta = DocMeta::default();
    let mut seen = 0u8;
    for line in rest[..end].split(|&b| b == b'\n') {
        let line = std::str::from_utf8(line).ok()?;
        let (key, value) = line
            .split_once(": ")
            .unwrap_or((line.trim_end_matches(':'), ""));
        let bit = match key {
            "path" => {
                path = Some(percent_decode(value.as_bytes()).ok()?);
                1
            }
            "version" => {
                meta.version = value.parse().ok()?;
                2
            }
            "time" => {
                meta.time_ms = value.parse().ok()?;
                4
            }
            "type" => {
                meta.content_type = value.to_string();
                8
            }
            "length" => {
                meta.length = value.parse().ok()?;
                16
            }
            "deleted" => {
                meta.deleted = match value {
                    "0" => false,
                    "1" => true,
                    _ => return None,
                };
                32
            }
            _ => 0, // a later format's field: ignored
        };
        seen |= bit;
    }
    (seen == 63).then(|| (path.unwrap_or_default(), meta, MAGIC.len() + end + 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> DocMeta {
        DocMeta {
            version: 1_795_000_000_000_123,
            time_ms: 1_795_000_000_000,
            content_type: "text/plain; charset=utf-8".into(),
            length: 5,
            deleted: false,
        }
    }

    #[test]
    fn headers_round_trip_any_path() {
        let paths: [&[u8]; 5] = [
            b"/store/a.txt",
            b"/store/a b/\xff\n:%",
            b"/",
            b"",
            b"/x/y/z/",
        ];
        for path in paths {
            let mut file = header(path, &meta());
            let at = file.len();
            file.extend_from_slice(b"hello");
            let (p, m, len) = parse_header(&file).unwrap();
            assert_eq!((p.as_slice(), m, len), (path, meta(), at), "{path:?}");
        }
        let mut tomb = meta();
        tomb.deleted = true;
        tomb.content_type = "a\r\nInjected: 1".into();
        let (_, m, _) = parse_header(&header(b"/t", &tomb)).unwrap();
        assert!(m.deleted);
        assert_eq!(m.content_type, "aInjected: 1");
    }

    #[test]
    fn broken_headers_are_refused() {
        let good = header(b"/store/a", &meta());
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("cut", good[..good.len() - 1].to_vec()),
            ("no magic", good[1..].to_vec()),
            (
                "bad version",
                String::from_utf8_lossy(&good)
                    .replace("version: 1", "version: x")
                    .into_bytes(),
            ),
            (
                "missing length",
                String::from_utf8_lossy(&good)
                    .replace("length: 5\n", "")
                    .into_bytes(),
            ),
            (
                "deleted 2",
                String::from_utf8_lossy(&good)
                    .replace("deleted: 0", "deleted: 2")
                    .into_bytes(),
            ),
        ];
        for (what, buf) in cases {
            assert!(parse_header(&buf).is_none(), "{what}");
        }
    }

    #[test]
    fn file_names_are_hex_and_distinct() {
        let a = file_name(b"/a");
        assert_eq!(a.len(), 36);
        assert!(a[..32].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, file_name(b"/a/b"));
        assert_ne!(a, file_name(b"/a/"));
        assert_eq!(a, file_name(b"/a"));
    }
}
