//! The one error type of mpiweb and the one map from an error to a status code.
//!
//! Every failure is a noun that knows whose fault it is (STYLE.md rules 2
//! and 3): the downstream client's (4xx), an upstream's (502/504), ours
//! (500), or a peer that went away (nothing can be written at all).

use std::fmt;
use std::io;

/// `ELOOP` on Linux (too many symbolic links), which std has no stable kind for.
const ELOOP: i32 = 40;

/// Everything that can end a request early.
#[derive(Debug)]
pub enum Error {
    /// A request line, header or body framing that breaks RFC 9112 (400).
    BadRequest(&'static str),
    /// A method token we do not implement (501, RFC 9110 §9.1).
    UnknownMethod,
    /// A transfer coding other than `chunked` (501, RFC 9112 §6.1).
    UnknownTransferCoding,
    /// An HTTP major version other than 1 (505, RFC 9110 §15.6.6).
    VersionNotSupported,
    /// A request target longer than the limit (414).
    UriTooLong,
    /// A head over the byte limit or the header-count limit (431).
    HeadTooLarge,
    /// A body over the configured limit (413).
    BodyTooLarge,
    /// The head did not arrive within the header timeout (408).
    HeadTimeout,
    /// An `Expect` other than `100-continue` (417, RFC 9110 §10.1.1).
    ExpectationFailed,
    /// The target exists but may not be served: traversal, symlink escape (403).
    Forbidden,
    /// A write to the store without its token.
    Unauthorized,
    /// Nothing at that path (404).
    NotFound,
    /// The method is known but not allowed on this resource (405); the
    /// value is the `Allow` header.
    MethodNotAllowed(&'static str),
    /// A precondition (`If-Match`, `If-Unmodified-Since`) is false (412).
    PreconditionFailed,
    /// A byte range that lies past the end; the value is the length (416).
    RangeNotSatisfiable(u64),
    /// The connection cap is reached, or a store replica cannot be reached
    /// (503).
    Overloaded,
    /// A store replica's disk is full (507, RFC 4918 §11.5): the write was
    /// not kept.
    InsufficientStorage,
    /// An upstream answered with something that is not valid HTTP/1.1 (502).
    UpstreamBroken(&'static str),
    /// An upstream could not be resolved or refused the connection (502).
    UpstreamUnreachable(String),
    /// An upstream did not answer within the upstream timeout (504).
    UpstreamTimeout,
    /// Every upstream of the route is out of rotation (503); the value is
    /// the `Retry-After` in seconds.
    NoHealthyUpstream(u64),
    /// Our own failure: a file that cannot be read, a bug (500).
    Internal(String),
    /// The downstream peer closed or reset the connection: write nothing.
    PeerGone,
}

/// Who caused an error, which decides what the connection does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Downstream,
    Upstream,
    Ours,
    Gone,
}

impl Error {
    /// The status code for this error; `None` when nothing can be sent.
    ///
    /// One exhaustive `match`, no wildcard arm: a new variant must decide.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::BadRequest(_) => Some(400),
            Error::UnknownMethod => Some(501),
            Error::UnknownTransferCoding => Some(501),
            Error::VersionNotSupported => Some(505),
            Error::UriTooLong => Some(414),
            Error::HeadTooLarge => Some(431),
            Error::BodyTooLarge => Some(413),
            Error::HeadTimeout => Some(408),
            Error::ExpectationFailed => Some(417),
            Error::Forbidden => Some(403),
            Error::Unauthorized => Some(401),
            Error::NotFound => Some(404),
            Error::MethodNotAllowed(_) => Some(405),
            Error::PreconditionFailed => Some(412),
            Error::RangeNotSatisfiable(_) => Some(416),
            Error::Overloaded => Some(503),
            Error::InsufficientStorage => Some(507),
            Error::UpstreamBroken(_) | Error::UpstreamUnreachable(_) => Some(502),
            Error::UpstreamTimeout => Some(504),
            Error::NoHealthyUpstream(_) => Some(503),
            Error::Internal(_) => Some(500),
            Error::PeerGone => None,
        }
    }

    /// Whose fault the error is.
    pub fn fault(&self) -> Fault {
        match self {
            Error::PeerGone => Fault::Gone,
            Error::UpstreamBroken(_)
            | Error::UpstreamUnreachable(_)
            | Error::UpstreamTimeout
            | Error::NoHealthyUpstream(_) => Fault::Upstream,
            Error::Internal(_) | Error::Overloaded | Error::InsufficientStorage => Fault::Ours,
            Error::BadRequest(_)
            | Error::UnknownMethod
            | Error::UnknownTransferCoding
            | Error::VersionNotSupported
            | Error::UriTooLong
            | Error::HeadTooLarge
            | Error::BodyTooLarge
            | Error::HeadTimeout
            | Error::ExpectationFailed
            | Error::Forbidden
            | Error::Unauthorized
            | Error::NotFound
            | Error::MethodNotAllowed(_)
            | Error::PreconditionFailed
            | Error::RangeNotSatisfiable(_) => Fault::Downstream,
        }
    }

