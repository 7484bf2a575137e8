//! Static files from DOCROOT: GET and HEAD, conditional and range
//! requests, MIME types, directory indexes and listings.

mod cache;
pub mod cond;
mod listing;
pub mod path;

use crate::error::Error;
use crate::handler::{Handler, Request};
use crate::http::date::fmt_http_date;
use crate::http::{Method, Response, ResponseBody, Target};
use cache::{Entry, FileCache, Identity};
use cond::{Conditions, Outcome, RangeAsk, Validators};
use std::cell::RefCell;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The methods a static path allows.
pub const ALLOW: &str = "GET, HEAD, OPTIONS";

/// Serves files under one root.
pub struct StaticFiles {
    /// The root, canonical, so that a resolved path can be checked against it.
    root: PathBuf,
    listing: bool,
    cache: FileCache<FileInfo>,
}

impl StaticFiles {
    /// Serve `root`, which must be a directory.
    pub fn new(root: &Path, listing: bool) -> io::Result<StaticFiles> {
        let root = root.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        Ok(StaticFiles {
            root,
            listing,
            cache: FileCache::default(),
        })
    }

    /// The absolute path of `rel` under `base` (the root or a directory
    /// already resolved under it), refusing to leave the root.
    ///
    /// Each component under `base` is checked with one `readlink`: when
    /// none is a symlink, the joined path is already canonical and under
    /// the root. Only a path with a symlink on the way is resolved in full
    /// and checked against the root.
    fn resolve(&self, base: &Path, rel: &Path) -> Result<PathBuf, Error> {
        let mut path = base.to_path_buf();
        for comp in rel.components() {
            path.push(comp);
            match fs::read_link(&path) {
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {} // not a symlink
                Err(e) => return Err(Error::from_fs_io(e)),
                Ok(_) => {
                    let real = base.join(rel).canonicalize().map_err(Error::from_fs_io)?;
                    if !real.starts_with(&self.root) {
                        return Err(Error::Forbidden);
                    }
                    return Ok(real);
                }
            }
        }
        Ok(path)
    }

    fn get(&self, req: &Request<'_>) -> Result<Response, Error> {
        let head = req.head;
        let mapped = path::map_url_path(head.path_query())?;
        if !mapped.trailing_slash && !mapped.rel.as_os_str().is_empty() {
            let full = self.root.join(&mapped.rel);
            if let Some(hit) = self.cache.lookup(&mapped.rel, &full) {
                return respond(req, &hit.info, |offset, len| ResponseBody::Shared {
                    data: Arc::clone(&hit.data),
                    offset,
                    len,
                });
            }
        }
        let real = self.resolve(&self.root, &mapped.rel)?;
        // Only regular files and directories are opened: opening a FIFO
        // would block until a writer came.
        let kind = fs::metadata(&real).map_err(Error::from_fs_io)?;
        if !kind.is_file() && !kind.is_dir() {
            return Err(Error::Forbidden);
        }
        // The validators come from the descriptor: they describe the very
        // file that is sent.
        let (file, meta) = open(&real)?;
        if !meta.is_dir() {
            if mapped.trailing_slash {
                // `/file.txt/` names a directory that is not there (ENOTDIR).
                return Err(Error::NotFound);
            }
            let cache = Some((&self.cache, mapped.rel.as_path()));
            return serve_file(req, &real, file, &meta, cache);
        }
        let (path, query) = split_query(head.path_query());
        if !mapped.trailing_slash {
            // RFC 9110 §15.4.2: point the client at the directory URL.
            // One leading slash: `//host/` would send browsers elsewhere.
            let location = format!("/{}/{query}", path.trim_start_matches('/'));
            return Ok(Response::html(301, redirect_page(&location)).with("Location", location));
        }
        match self
            .resolve(&real, Path::new("index.html"))
            .and_then(|p| Ok((open(&p)?, p)))
        {
            Ok(((file, meta), index)) if meta.is_file() => {
                serve_file(req, &index, file, &meta, None)
            }
            Ok(_) | Err(Error::NotFound) if self.listing => {
                listing::render(&self.root, &real, path, mapped.rel.as_os_str().is_empty())
            }
            Ok(_) | Err(Error::NotFound) => Err(Error::Forbidden),
            Err(e) => Err(e),
        }
    }
}

