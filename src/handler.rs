//! The seam between the connection loop and whatever answers a request:
//! static files now, the proxy and the store later, each a `Handler`.

use crate::error::Error;
use crate::http::{RequestHead, Response};
use std::io::Read;
use std::net::SocketAddr;

/// One request as a handler sees it: a checked head and its body, which
/// the handler may read or leave (the connection loop drains what is left).
pub struct Request<'a> {
    pub head: &'a RequestHead,
    pub body: &'a mut dyn Read,
    pub peer: SocketAddr,
    /// Whether the client has closed its connection, for a handler that
    /// waits a long time (a proxy waiting for its upstream gives up then).
    pub client_gone: &'a dyn Fn() -> bool,
    /// What the request goes by (`X-Request-Id`), sent on to upstreams.
    pub id: &'a str,
}

/// Anything that turns a request into a response. An `Err` becomes an
/// error page in exactly one place, the connection loop.
pub trait Handler: Send + Sync {
    fn handle(&self, req: &mut Request<'_>) -> Result<Response, Error>;
}
