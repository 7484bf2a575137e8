//! URL path → relative file path: pure, and nothing it returns can climb
//! out of the root (STYLE.md rule 8).
//!
//! Order: split off the query, percent-decode once, refuse NUL and `\`,
//! walk the segments refusing `..`, and let the caller join the result to
//! the root (and refuse symlinks that leave it, which needs the disk).

use crate::error::Error;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// A request path mapped under the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// Relative path with only normal components (empty for the root).
    pub rel: PathBuf,
    /// The decoded path ended in `/`: a directory was asked for.
    pub trailing_slash: bool,
}

/// Map the path-and-query of a request target to a path under the root.
pub fn map_url_path(path_query: &str) -> Result<Mapped, Error> {
    let path = path_query.split('?').next().unwrap_or_default();
    let decoded = percent_decode(path.as_bytes())?;
    if decoded.contains(&0) {
        return Err(Error::BadRequest("NUL in path"));
    }
    if decoded.contains(&b'\\') {
        return Err(Error::Forbidden);
    }
    let mut rel = PathBuf::new();
    for seg in decoded.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => return Err(Error::Forbidden),
            seg => rel.push(OsStr::from_bytes(seg)),
        }
    }
    Ok(Mapped {
        rel,
        trailing_slash: decoded.ends_with(b"/"),
    })
}

/// Decode `%XX` escapes once; a `%` not followed by two hex digits is 400.
pub fn percent_decode(s: &[u8]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                s.get(i + 1).and_then(|&b| hex(b)),
                s.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => return Err(Error::BadRequest("malformed percent-encoding")),
            }
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-encode a name for use as one path segment in a link.
pub fn percent_encode_segment(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for &b in name {
        if b.is_ascii_alphanumeric() || b"-._~!$'()*,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Component;

    /// Attack inputs and plain ones: what each maps to, or its status.
    #[test]
    fn attack_table() {
        let cases: &[(&str, Result<&str, u16>)] = &[
            ("/", Ok("")),
            ("/index.html", Ok("index.html")),
            ("/a/b/c.txt?x=../..", Ok("a/b/c.txt")),
            ("//a//b/", Ok("a/b")),
            ("/./a/./b", Ok("a/b")),
            ("/a%20b", Ok("a b")),
            ("/a%2Fb", Ok("a/b")),
            ("/%2e%2e", Err(403)),
            ("/../etc/passwd", Err(403)),
            ("/a/../../etc/passwd", Err(403)),
            ("/a/..", Err(403)),
            ("/..%2f..%2fetc%2fpasswd", Err(403)),
            ("/%2E%2E/%2E%2E/etc/passwd", Err(403)),
            ("/a%5c..%5c..%5cetc", Err(403)),
            ("/a\\b", Err(403)),
            ("/a%00.html", Err(400)),
            ("/a%zz", Err(400)),
            ("/a%4", Err(400)),
            ("/a%", Err(400)),
            ("/%252e%252e/x", Ok("%2e%2e/x")),
            ("/...", Ok("...")),
            ("/..a", Ok("..a")),
            ("/a..", Ok("a..")),
        ];
        for (input, want) in cases {
            let got = map_url_path(input).map_err(|e| e.status().unwrap_or(0));
            let got = got.as_ref().map(|m| m.rel.to_str().unwrap());
            assert_eq!(got, want.as_ref().copied(), "{input}");
        }
    }

    #[test]
    fn trailing_slash_is_reported() {
        assert!(map_url_path("/dir/").unwrap().trailing_slash);
        assert!(!map_url_path("/dir").unwrap().trailing_slash);
        assert!(map_url_path("/dir%2F").unwrap().trailing_slash);
    }

    /// The invariant the fuzz target checks, over many pseudo-random inputs:
    /// a mapped path holds only normal components.
    #[test]
    fn random_inputs_stay_under_the_root() {
        let alphabet: &[&[u8]] = &[
            b"/", b".", b"..", b"%2e", b"%2f", b"%5c", b"a", b"%00", b"\\", b"%", b"?",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut input = b"/".to_vec();
            for _ in 0..(seed % 12) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                input.extend_from_slice(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let s = String::from_utf8(input).unwrap();
            if let Ok(m) = map_url_path(&s) {
                assert!(
                    m.rel
                        .components()
                        .all(|c| matches!(c, Component::Normal(_))),
                    "{s}"
                );
            }
        }
    }

    #[test]
    fn encodes_link_segments() {
        assert_eq!(
            percent_encode_segment(b"a&b <c>.txt"),
            "a%26b%20%3Cc%3E.txt"
        );
        assert_eq!(percent_encode_segment("é".as_bytes()), "%C3%A9");
    }
}