/// Open a path and read its metadata from the descriptor.
fn open(path: &Path) -> Result<(File, Metadata), Error> {
    let file = File::open(path).map_err(Error::from_fs_io)?;
    let meta = file.metadata().map_err(Error::from_fs_io)?;
    Ok((file, meta))
}

impl Handler for StaticFiles {
    fn handle(&self, req: &mut Request<'_>) -> Result<Response, Error> {
        match (req.head.method, &req.head.target) {
            (Method::Options, _) => {
                Ok(Response::new(200, ResponseBody::Bytes(Vec::new())).with("Allow", ALLOW))
            }
            (Method::Get | Method::Head, Target::Origin | Target::Absolute { .. }) => self.get(req),
            (Method::Get | Method::Head, _) => Err(Error::BadRequest("no path in target")),
            // TRACE is never echoed (it would reflect cookies): 405 like the rest.
            _ => Err(Error::MethodNotAllowed(ALLOW)),
        }
    }
}

fn split_query(path_query: &str) -> (&str, &str) {
    match path_query.find('?') {
        Some(i) => path_query.split_at(i),
        None => (path_query, ""),
    }
}

fn redirect_page(location: &str) -> String {
    let href = crate::http::html_escape(location);
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>301 Moved Permanently</title></head>\
         <body><h1>301 Moved Permanently</h1><p><a href=\"{href}\">{href}</a></p></body></html>\n"
    )
}

/// What the headers say about one version of a file.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub len: u64,
    pub validators: Validators,
    pub last_modified: String,
    pub content_type: String,
}

impl FileInfo {
    fn new(path: &Path, meta: &Metadata) -> FileInfo {
        let secs = u64::try_from(meta.mtime()).unwrap_or(0);
        // A modification time in the future is replaced by now: a server
        // with a clock never sends a Last-Modified later than its Date
        // (RFC 9110 §8.8.2.1).
        let modified = (UNIX_EPOCH + Duration::from_secs(secs)).min(SystemTime::now());
        let validators = Validators {
            // Strong: inode, modification time to the nanosecond, and size.
            etag: etag(meta.ino(), secs, meta.mtime_nsec() as u64, meta.len()),
            modified,
        };
        FileInfo {
            len: meta.len(),
            last_modified: fmt_http_date(validators.modified),
            validators,
            content_type: content_type(path),
        }
    }
}

/// The response for an opened file. Small files are read once, kept in the
/// cache under `cache_as` (when given) and sent from memory.
fn serve_file(
    req: &Request<'_>,
    path: &Path,
    file: File,
    meta: &Metadata,
    cache: Option<(&FileCache<FileInfo>, &Path)>,
) -> Result<Response, Error> {
    if !meta.is_file() {
        return Err(Error::Forbidden); // a device, a FIFO, a socket
    }
    let info = FileInfo::new(path, meta);
    match cache {
        Some((cache, rel)) if FileCache::<FileInfo>::wants(info.len) => {
            let mut data = vec![0u8; info.len as usize];
            file.read_exact_at(&mut data, 0)
                .map_err(Error::from_fs_io)?;
            let entry = Arc::new(Entry {
                identity: Identity::of(meta),
                data: Arc::from(data),
                info,
            });
            cache.insert(rel, Arc::clone(&entry));
            respond(req, &entry.info, |offset, len| ResponseBody::Shared {
                data: Arc::clone(&entry.data),
                offset,
                len,
            })
        }
        _ => respond(req, &info.clone(), |offset, len| ResponseBody::File {
            file,
            offset,
            len,
        }),
    }
}

