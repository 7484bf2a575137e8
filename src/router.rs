//! Which part of mpiweb answers a request: one pure decision,
//! `Router::route`, and one exhaustive `match` on it (`Front`). Nothing
//! falls through from one part to the next: a request under the store's
//! prefix is the store's, found or not.

use crate::error::Error;
use crate::handler::{Handler, Request};
use crate::http::{Method, RequestHead, Response, Target};
use crate::proxy::route::{has_dot_segment, split_port, RouteSpec};
use crate::proxy::Proxy;
use crate::static_files::path::percent_decode;
use crate::static_files::StaticFiles;
use crate::status::{Cidr, Page, Status};
use crate::store::Store;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where a request goes.
#[derive(Debug)]
pub enum Route {
    /// `/-/status`, `/-/status.json` or `/-/metrics`, from an allowed peer.
    Status(Page),
    /// Under `--store PREFIX`.
    Store,
    /// The reverse-proxy route of this index (in `Router::routes` order).
    Reverse(usize),
    /// An absolute-form target naming another host (`--forward-proxy`).
    Forward,
    /// CONNECT (`--forward-proxy`).
    Connect,
    /// A file under DOCROOT (or an answer about one: 404, 405, ...).
    Static,
    /// Refused before any part sees it.
    Refused(Error),
}

/// What the router decides by: the command line's routes, store and
/// status settings, and how to tell a target that names this server.
pub struct Router {
    status_allow: Vec<Cidr>,
    store: Option<String>,
    /// Reverse-proxy routes in the order they are tried (most specific
    /// first): the order of `Proxy::pools`.
    routes: Vec<RouteSpec>,
    forward: bool,
    /// Whether an absolute-form target's authority names this server.
    is_self: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

impl Router {
    pub fn new(
        status_allow: Vec<Cidr>,
        store: Option<String>,
        routes: Vec<RouteSpec>,
        forward: bool,
        is_self: Box<dyn Fn(&str) -> bool + Send + Sync>,
    ) -> Router {
        Router {
            status_allow,
            store,
            routes,
            forward,
            is_self,
        }
    }

    /// Where `head`, from `peer`, goes. Status pages first; then what the
    /// target's form decides (CONNECT, another host); then the store's
    /// prefix, which owns every name under it; then the first matching
    /// route; files last.
    pub fn route(&self, head: &RequestHead, peer: SocketAddr) -> Route {
        match (&head.target, head.method) {
            (Target::Authority, Method::Connect) if self.forward => return Route::Connect,
            (Target::Absolute { authority }, _) if self.forward && !(self.is_self)(authority) => {
                return match split_port(authority) {
                    Some(_) => Route::Forward,
                    None => Route::Refused(Error::BadRequest("bad port")),
                };
            }
            (Target::Asterisk | Target::Authority, _) => return Route::Static,
            (Target::Origin | Target::Absolute { .. }, _) => {}
        }
        let path_query = head.path_query();
        let raw_path = path_query.split('?').next().unwrap_or_default();
        // Prefixes are matched against the path as its handler will read
        // it, percent-decoded (as nginx matches locations): `/%73tore/x`
        // is the store's `/store/x`, not a file of that name.
        let decoded = percent_decode(raw_path.as_bytes())
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        let path = decoded.as_deref().unwrap_or(raw_path);
        if let Some(page) = status_page(path) {
            return match self.status_allow.iter().any(|c| c.contains(peer.ip())) {
                true => Route::Status(page),
                false => Route::Refused(Error::Forbidden),
            };
        }
        if let Some(prefix) = &self.store {
            // The prefix itself without its slash is the store's too (it
            // redirects there).
            if path.starts_with(prefix.as_str()) || path == prefix.trim_end_matches('/') {
                return Route::Store;
            }
        }
        let host = match &head.target {
            Target::Absolute { authority } => Some(authority.as_str()),
            _ => head.header_str("host"),
        }
        .and_then(split_port)
        .map(|(h, _)| h.to_ascii_lowercase());
        let matching = self.routes.iter().position(|spec| {
            path.starts_with(&spec.prefix)
                && spec.host.as_ref().is_none_or(|h| host.as_ref() == Some(h))
                && spec.header.as_ref().is_none_or(|(name, value)| {
                    head.header_str(name).map(str::trim) == Some(value.as_str())
                })
        });
        match matching {
            // Dot segments inside the root were removed while parsing:
            // what is left would climb above it.
            Some(_) if has_dot_segment(path_query) => {
                Route::Refused(Error::BadRequest("dot segment in a proxied path"))
            }
            Some(index) => Route::Reverse(index),
            None => Route::Static,
        }
    }
}

/// The status page a path names, if any.
fn status_page(path: &str) -> Option<Page> {
    match path {
        "/-/status" | "/-/status/" => Some(Page::Html),
        "/-/status.json" => Some(Page::Json),
        "/-/metrics" => Some(Page::Metrics),
        _ => None,
    }
}

/// Rank 0's handler: the router's decision, carried out.
pub struct Front {
    pub router: Router,
    pub status: Status,
    pub store: Option<Store>,
    pub proxy: Proxy,
    pub files: Arc<StaticFiles>,
}

impl Handler for Front {
    fn handle(&self, req: &mut Request<'_>) -> Result<Response, Error> {
        match self.router.route(req.head, req.peer) {
            Route::Status(page) => self.status.page(req, page),
            Route::Store => match &self.store {
                Some(store) => store.handle(req),
                // The router sends nothing to a store it was not given.
                None => Err(Error::NotFound),
            },
            Route::Reverse(index) => self.proxy.reverse(req, index),
            Route::Forward => self.proxy.forward_absolute(req),
            Route::Connect => self.proxy.connect(req),
            Route::Static => self.files.handle(req),
            Route::Refused(e) => Err(e),
        }
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
