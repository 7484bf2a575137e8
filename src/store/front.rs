//! The store as rank 0 serves it: PUT, GET, HEAD and DELETE of documents
//! under the prefix, and listings. The router sends it every request under
//! the prefix, and it alone answers them: a path not stored is 404.

use super::catalog::Entry;
use super::state::{Hold, State};
use crate::error::Error;
use crate::handler::{Handler, Request};
use crate::http::body::{read_full, unwrap_io};
use crate::http::date::fmt_http_date;
use crate::http::response::BodySource;
use crate::http::{html_escape, json_string, Method, Response, ResponseBody};
use crate::static_files::cond::{self, Conditions, Outcome, Validators};
use crate::static_files::path::{map_url_path, percent_decode, percent_encode_segment};
use crate::static_files::{respond, FileInfo};
use crate::stream::wire::DocMeta;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Methods on a document.
const ALLOW_DOC: &str = "GET, HEAD, PUT, DELETE, OPTIONS";
/// Methods on a listing (a path ending in `/`).
const ALLOW_LIST: &str = "GET, HEAD, OPTIONS";
/// Type of a document stored without one.
const DEFAULT_TYPE: &str = "application/octet-stream";

/// The store's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Where it is mounted; starts and ends with `/`.
    pub prefix: String,
    /// Writes need `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// Largest document (413 beyond).
    pub max_size: u64,
}

/// The store's handler on rank 0.
pub struct Store {
    cfg: StoreConfig,
    state: Arc<State>,
}

/// A request path under the prefix, as the store names it.
enum Place {
    /// The prefix without its slash: redirect to it.
    Bare,
    /// A path ending in `/`: a listing.
    List(Vec<u8>),
    Doc(Vec<u8>),
}

impl Store {
    pub fn new(cfg: StoreConfig, state: Arc<State>) -> Store {
        Store { cfg, state }
    }

    /// Where `path_query` is in the store, if it is.
    fn place(&self, path_query: &str) -> Result<Option<Place>, Error> {
        let path = path_query.split('?').next().unwrap_or_default();
        let prefix = self.cfg.prefix.as_str();
        let decoded = percent_decode(path.as_bytes())?;
        if decoded == prefix.trim_end_matches('/').as_bytes() && prefix != "/" {
            return Ok(Some(Place::Bare));
        }
        // The static rules: decoded once, no `..`, no NUL; the prefix is
        // checked on the decoded key below.
        let mapped = map_url_path(path)?;
        let mut key = b"/".to_vec();
        key.extend_from_slice(mapped.rel.as_os_str().as_bytes());
        if mapped.trailing_slash && key.len() > 1 {
            key.push(b'/');
        }
        let mut as_dir = key.clone();
        if !as_dir.ends_with(b"/") {
            as_dir.push(b'/');
        }
        Ok(Some(if as_dir == prefix.as_bytes() {
            Place::List(as_dir)
        } else if !key.starts_with(prefix.as_bytes()) {
            return Ok(None);
        } else if key.ends_with(b"/") {
            Place::List(key)
        } else {
            Place::Doc(key)
        }))
    }

    fn authorize(&self, req: &Request<'_>) -> Result<(), Error> {
        let Some(token) = &self.cfg.token else {
            return Ok(()); // listening on loopback only (checked at start)
        };
        let given = req.head.header("authorization").and_then(|v| {
            let v = v.strip_prefix(b" ").unwrap_or(v);
            let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
            scheme
                .eq_ignore_ascii_case(b"bearer")
                .then(|| rest.trim_ascii())
        });
        match given {
            Some(t) if same(t, token.as_bytes()) => Ok(()),
            _ => Err(Error::Unauthorized),
        }
    }

