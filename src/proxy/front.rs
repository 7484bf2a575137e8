//! Rank 0's side of proxying: a request the router sent to a route, to
//! another host or through CONNECT is sent through the `Transport` with its
//! body, and the frames that come back become a response whose body
//! streams.

use super::backends::{Backends, Failure, Lease};
use super::hop::{forward_request_fields, Origin};
use super::replay::{Replay, Tee};
use super::route::{rewrite, split_port, ConnectPorts, Policy, RouteSpec};
use super::tunnel;
use crate::config;
use crate::error::{Error, Fault};
use crate::handler::Request;
use crate::http::body::{read_full, BodyFraming};
use crate::http::response::{BodySource, Duplex, Tunnel};
use crate::http::{Method, Response, ResponseBody, Target};
use crate::stream::credit::{Receiving, Sending, Stopped};
use crate::stream::transport::{Stream, Transport};
use crate::stream::wire::{AbortReason, Frame, ProxyRequest, Service};
use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Extra wait on rank 0 beyond the upstream timeout: the worker enforces
/// that timeout and answers 504 itself; this only ends waits on a worker
/// that stopped answering altogether.
const WORKER_SLACK: Duration = Duration::from_secs(5);

/// What the proxy does, from the command line.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub routes: Vec<RouteSpec>,
    pub forward: bool,
    pub connect_ports: ConnectPorts,
    pub upstream_timeout: Duration,
    /// The address mpiweb listens on, to recognise requests for itself.
    pub local: SocketAddr,
}

/// Rank 0's proxy: the routes' pools and the way to the workers.
pub struct Proxy {
    /// Routes in the order they are tried (most specific first).
    routes: Vec<Arc<Backends>>,
    cfg: ProxyConfig,
    transport: Arc<dyn Transport>,
}

/// Where one proxied request goes.
struct Dest {
    authority: String,
    host: String,
    target: String,
    /// The route's pool and the member picked, unless forward-proxied.
    member: Option<Member>,
}

struct Member {
    pool: Arc<Backends>,
    index: usize,
    /// What the pool's hash policy hashed, to pick the same way again.
    key: Option<Vec<u8>>,
}

impl Proxy {
    pub fn new(cfg: ProxyConfig, transport: Arc<dyn Transport>) -> Proxy {
        let mut routes: Vec<Arc<Backends>> = cfg
            .routes
            .iter()
            .map(|spec| Arc::new(Backends::new(spec.clone())))
            .collect();
        // A header match first, then a host match, then the longest
        // prefix; on a tie, the first given (the sort is stable).
        routes.sort_by_key(|r| std::cmp::Reverse(r.spec.specificity()));
        Proxy {
            routes,
            cfg,
            transport,
        }
    }

    /// Every route's pool, for the health checks.
    pub fn pools(&self) -> &[Arc<Backends>] {
        &self.routes
    }

    fn wait(&self) -> Duration {
        self.cfg.upstream_timeout + WORKER_SLACK
    }

    /// Send `req` to the reverse-proxy route `index` (in `pools` order),
    /// as the router decided.
    pub fn reverse(&self, req: &mut Request<'_>, index: usize) -> Result<Response, Error> {
        let head = req.head;
        let pool = self
            .routes
            .get(index)
            .ok_or_else(|| Error::Internal(format!("no route {index}")))?;
        let key = match &pool.spec.policy {
            Policy::IpHash => Some(req.peer.ip().to_string().into_bytes()),
            Policy::HeaderHash(name) => head.header(name).map(<[u8]>::to_vec),
            _ => None,
        };
        let member = pool
            .pick(key.as_deref(), None)
            .ok_or_else(|| Error::NoHealthyUpstream(pool.retry_after()))?;
        let dest = dest_for(pool, member, key, head.path_query());
        self.forward(req, dest)
    }

    /// Send `req`, whose absolute-form target names another host, there
    /// (`--forward-proxy`).
    pub fn forward_absolute(&self, req: &mut Request<'_>) -> Result<Response, Error> {
        let head = req.head;
        let Target::Absolute { authority } = &head.target else {
            return Err(Error::BadRequest("not an absolute-form target"));
        };
        let (host, port) = split_port(authority).ok_or(Error::BadRequest("bad port"))?;
        let dest = Dest {
            authority: format!("{host}:{}", port.unwrap_or(80)),
            host: authority.clone(),
            target: head.path_query().to_string(),
            member: None,
        };
        self.forward(req, dest)
    }

