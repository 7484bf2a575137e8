//! The HTML listing of a directory without an index: names escaped for
//! HTML, links percent-encoded, dot-files left out (as nginx's autoindex).

use super::path::percent_encode_segment;
use crate::error::Error;
use crate::http::date::fmt_http_date;
use crate::http::{html_escape, Response};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Render the listing of `dir` (under the canonical `root`), reached by the
/// URL path `url_path`.
pub fn render(root: &Path, dir: &Path, url_path: &str, is_root: bool) -> Result<Response, Error> {
    let mut entries: Vec<(Vec<u8>, bool, u64, String)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::from_fs_io)? {
        let entry = entry.map_err(Error::from_fs_io)?;
        let name = entry.file_name().as_bytes().to_vec();
        if name.starts_with(b".") {
            continue;
        }
        // A symlink is listed only if it stays under the root (its size
        // and date would describe a file we do not serve); a dangling one
        // is skipped too.
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        if is_link
            && !entry
                .path()
                .canonicalize()
                .is_ok_and(|p| p.starts_with(root))
        {
            continue;
        }
        let Ok(meta) = fs::metadata(entry.path()) else {
            continue;
        };
        let modified = meta.modified().map(fmt_http_date).unwrap_or_default();
        entries.push((name, meta.is_dir(), meta.len(), modified));
    }
    entries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    let title = html_escape(&String::from_utf8_lossy(
        &super::path::percent_decode(url_path.as_bytes()).unwrap_or_default(),
    ));
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Index of {title}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em}}td{{padding:0 1em}}</style>\
         </head><body><h1>Index of {title}</h1><table>\n\
         <tr><th>Name</th><th>Size</th><th>Last modified</th></tr>\n"
    );
    if !is_root {
        page.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for (name, is_dir, size, modified) in &entries {
        let slash = if *is_dir { "/" } else { "" };
        let href = percent_encode_segment(name);
        let text = html_escape(&String::from_utf8_lossy(name));
        let size = if *is_dir {
            "-".to_string()
        } else {
            size.to_string()
        };
        page.push_str(&format!(
            "<tr><td><a href=\"{href}{slash}\">{text}{slash}</a></td><td>{size}</td><td>{modified}</td></tr>\n"
        ));
    }
    page.push_str("</table></body></html>\n");
    Ok(Response::html(200, page))
}