    /// Whether the connection must close after this error's response: after
    /// a broken head or body nobody knows where the next request starts
    /// (STYLE.md rule 3); after our own failure the state is unknown.
    pub fn closes_connection(&self) -> bool {
        match self {
            Error::BadRequest(_)
            | Error::UnknownMethod
            | Error::UnknownTransferCoding
            | Error::VersionNotSupported
            | Error::UriTooLong
            | Error::HeadTooLarge
            | Error::BodyTooLarge
            | Error::HeadTimeout
            | Error::ExpectationFailed
            | Error::Overloaded
            | Error::Internal(_)
            | Error::PeerGone => true,
            // The client's own message was fine and fully read.
            Error::UpstreamBroken(_)
            | Error::UpstreamUnreachable(_)
            | Error::UpstreamTimeout
            | Error::NoHealthyUpstream(_) => false,
            // The body was read whole; only the disk said no.
            Error::InsufficientStorage => false,
            Error::Forbidden
            | Error::Unauthorized
            | Error::NotFound
            | Error::MethodNotAllowed(_)
            | Error::PreconditionFailed
            | Error::RangeNotSatisfiable(_) => false,
        }
    }

    /// Map an I/O error on the downstream connection: a reset or a closed
    /// socket means the peer is gone; a timeout while reading the head is
    /// the caller's to turn into 408.
    pub fn from_downstream_io(e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut => Error::PeerGone,
            _ => Error::Internal(e.to_string()),
        }
    }

    /// Map an I/O error on an upstream connection: a timeout is 504, a
    /// refused or reset connection 502.
    pub fn from_upstream_io(e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::UpstreamTimeout,
            _ => Error::UpstreamUnreachable(e.to_string()),
        }
    }

    /// Whether an I/O error says the disk is full: ENOSPC, or EDQUOT (a
    /// quota), which std names only on newer releases.
    pub fn is_no_space(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(code) if code == libc::ENOSPC || code == libc::EDQUOT)
    }

    /// Map an I/O error met while opening or reading a file under the root.
    pub fn from_fs_io(e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::NotFound
            | io::ErrorKind::NotADirectory
            | io::ErrorKind::InvalidFilename => Error::NotFound,
            io::ErrorKind::PermissionDenied => Error::Forbidden,
            // ELOOP: a symlink loop leads nowhere we would serve.
            _ if e.raw_os_error() == Some(ELOOP) => Error::Forbidden,
            _ => Error::Internal(e.to_string()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadRequest(why) => write!(f, "bad request: {why}"),
            Error::UpstreamBroken(why) => write!(f, "bad upstream response: {why}"),
            Error::UpstreamUnreachable(why) => write!(f, "upstream unreachable: {why}"),
            Error::Internal(why) => write!(f, "internal error: {why}"),
            Error::MethodNotAllowed(allow) => write!(f, "method not allowed (allow: {allow})"),
            Error::RangeNotSatisfiable(len) => write!(f, "range not satisfiable (length {len})"),
            Error::PeerGone => write!(f, "peer closed the connection"),
            other => match other.status() {
                Some(code) => write!(f, "{code} {}", crate::http::reason(code)),
                None => write!(f, "{other:?}"),
            },
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let cases: &[(Error, Option<u16>, Fault)] = &[
            (Error::BadRequest("x"), Some(400), Fault::Downstream),
            (Error::UnknownMethod, Some(501), Fault::Downstream),
            (Error::UnknownTransferCoding, Some(501), Fault::Downstream),
            (Error::VersionNotSupported, Some(505), Fault::Downstream),
            (Error::UriTooLong, Some(414), Fault::Downstream),
            (Error::HeadTooLarge, Some(431), Fault::Downstream),
            (Error::BodyTooLarge, Some(413), Fault::Downstream),
            (Error::HeadTimeout, Some(408), Fault::Downstream),
            (Error::Forbidden, Some(403), Fault::Downstream),
            (Error::Unauthorized, Some(401), Fault::Downstream),
            (Error::RangeNotSatisfiable(3), Some(416), Fault::Downstream),
            (Error::Overloaded, Some(503), Fault::Ours),
            (Error::InsufficientStorage, Some(507), Fault::Ours),
            (Error::UpstreamBroken("x"), Some(502), Fault::Upstream),
            (
                Error::UpstreamUnreachable("x".into()),
                Some(502),
                Fault::Upstream,
            ),
            (Error::UpstreamTimeout, Some(504), Fault::Upstream),
            (Error::NoHealthyUpstream(2), Some(503), Fault::Upstream),
            (Error::Internal("x".into()), Some(500), Fault::Ours),
            (Error::PeerGone, None, Fault::Gone),
        ];
        for (err, status, fault) in cases {
            assert_eq!(err.status(), *status, "{err:?}");
            assert_eq!(err.fault(), *fault, "{err:?}");
        }
    }

    #[test]
    fn io_errors_map_by_side() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(matches!(Error::from_downstream_io(reset), Error::PeerGone));
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert!(matches!(Error::from_fs_io(missing), Error::NotFound));
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(matches!(Error::from_fs_io(denied), Error::Forbidden));
        let long = io::Error::from(io::ErrorKind::InvalidFilename);
        assert!(matches!(Error::from_fs_io(long), Error::NotFound));
        let looped = io::Error::from_raw_os_error(ELOOP);
        assert!(matches!(Error::from_fs_io(looped), Error::Forbidden));
    }
}