/// Preconditions, range and headers for a file described by `info`;
/// `body` makes the body for a byte range of it. Stored documents are
/// answered the same way.
pub fn respond(
    req: &Request<'_>,
    info: &FileInfo,
    body: impl FnOnce(u64, u64) -> ResponseBody,
) -> Result<Response, Error> {
    let head = req.head;
    let (len, v) = (info.len, &info.validators);
    let conditions = Conditions {
        if_match: head.header("if-match"),
        if_none_match: head.header("if-none-match"),
        if_modified_since: head.header_str("if-modified-since"),
        if_unmodified_since: head.header_str("if-unmodified-since"),
    };
    match cond::evaluate(&conditions, v, true) {
        Outcome::Proceed => {}
        Outcome::NotModified => {
            return Ok(Response::new(304, ResponseBody::None)
                .with("ETag", v.etag.clone())
                .with("Last-Modified", info.last_modified.clone()));
        }
        Outcome::PreconditionFailed => return Err(Error::PreconditionFailed),
    }
    let range = match head.header_str("range") {
        Some(r) if head.method == Method::Get => match head.header_str("if-range") {
            Some(ir) if !cond::if_range_holds(ir, v) => RangeAsk::Whole,
            _ => cond::parse_range(r, len),
        },
        _ => RangeAsk::Whole,
    };
    let (status, offset, count) = match range {
        RangeAsk::Whole => (200, 0, len),
        RangeAsk::Part { start, end } => (206, start, end - start + 1),
        RangeAsk::Unsatisfiable => return Err(Error::RangeNotSatisfiable(len)),
    };
    let mut resp = Response::new(status, body(offset, count))
        .with("Content-Type", info.content_type.clone())
        .with("Last-Modified", info.last_modified.clone())
        .with("ETag", v.etag.clone())
        .with("Accept-Ranges", "bytes");
    if status == 206 {
        resp = resp.with(
            "Content-Range",
            format!("bytes {}-{}/{len}", offset, offset + count - 1),
        );
    }
    Ok(resp)
}

/// `"INODE-SECS.NANOS-LEN"` in hex, written without `format!`.
fn etag(ino: u64, secs: u64, nanos: u64, len: u64) -> String {
    let mut out = String::with_capacity(48);
    out.push('"');
    for (n, sep) in [(ino, '-'), (secs, '.'), (nanos, '-'), (len, '"')] {
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
        for shift in (0..digits).rev() {
            let d = (n >> (shift * 4)) & 0xf;
            out.push(char::from_digit(d as u32, 16).unwrap_or('0'));
        }
        out.push(sep);
    }
    out
}

/// The MIME type by extension, with `charset=utf-8` on text; remembered
/// per thread for the last few extensions, as the lookup and the string
/// building cost more than the rest of a small-file response.
pub fn content_type(path: &Path) -> String {
    thread_local! {
        static SEEN: RefCell<Vec<(OsString, String)>> = const { RefCell::new(Vec::new()) };
    }
    let ext = path.extension().unwrap_or_default();
    SEEN.with_borrow_mut(|seen| {
        if let Some((_, t)) = seen.iter().find(|(e, _)| e == ext) {
            return t.clone();
        }
        let t = guess_content_type(path);
        if seen.len() >= 16 {
            seen.remove(0);
        }
        seen.push((ext.to_os_string(), t.clone()));
        t
    })
}

fn guess_content_type(path: &Path) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let essence = mime.essence_str();
    if mime.type_() == "text"
        || essence == "application/javascript"
        || essence == "application/json"
    {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_hex() {
        assert_eq!(
            etag(0x51000b, 0x6b025da3, 0x2b1bc7ca, 0x16ce),
            "\"51000b-6b025da3.2b1bc7ca-16ce\""
        );
        assert_eq!(etag(0, 0, 0, 0), "\"0-0.0-0\"");
        assert_eq!(etag(u64::MAX, 1, 2, 3), format!("\"{:x}-1.2-3\"", u64::MAX));
    }

    #[test]
    fn content_types() {
        let cases = [
            ("a.html", "text/html; charset=utf-8"),
            ("a.css", "text/css; charset=utf-8"),
            ("a.txt", "text/plain; charset=utf-8"),
            ("a.js", "text/javascript; charset=utf-8"),
            ("a.json", "application/json; charset=utf-8"),
            ("a.png", "image/png"),
            ("a.svg", "image/svg+xml"),
            ("noext", "application/octet-stream"),
        ];
        for (name, want) in cases {
            assert_eq!(content_type(Path::new(name)), want, "{name}");
        }
    }
}