    fn put(&self, req: &mut Request<'_>, key: &[u8]) -> Result<Response, Error> {
        self.authorize(req)?;
        let max = self.cfg.max_size;
        let length = match req.head.framing {
            crate::http::body::BodyFraming::Length(n) if n > max => {
                return Err(Error::BodyTooLarge)
            }
            crate::http::body::BodyFraming::Length(n) => Some(n),
            _ => None,
        };
        self.state.wait_ready()?;
        // A body of known length too big for rank 0's cache streams to the
        // replicas as it comes; others are read whole first (a chunked one
        // has no length to announce, a small one is kept in the cache).
        let (body, _hold) = match length {
            Some(n) if !self.state.caches(n) => (None, None),
            _ => {
                let (body, hold) = self.read_whole(req, length.unwrap_or(0) as usize)?;
                (Some(body), Some(hold))
            }
        };
        let content_type = req
            .head
            .header_str("content-type")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .unwrap_or(DEFAULT_TYPE)
            .to_string();
        // Writes to one path take turns: each is numbered, checked and
        // made against the version before it, so a conditional write sees
        // what it replaces, and only the first of concurrent PUTs creates.
        let _turn = self.state.path_lock(key);
        let current = self.current(key);
        check_write(req, current.as_ref())?;
        let meta = DocMeta {
            version: self.state.next_version(),
            time_ms: now_ms(),
            content_type,
            length: body
                .as_ref()
                .map_or(length.unwrap_or(0), |b| b.len() as u64),
            deleted: false,
        };
        match body {
            Some(body) => {
                self.state.write(key, &meta, &body)?;
                if self.state.caches(meta.length) {
                    self.state
                        .remember(key, meta.version, Some(Arc::from(body)));
                }
            }
            None => {
                let mut read = |buf: &mut [u8]| read_full(&mut req.body, buf);
                self.state.write_from(key, &meta, &mut read)?;
            }
        }
        let etag = etag(meta.version);
        Ok(match current {
            None => {
                let location = req.head.path_query().split('?').next().unwrap_or("/");
                Response::new(201, ResponseBody::Bytes(Vec::new()))
                    .with("Location", location.to_string())
                    .with("ETag", etag)
            }
            Some(_) => Response::new(204, ResponseBody::None).with("ETag", etag),
        })
    }

