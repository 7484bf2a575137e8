//! One request to an upstream and its answer, in the steps both ways of
//! running it share: a worker's pool thread, which sends the answer on as
//! frames (`worker`), and a lone process's connection thread, which reads
//! it itself as it writes it to the client (`inline`).

use super::hop::forward_response_fields;
use super::upstream::Conn;
use crate::error::Error;
use crate::http::body::BodyFraming;
use crate::http::request::parse_content_length;
use crate::http::response_head::ResponseHead;
use crate::http::Method;
use crate::stream::credit::CHUNK;
use crate::stream::wire::{AbortReason, Fields, Frame, ProxyRequest, Service};
use std::cell::RefCell;

/// How an exchange failed: tell rank 0 why, or stay quiet because rank 0
/// ended the stream itself.
pub enum Failure {
    Abort(AbortReason),
    Quiet,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Abort(AbortReason::of(&e))
    }
}

/// A connection that could not be made: nothing reached the upstream, so
/// rank 0 may try another.
pub fn connect_failure(e: Error) -> Failure {
    match e {
        Error::UpstreamTimeout => Failure::Abort(AbortReason::ConnectTimeout),
        _ => Failure::Abort(AbortReason::Unreachable),
    }
}

/// Whether `failure`, met on `conn` before one byte of an answer, may be a
/// pooled connection the upstream closed while it sat idle (or reset):
/// then the request is sent once more, whatever its method, on a new
/// connection to the same upstream, when its body can be sent again whole.
pub fn may_resend(failure: &Failure, conn: &Conn) -> bool {
    matches!(
        failure,
        Failure::Abort(AbortReason::BadUpstream | AbortReason::Unreachable)
    ) && conn.may_be_stale()
}

/// A request as the runner sends it on.
pub struct Req {
    pub id: u64,
    pub authority: String,
    pub method: Method,
    pub target: Vec<u8>,
    pub fields: Vec<(String, Vec<u8>)>,
    pub framing: BodyFraming,
}

/// What an `Open` frame asks for.
pub enum Opened {
    /// A request to send on.
    Request(Req),
    /// A CONNECT tunnel to `authority`.
    Tunnel { id: u64, authority: String },
    /// A method no upstream is sent.
    Refused { id: u64 },
}

impl Req {
    /// The request `open` asks to send on; `open` comes back when it asks
    /// for no such thing (another frame, a CONNECT, an unknown method).
    pub fn from_open(open: Frame) -> Result<Req, Frame> {
        let method = match &open {
            Frame::Open {
                service: Service::Proxy(req),
                ..
            } => Method::from_token(&req.method),
            _ => None,
        };
        let (Some(method), false) = (method, method == Some(Method::Connect)) else {
            return Err(open);
        };
        let Frame::Open {
            id,
            service: Service::Proxy(req),
        } = open
        else {
            return Err(open);
        };
        let ProxyRequest {
            upstream,
            target,
            fields,
            has_body,
            length,
            ..
        } = *req;
        Ok(Req {
            id,
            authority: String::from_utf8_lossy(&upstream).into_owned(),
            method,
            target,
            fields: fields
                .into_iter()
                .map(|(n, v)| (String::from_utf8_lossy(&n).into_owned(), v))
                .collect(),
            framing: match (has_body, length) {
                (false, _) => BodyFraming::None,
                (true, Some(n)) => BodyFraming::Length(n),
                (true, None) => BodyFraming::Chunked,
            },
        })
    }
}

impl Opened {
    /// Read `open`; `None` for any other frame.
    pub fn from_frame(open: Frame) -> Option<Opened> {
        match Req::from_open(open) {
            Ok(req) => Some(Opened::Request(req)),
            Err(Frame::Open {
                id,
                service: Service::Proxy(req),
            }) => Some(match req.method == b"CONNECT" {
                true => Opened::Tunnel {
                    id,
                    authority: String::from_utf8_lossy(&req.upstream).into_owned(),
                },
                false => Opened::Refused { id },
            }),
            // Not a proxied request: none of the exchange's business.
            Err(
                Frame::Open { .. }
                | Frame::Head { .. }
                | Frame::Data { .. }
                | Frame::End { .. }
                | Frame::Abort { .. }
                | Frame::Credit { .. }
                | Frame::Ping { .. }
                | Frame::Pong { .. }
                | Frame::Stats { .. },
            ) => None,
        }
    }
}

/// Read the final response head: interim 1xx answers are skipped (the
/// client's `100-continue` was answered by rank 0), a 101 is refused.
pub fn read_final_head(conn: &mut Conn, method: Method) -> Result<ResponseHead, Failure> {
    loop {
        let head = conn.read_head(method)?;
        match head.status {
            101 => return Err(Failure::Abort(AbortReason::BadUpstream)),
            100..=199 => continue,
            _ => return Ok(head),
        }
    }
}

/// The `Head` frame that carries `head` to rank 0.
pub fn head_frame(id: u64, head: &ResponseHead) -> Frame {
    let length = match head.framing {
        BodyFraming::Length(n) => Some(n),
        // HEAD and 304 answers may state the length they do not carry.
        BodyFraming::None => head
            .field_all("content-length")
            .next()
            .and_then(|v| parse_content_length(v).ok()),
        BodyFraming::Chunked | BodyFraming::UntilClose => None,
    };
    let fields: Fields = forward_response_fields(head.fields(), head.minor)
        .into_iter()
        // Rank 0 writes its own Date and Server, as nginx does.
        .filter(|(n, _)| !n.eq_ignore_ascii_case("date") && !n.eq_ignore_ascii_case("server"))
        .map(|(n, v)| (n.into_bytes(), v))
        .collect();
    Frame::Head {
        id,
        status: head.status,
        fields,
        length,
    }
}

/// Log a failed exchange the way every runner does: rank 0 logs the
/// answer, and an upstream's change of state at warn.
pub fn log_abort(authority: &str, reason: AbortReason) {
    if reason != AbortReason::ClientGone {
        log::info!("upstream {authority}: {reason:?}");
    }
}

thread_local! {
    /// The upstream read buffer of a thread, kept for its next exchange:
    /// each piece sent is a copy of just what one read brought, so a small
    /// answer does not cost a fresh 256 KiB buffer.
    pub static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; CHUNK]);
}