    /// Proxy `req` to `dest` and answer with what comes back. When the
    /// upstream fails before it answers, the request is tried once more on
    /// another of the route's upstreams, if that is safe (`may_retry`).
    fn forward(&self, req: &mut Request<'_>, mut dest: Dest) -> Result<Response, Error> {
        let head = req.head;
        let client_gone = req.client_gone;
        let client_ip = req.peer.ip().to_string();
        let origin = Origin {
            client_ip: &client_ip,
            proto: "http",
            host: head.header_str("host"),
            minor: head.minor,
            request_id: req.id,
        };
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = forward_request_fields(head.headers(), &origin)
            .into_iter()
            // Host is the upstream's; 100-continue was answered here.
            .filter(|(n, _)| !n.eq_ignore_ascii_case("host") && !n.eq_ignore_ascii_case("expect"))
            .map(|(n, v)| (n.into_bytes(), v))
            .collect();
        let (has_body, length) = match head.framing {
            BodyFraming::None | BodyFraming::UntilClose => (false, None),
            BodyFraming::Length(n) => (true, Some(n)),
            BodyFraming::Chunked => (true, None),
        };
        let may_retry = dest.member.as_ref().is_some_and(|m| {
            m.pool.size() > 1 && may_retry(head.method, m.pool.spec.retry_non_idempotent)
        });
        let fits = length.is_none_or(|n| n <= config::REPLAY_LIMIT as u64);
        let mut replay = Replay::new(match may_retry && has_body && fits {
            true => config::REPLAY_LIMIT,
            false => 0,
        });
        let mut again = false;
        let wait = self.wait();
        let (stream, status, fields, length, lease) = loop {
            let lease = dest.member.as_ref().map(|m| m.pool.lease(m.index));
            let mut sent = Vec::with_capacity(fields.len() + 1);
            sent.push((b"Host".to_vec(), dest.host.clone().into_bytes()));
            // Copied only while a second attempt may need them again.
            match may_retry && !again {
                true => sent.extend(fields.iter().cloned()),
                false => sent.append(&mut fields),
            }
            let open = |id| Frame::Open {
                id,
                service: Service::Proxy(Box::new(ProxyRequest {
                    upstream: dest.authority.clone().into_bytes(),
                    method: head.method.as_str().as_bytes().to_vec(),
                    target: dest.target.clone().into_bytes(),
                    fields: sent,
                    has_body,
                    length,
                })),
            };
            let sent_at = Instant::now();
            let mut stream = Stream::open(&self.transport, open)?;
            let early = match (has_body, again) {
                (false, _) => None,
                // The first upstream: keep what is sent, for a second.
                (true, false) => {
                    let mut body = Tee {
                        inner: &mut *req.body,
                        replay: &mut replay,
                    };
                    upload(&mut stream, &mut body, wait)?
                }
                (true, true) => {
                    let kept = std::io::Cursor::new(replay.take());
                    upload(&mut stream, &mut kept.chain(&mut *req.body), wait)?
                }
            };
            let frame = match early {
                Some(frame) => frame,
                None => next_answer(&mut stream, wait, client_gone)?,
            };
            let reason = match frame {
                Frame::Head {
                    status,
                    fields,
                    length,
                    ..
                } => {
                    if let Some(m) = &dest.member {
                        m.pool.answered(m.index, sent_at.elapsed());
                    }
                    if let (Some(m), 500 | 502..=504 | 506..) = (&dest.member, status) {
                        m.pool.failed(m.index, Failure::Status(status));
                    }
                    break (stream, status, fields, length, lease);
                }
                Frame::Abort { reason, .. } => reason,
                // `next_answer` skips credit; the rest has no place here.
                Frame::Open { .. }
                | Frame::Data { .. }
                | Frame::End { .. }
                | Frame::Credit { .. }
                | Frame::Ping { .. }
                | Frame::Pong { .. }
                | Frame::Stats { .. } => return Err(Error::UpstreamBroken("unexpected frame")),
            };
            let Some(m) = &dest.member else {
                return Err(reason.gateway_error(&dest.authority));
            };
            let Some(failure) = upstream_failure(reason) else {
                return Err(reason.gateway_error(&dest.authority));
            };
            m.pool.failed(m.index, failure);
            // Nothing of the answer reached the client yet: another
            // upstream may take the request, once.
            let next = (may_retry && !again && replay.is_whole() && failure != Failure::Timeout)
                .then(|| m.pool.pick(m.key.as_deref(), Some(m.index)))
                .flatten();
            let Some(next) = next else {
                log::warn!(
                    "upstream {} failed ({failure:?}): {} {} gets an error",
                    dest.authority,
                    head.method.as_str(),
                    head.path_query()
                );
                return Err(reason.gateway_error(&dest.authority));
            };
            log::info!(
                "upstream {} failed ({failure:?}) before answering; {} {} goes to {} instead",
                dest.authority,
                head.method.as_str(),
                head.path_query(),
                m.pool.spec.upstreams[next].authority
            );
            let (pool, key) = (Arc::clone(&m.pool), m.key.clone());
            dest = dest_for(&pool, next, key, head.path_query());
            again = true;
        };
        let no_body = head.method == Method::Head || matches!(status, 100..=199 | 204 | 304);
        let mut resp = Response::new(status, ResponseBody::None);
        resp.served_by = Some(stream.rank());
        resp.headers = fields
            .into_iter()
            .map(|(n, v)| {
                (
                    Cow::Owned(String::from_utf8_lossy(&n).into_owned()),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        if no_body {
            if let (Some(n), false) = (length, matches!(status, 100..=199 | 204)) {
                resp = resp.with("Content-Length", n.to_string());
            }
            // The worker ends the stream right after the head: take the
            // `End` if it is here, so nothing needs aborting.
            let mut stream = stream;
            let _ = stream.try_recv();
            return Ok(resp);
        }
        resp.body = ResponseBody::Stream {
            source: Box::new(StreamBody {
                body: Receiving::new(stream, wait),
                _lease: lease,
            }),
            length,
        };
        Ok(resp)
    }

    /// CONNECT `authority`: a tunnel through a worker.
    pub fn connect(&self, req: &Request<'_>) -> Result<Response, Error> {
        let authority = req.head.target_str().to_ascii_lowercase();
        let port = split_port(&authority)
            .and_then(|(_, p)| p)
            .ok_or(Error::BadRequest("CONNECT needs host:port"))?;
        if !self.cfg.connect_ports.allows(port) {
            return Err(Error::Forbidden);
        }
        let mut stream = Stream::open(&self.transport, |id| Frame::Open {
            id,
            service: Service::Proxy(Box::new(ProxyRequest {
                upstream: authority.clone().into_bytes(),
                method: b"CONNECT".to_vec(),
                target: authority.clone().into_bytes(),
                fields: Vec::new(),
                has_body: false,
                length: None,
            })),
        })?;
        let mut credit = 0u64;
        loop {
            match stream.recv(self.wait())? {
                Frame::Credit { bytes, .. } => credit += u64::from(bytes),
                Frame::Head { status: 200, .. } => break,
                Frame::Abort { reason, .. } => return Err(reason.gateway_error(&authority)),
                // A tunnel opens with 200 and nothing else.
                Frame::Head { .. }
                | Frame::Open { .. }
                | Frame::Data { .. }
                | Frame::End { .. }
                | Frame::Ping { .. }
                | Frame::Pong { .. }
                | Frame::Stats { .. } => return Err(Error::UpstreamBroken("unexpected frame")),
            }
        }
        Ok(Response::new(
            200,
            ResponseBody::Tunnel(Box::new(ClientTunnel { stream, credit })),
        ))
    }
}

/// Whether `authority` (of an absolute-form target) names `local`, the
/// address mpiweb listens on: such requests are served here, never sent
/// round in a loop.
pub fn is_self(local: SocketAddr, authority: &str) -> bool {
    let Some((host, port)) = split_port(authority) else {
        return false;
    };
    if port.unwrap_or(80) != local.port() {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => (host, local.port())
            .to_socket_addrs()
            .map(|a| a.map(|a| a.ip()).collect())
            .unwrap_or_default(),
    };
    ips.iter().any(|ip| {
        *ip == local.ip()
            || (local.ip().is_unspecified()
                && (ip.is_loopback() || ip.is_unspecified() || is_local_address(*ip)))
    })
}

/// Whether `ip` belongs to this machine: only a local address can be bound.
fn is_local_address(ip: IpAddr) -> bool {
    UdpSocket::bind((ip, 0)).is_ok()
}

/// What an abort says of its upstream; `None` when it was not the
/// upstream's fault.
fn upstream_failure(reason: AbortReason) -> Option<Failure> {
    if reason.fault() != Fault::Upstream {
        return None;
    }
    Some(match reason.nothing_sent() {
        // No connection was made.
        true => Failure::Connect,
        false if reason == AbortReason::Timeout => Failure::Timeout,
        false => Failure::Broken,
    })
}

/// The route's upstream `index`, and the target it is sent.
fn dest_for(pool: &Arc<Backends>, index: usize, key: Option<Vec<u8>>, path_query: &str) -> Dest {
    let up = &pool.spec.upstreams[index];
    Dest {
        authority: up.authority.clone(),
        host: up.host.clone(),
        target: rewrite(path_query, &pool.spec.prefix, up),
        member: Some(Member {
            pool: Arc::clone(pool),
            index,
            key,
        }),
    }
}

/// Whether a request may be sent to a second upstream after the first
/// failed before answering: idempotent methods (RFC 9110 §9.2.2) may, POST
/// and PATCH only when the route says so.
fn may_retry(method: Method, non_idempotent: bool) -> bool {
    non_idempotent
        || matches!(
            method,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
}

/// Bytes of a request body gathered into one `Data` frame.
const UPLOAD_PIECE: usize = 64 * 1024;

/// How often a connection thread waiting for an answer looks whether its
/// client is still there.
const CLIENT_CHECK: Duration = Duration::from_millis(250);

/// The next frame that answers the request (credit grants are skipped).
/// A client that closes meanwhile ends the wait, and dropping the stream
/// aborts the upstream request.
fn next_answer(
    stream: &mut Stream,
    wait: Duration,
    client_gone: &dyn Fn() -> bool,
) -> Result<Frame, Error> {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match stream.recv(left.min(CLIENT_CHECK)) {
            Ok(Frame::Credit { .. }) => {}
            Ok(other) => return Ok(other),
            Err(Error::UpstreamTimeout) if !left.is_zero() => {
                if client_gone() {
                    return Err(Error::PeerGone);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Send the request body within the worker's credit. Returns the answer if
/// it came before the body was all sent (the upstream answered early).
fn upload(
    stream: &mut Stream,
    body: &mut dyn Read,
    wait: Duration,
) -> Result<Option<Frame>, Error> {
    let id = stream.id;
    let mut sending = Sending::new(stream, wait);
    let mut buf = vec![0u8; UPLOAD_PIECE];
    loop {
        let got = read_full(body, &mut buf)?;
        if got == 0 {
            sending.finish();
            return Ok(None);
        }
        if sending.write_all(&buf[..got]).is_ok() {
            continue;
        }
        return match sending.stopped() {
            Some(Stopped::Answered) => Ok(sending.answer()),
            Some(Stopped::Aborted(reason)) => Ok(Some(Frame::Abort { id, reason })),
            Some(stopped @ (Stopped::TimedOut | Stopped::Gone)) => {
                Err(stopped.gateway_error("upstream"))
            }
            None => Err(Error::UpstreamBroken("worker gone")),
        };
    }
}

/// A proxied response body, piece by piece, granting credit as it goes.
struct StreamBody {
    body: Receiving<Stream>,
    /// Counts the request as in flight to its upstream (least-conn).
    _lease: Option<Lease>,
}

impl BodySource for StreamBody {
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        self.body
            .next_piece()
            .map_err(|s| s.gateway_error("upstream"))
    }

    fn try_next_chunk(&mut self) -> Option<Result<Option<Vec<u8>>, Error>> {
        Some(
            self.body
                .try_next_piece()?
                .map_err(|s| s.gateway_error("upstream")),
        )
    }
}

/// Rank 0's end of a CONNECT tunnel.
struct ClientTunnel {
    stream: Stream,
    /// What the worker granted before the tunnel opened.
    credit: u64,
}

impl Tunnel for ClientTunnel {
    fn run(mut self: Box<Self>, pending: &[u8], client: &dyn Duplex) -> u64 {
        let transport = Arc::clone(self.stream.transport());
        let send = move |f: Frame| transport.send(f);
        let credit = self.credit;
        let mut ends = tunnel::Ends {
            id: self.stream.id,
            rx: &mut self.stream,
            send: &send,
        };
        let sent = tunnel::relay(&mut ends, pending, client, credit, tunnel::IDLE_TIMEOUT);
        // The relay ended both directions, or sent the abort itself.
        self.stream.finished = true;
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_methods_go_to_a_second_upstream_unless_the_route_says() {
        assert!(!may_retry(Method::Post, false) && may_retry(Method::Post, true));
        assert!(may_retry(Method::Put, false) && !may_retry(Method::Patch, false));
        assert!(may_retry(Method::Get, false) && may_retry(Method::Delete, false));
    }
}