    /// The whole request body, `expected` bytes or more (chunked), and its
    /// hold on the store's memory budget (until the write is done).
    fn read_whole(&self, req: &mut Request<'_>, expected: usize) -> Result<(Vec<u8>, Hold), Error> {
        let max = self.cfg.max_size as usize;
        let mut hold = self.state.hold(expected)?;
        let mut held = expected;
        let mut body = Vec::with_capacity(expected);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = req.body.read(&mut buf).map_err(unwrap_io)?;
            if n == 0 {
                return Ok((body, hold));
            }
            if body.len() + n > max {
                return Err(Error::BodyTooLarge);
            }
            if body.len() + n > held {
                hold.grow(body.len() + n - held)?;
                held = body.len() + n;
            }
            body.extend_from_slice(&buf[..n]);
        }
    }

    fn delete(&self, req: &Request<'_>, key: &[u8]) -> Result<Response, Error> {
        self.authorize(req)?;
        self.state.wait_ready()?;
        let _turn = self.state.path_lock(key);
        let Some(current) = self.current(key) else {
            return Err(Error::NotFound);
        };
        check_write(req, Some(&current))?;
        let meta = DocMeta {
            version: self.state.next_version(),
            time_ms: now_ms(),
            content_type: String::new(),
            length: 0,
            deleted: true,
        };
        self.state.write(key, &meta, &[])?;
        self.state.remember(key, meta.version, None);
        Ok(Response::new(204, ResponseBody::None))
    }

    fn get(&self, req: &mut Request<'_>, key: &[u8]) -> Result<Response, Error> {
        self.state.wait_ready()?;
        let entry = self
            .state
            .catalog()
            .get(key)
            .filter(|e| !e.meta.deleted)
            .cloned();
        let Some(entry) = entry else {
            return Err(Error::NotFound);
        };
        let meta = &entry.meta;
        let info = file_info(meta);
        let mut range = None;
        let mut resp = respond(req, &info, |offset, len| {
            range = Some((offset, len));
            ResponseBody::Bytes(Vec::new())
        })?;
        if let Some((offset, len)) = range {
            resp.body = match (req.head.method, len) {
                (Method::Get, 1..) if self.state.caches(meta.length) => {
                    let data = self.small_body(key, &entry)?;
                    ResponseBody::Shared { data, offset, len }
                }
                (Method::Get, 1..) => {
                    let source = self.state.fetch(key, &entry, offset, len)?;
                    resp.served_by = Some(source.rank());
                    ResponseBody::Stream {
                        source: Box::new(source),
                        length: Some(len),
                    }
                }
                // HEAD: the length, without asking a replica.
                _ => ResponseBody::Stream {
                    source: Box::new(Nothing),
                    length: Some(len),
                },
            };
        }
        Ok(resp)
    }

    /// The newest version of a document, unless it is deleted.
    fn current(&self, key: &[u8]) -> Option<DocMeta> {
        let catalog = self.state.catalog();
        catalog
            .get(key)
            .filter(|e| !e.meta.deleted)
            .map(|e| e.meta.clone())
    }

    /// The whole body of a small document: from memory, or read from a
    /// replica once and kept.
    fn small_body(&self, key: &[u8], entry: &Entry) -> Result<Arc<[u8]>, Error> {
        let version = entry.meta.version;
        if let Some(body) = self.state.cached(key, version) {
            return Ok(body);
        }
        let mut source = self.state.fetch(key, entry, 0, entry.meta.length)?;
        let mut body = Vec::with_capacity(entry.meta.length as usize);
        while let Some(piece) = source.next_chunk()? {
            body.extend_from_slice(&piece);
        }
        if body.len() as u64 != entry.meta.length {
            return Err(Error::UpstreamBroken("stored document cut short"));
        }
        let body: Arc<[u8]> = Arc::from(body);
        self.state.remember(key, version, Some(Arc::clone(&body)));
        Ok(body)
    }

    fn list(&self, req: &mut Request<'_>, under: &[u8]) -> Result<Response, Error> {
        self.state.wait_ready()?;
        let docs: Vec<(Vec<u8>, DocMeta, Vec<usize>)> = self
            .state
            .catalog()
            .under(under)
            .map(|(p, e)| {
                let mut ranks: Vec<usize> = e.holders().collect();
                ranks.sort_unstable();
                (p.to_vec(), e.meta.clone(), ranks)
            })
            .collect();
        // An empty listing below the prefix names nothing stored.
        if docs.is_empty() && under != self.cfg.prefix.as_bytes() {
            return Err(Error::NotFound);
        }
        let html = req
            .head
            .header_str("accept")
            .is_some_and(|a| a.contains("text/html"));
        let mut resp = match html {
            true => Response::html(200, list_html(under, &docs)),
            false => Response::new(
                200,
                ResponseBody::Bytes(list_json(under, &docs).into_bytes()),
            )
            .with("Content-Type", "application/json"),
        };
        resp = resp
            .with("Cache-Control", "no-cache")
            .with("Vary", "Accept");
        Ok(resp)
    }
}

impl Handler for Store {
    fn handle(&self, req: &mut Request<'_>) -> Result<Response, Error> {
        // The router sends only paths under the prefix: one that maps
        // elsewhere once decoded (`%2F..`) is refused, never passed on.
        let Some(place) = self.place(req.head.path_query())? else {
            return Err(Error::Forbidden);
        };
        let method = req.head.method;
        match (place, method) {
            (_, Method::Options) => {
                Ok(Response::new(200, ResponseBody::Bytes(Vec::new())).with("Allow", ALLOW_DOC))
            }
            (Place::Bare, Method::Get | Method::Head) => {
                let to = self.cfg.prefix.clone();
                Ok(
                    Response::html(301, format!("<a href=\"{to}\">{to}</a>\n"))
                        .with("Location", to),
                )
            }
            (Place::Bare | Place::List(_), _) if !matches!(method, Method::Get | Method::Head) => {
                Err(Error::MethodNotAllowed(ALLOW_LIST))
            }
            (Place::List(under), _) => self.list(req, &under),
            (Place::Doc(key), Method::Get | Method::Head) => self.get(req, &key),
            (Place::Doc(key), Method::Put) => self.put(req, &key),
            (Place::Doc(key), Method::Delete) => self.delete(req, &key),
            (_, _) => Err(Error::MethodNotAllowed(ALLOW_DOC)),
        }
    }
}

