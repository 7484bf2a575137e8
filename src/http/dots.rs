//! Dot-segment removal of a request path (RFC 3986 §5.2.4), as nginx and
//! darkhttpd do before routing: `/dir/../x` is `/x`, `/dir/./` is `/dir/`,
//! and `%2e` counts as a dot. A path whose `..` would climb above the root
//! is left as it came, for the handlers to refuse.

/// What removing the dot segments of a path did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dots {
    /// No `.` or `..` segment: the path stays as it is.
    None,
    /// The path without them (the query, if any, follows unchanged).
    Removed(String),
    /// A `..` would leave the root.
    AboveRoot,
}

/// Whether `seg` is `.` or `..` once `%2e`/`%2E` are read as dots.
fn dot_kind(seg: &str) -> Option<usize> {
    let mut dots = 0;
    let mut rest = seg.as_bytes();
    while !rest.is_empty() {
        match rest {
            [b'.', tail @ ..] => rest = tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => rest = tail,
            _ => return None,
        }
        dots += 1;
    }
    matches!(dots, 1 | 2).then_some(dots)
}

/// Remove the dot segments of `path_query`'s path (which starts with `/`).
pub fn remove_dot_segments(path_query: &str) -> Dots {
    let (path, query) = match path_query.find('?') {
        Some(q) => path_query.split_at(q),
        None => (path_query, ""),
    };
    let Some(rest) = path.strip_prefix('/') else {
        return Dots::None;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if !segments.iter().any(|s| dot_kind(s).is_some()) {
        return Dots::None;
    }
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match dot_kind(seg) {
            Some(2) if out.pop().is_none() => return Dots::AboveRoot,
            Some(_) => {
                // A dot segment at the end names a directory: keep the slash.
                if i == last {
                    out.push("");
                }
            }
            None => out.push(seg),
        }
    }
    Dots::Removed(format!("/{}{query}", out.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_table() {
        let removed = |s: &str| Dots::Removed(s.to_string());
        let table: &[(&str, Dots)] = &[
            ("/", Dots::None),
            ("/a/b.c", Dots::None),
            ("/a..b/.c/..d", Dots::None),
            ("/a/...", Dots::None),
            ("/a?x=/../", Dots::None),
            ("/dir/../", removed("/")),
            ("/dir/..", removed("/")),
            ("/dir/../data.jpeg", removed("/data.jpeg")),
            ("/dir/%2e%2e/", removed("/")),
            ("/dir/%2E%2e/data.jpeg", removed("/data.jpeg")),
            ("/dir/.%2e/x", removed("/x")),
            ("/./", removed("/")),
            ("/.", removed("/")),
            ("/a/./b", removed("/a/b")),
            ("/a/%2e/b", removed("/a/b")),
            ("/a/b/.", removed("/a/b/")),
            ("/a/b/c/./../../g", removed("/a/g")),
            ("/a/b/../c?q=1&r=../", removed("/a/c?q=1&r=../")),
            ("/a//../b", removed("/a/b")),
            ("/..", Dots::AboveRoot),
            ("/../etc/passwd", Dots::AboveRoot),
            ("/a/../..", Dots::AboveRoot),
            ("/a/../../b", Dots::AboveRoot),
            ("/%2e%2e/x", Dots::AboveRoot),
            ("/a/%2e%2e/%2E%2E/x", Dots::AboveRoot),
        ];
        for (path, want) in table {
            assert_eq!(&remove_dot_segments(path), want, "{path}");
        }
    }
}