/// What the headers say about a stored version.
fn file_info(meta: &DocMeta) -> FileInfo {
    let modified = UNIX_EPOCH + Duration::from_secs(meta.time_ms / 1000);
    FileInfo {
        len: meta.length,
        validators: Validators {
            etag: etag(meta.version),
            modified,
        },
        last_modified: fmt_http_date(modified),
        content_type: meta.content_type.clone(),
    }
}

/// RFC 9110 §13.2 for a write: `If-Match` and `If-Unmodified-Since` need
/// the document as it is now, `If-None-Match: *` needs it absent.
fn check_write(req: &Request<'_>, current: Option<&DocMeta>) -> Result<(), Error> {
    let head = req.head;
    let conditions = Conditions {
        if_match: head.header("if-match"),
        if_none_match: head.header("if-none-match"),
        if_modified_since: None,
        if_unmodified_since: head.header_str("if-unmodified-since"),
    };
    let outcome = match current {
        Some(meta) => cond::evaluate(&conditions, &file_info(meta).validators, false),
        None if conditions.if_match.is_some() => Outcome::PreconditionFailed,
        None => Outcome::Proceed,
    };
    match outcome {
        Outcome::Proceed => Ok(()),
        _ => Err(Error::PreconditionFailed),
    }
}

/// A body that is never read (HEAD).
struct Nothing;

impl BodySource for Nothing {
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        Ok(None)
    }
}

/// Compare secrets without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A version as a strong entity tag.
fn etag(version: u64) -> String {
    format!("\"{version:x}\"")
}

/// A document path as a link: each segment percent-encoded.
fn href(path: &[u8]) -> String {
    path.split(|&b| b == b'/')
        .map(percent_encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

fn list_json(under: &[u8], docs: &[(Vec<u8>, DocMeta, Vec<usize>)]) -> String {
    let mut out = format!(
        "{{\"prefix\":{},\"count\":{},\"documents\":[",
        json_string(&String::from_utf8_lossy(under)),
        docs.len()
    );
    for (i, (path, meta, ranks)) in docs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let ranks: Vec<String> = ranks.iter().map(usize::to_string).collect();
        out.push_str(&format!(
            "\n{{\"path\":{},\"size\":{},\"content_type\":{},\"etag\":{},\"last_modified\":{},\"version\":{},\"replicas\":[{}]}}",
            json_string(&String::from_utf8_lossy(path)),
            meta.length,
            json_string(&meta.content_type),
            json_string(&etag(meta.version)),
            json_string(&fmt_http_date(UNIX_EPOCH + Duration::from_millis(meta.time_ms))),
            meta.version,
            ranks.join(",")
        ));
    }
    out.push_str("\n]}\n");
    out
}

fn list_html(under: &[u8], docs: &[(Vec<u8>, DocMeta, Vec<usize>)]) -> String {
    let title = html_escape(&String::from_utf8_lossy(under));
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Store: {title}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em}}td{{padding:0 1em}}</style>\
         </head><body><h1>Store: {title}</h1><p>{} documents</p><table>\n\
         <tr><th>Path</th><th>Size</th><th>Type</th><th>Last modified</th><th>Ranks</th></tr>\n",
        docs.len()
    );
    for (path, meta, ranks) in docs {
        let ranks: Vec<String> = ranks.iter().map(usize::to_string).collect();
        page.push_str(&format!(
            "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            html_escape(&href(path)),
            html_escape(&String::from_utf8_lossy(path)),
            meta.length,
            html_escape(&meta.content_type),
            fmt_http_date(UNIX_EPOCH + Duration::from_millis(meta.time_ms)),
            ranks.join(", ")
        ));
    }
    page.push_str("</table></body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"", b"x"));
    }

    #[test]
    fn links_encode_each_segment() {
        assert_eq!(href(b"/store/a b/c?d"), "/store/a%20b/c%3Fd");
    }
}
