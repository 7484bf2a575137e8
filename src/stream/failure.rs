//! One failure across the hop. A stream that fails ends with an `Abort`
//! whose `AbortReason` crosses the wire unchanged; this is where it is
//! made from the error a runner met (`of`), where it says whose fault it
//! is and whether the request may go elsewhere, and the one place it
//! becomes the error a client gets, and so its status (`Error::status`):
//! behind a gateway (proxied requests) or at an origin (the store, whose
//! replicas are rank 0's own).

use super::credit::Stopped;
use super::wire::AbortReason;
use crate::error::{Error, Fault};

impl AbortReason {
    /// The reason an error met while running a stream is sent as. Every
    /// variant decided one by one (no wildcard: a new one must be placed).
    pub fn of(e: &Error) -> AbortReason {
        match e {
            Error::UpstreamTimeout => AbortReason::Timeout,
            Error::UpstreamUnreachable(_) => AbortReason::Unreachable,
            Error::InsufficientStorage => AbortReason::NoSpace,
            Error::Overloaded | Error::NoHealthyUpstream(_) => AbortReason::Refused,
            // The downstream side went away while the runner waited on it.
            Error::PeerGone => AbortReason::ClientGone,
            // What the upstream sent broke a rule (a bad head, a body past
            // its length), or reading it failed in our own code.
            Error::UpstreamBroken(_)
            | Error::Internal(_)
            | Error::BadRequest(_)
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
            | Error::RangeNotSatisfiable(_) => AbortReason::BadUpstream,
        }
    }

    /// Whose fault it is: the upstream's counts against it (passive
    /// health), ours does not, and a client that left hears nothing.
    pub fn fault(self) -> Fault {
        match self {
            AbortReason::Unreachable
            | AbortReason::Timeout
            | AbortReason::ConnectTimeout
            | AbortReason::BadUpstream => Fault::Upstream,
            AbortReason::Refused | AbortReason::NoSpace | AbortReason::WorkerLost => Fault::Ours,
            AbortReason::ClientGone => Fault::Gone,
        }
    }

    /// Whether nothing of the request reached an upstream: no connection
    /// was made, or no worker took it. (A stream lost with its worker may
    /// have reached one; the dispatcher sends it again only when it may
    /// run twice.)
    pub fn nothing_sent(self) -> bool {
        match self {
            AbortReason::Refused | AbortReason::Unreachable | AbortReason::ConnectTimeout => true,
            AbortReason::Timeout
            | AbortReason::BadUpstream
            | AbortReason::ClientGone
            | AbortReason::NoSpace
            | AbortReason::WorkerLost => false,
        }
    }

    /// The error a client gets when rank 0 is a gateway to `upstream`
    /// (proxied requests, tunnels).
    pub fn gateway_error(self, upstream: &str) -> Error {
        match self {
            AbortReason::Unreachable => Error::UpstreamUnreachable(upstream.to_string()),
            AbortReason::Timeout | AbortReason::ConnectTimeout => Error::UpstreamTimeout,
            AbortReason::BadUpstream => Error::UpstreamBroken("broken upstream response"),
            AbortReason::Refused => Error::Overloaded,
            AbortReason::ClientGone => Error::UpstreamBroken("stream aborted"),
            AbortReason::NoSpace => Error::InsufficientStorage,
            AbortReason::WorkerLost => Error::UpstreamBroken("the worker running it died"),
        }
    }

    /// The error a client gets when rank 0 is the origin and a worker of
    /// its own could not do the work (the store): a full disk is 507;
    /// anything else leaves the store unable for now, 503 (another replica
    /// is tried first where there is one).
    pub fn origin_error(self) -> Error {
        match self {
            AbortReason::NoSpace => Error::InsufficientStorage,
            AbortReason::ClientGone
            | AbortReason::Unreachable
            | AbortReason::Timeout
            | AbortReason::BadUpstream
            | AbortReason::Refused
            | AbortReason::ConnectTimeout
            | AbortReason::WorkerLost => Error::Overloaded,
        }
    }
}

impl Stopped {
    /// The error a client gets for a body that stopped crossing the hop,
    /// behind a gateway to `upstream`.
    pub fn gateway_error(self, upstream: &str) -> Error {
        match self {
            Stopped::Aborted(reason) => reason.gateway_error(upstream),
            Stopped::TimedOut => Error::UpstreamTimeout,
            Stopped::Gone | Stopped::Answered => Error::UpstreamBroken("worker gone"),
        }
    }

    /// The same when rank 0 is the origin (a store write).
    pub fn origin_error(self) -> Error {
        match self {
            Stopped::Aborted(reason) => reason.origin_error(),
            Stopped::TimedOut => Error::UpstreamTimeout,
            Stopped::Gone | Stopped::Answered => Error::Overloaded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [AbortReason; 8] = [
        AbortReason::ClientGone,
        AbortReason::Unreachable,
        AbortReason::Timeout,
        AbortReason::BadUpstream,
        AbortReason::Refused,
        AbortReason::ConnectTimeout,
        AbortReason::NoSpace,
        AbortReason::WorkerLost,
    ];

    #[test]
    fn each_reason_has_its_status_fault_and_retry() {
        // (reason, behind a gateway, at an origin, fault, nothing sent)
        let table = [
            (AbortReason::ClientGone, 502, 503, Fault::Gone, false),
            (AbortReason::Unreachable, 502, 503, Fault::Upstream, true),
            (AbortReason::Timeout, 504, 503, Fault::Upstream, false),
            (AbortReason::BadUpstream, 502, 503, Fault::Upstream, false),
            (AbortReason::Refused, 503, 503, Fault::Ours, true),
            (AbortReason::ConnectTimeout, 504, 503, Fault::Upstream, true),
            (AbortReason::NoSpace, 507, 507, Fault::Ours, false),
            (AbortReason::WorkerLost, 502, 503, Fault::Ours, false),
        ];
        assert_eq!(table.len(), ALL.len());
        for (reason, gateway, origin, fault, nothing_sent) in table {
            assert_eq!(
                reason.gateway_error("u").status(),
                Some(gateway),
                "{reason:?}"
            );
            assert_eq!(reason.origin_error().status(), Some(origin), "{reason:?}");
            assert_eq!(reason.fault(), fault, "{reason:?}");
            assert_eq!(reason.nothing_sent(), nothing_sent, "{reason:?}");
        }
    }

    #[test]
    fn a_body_that_stopped_gives_the_same_errors() {
        for reason in ALL {
            let gateway = Stopped::Aborted(reason).gateway_error("u").status();
            assert_eq!(gateway, reason.gateway_error("u").status(), "{reason:?}");
            let origin = Stopped::Aborted(reason).origin_error().status();
            assert_eq!(origin, reason.origin_error().status(), "{reason:?}");
        }
        for (stopped, gateway, origin) in [
            (Stopped::TimedOut, 504, 504),
            (Stopped::Gone, 502, 503),
            (Stopped::Answered, 502, 503),
        ] {
            assert_eq!(stopped.gateway_error("u").status(), Some(gateway));
            assert_eq!(stopped.origin_error().status(), Some(origin));
        }
    }

    #[test]
    fn a_reason_made_from_an_error_gives_an_error_of_the_same_status() {
        for e in [
            Error::UpstreamTimeout,
            Error::UpstreamUnreachable("u".into()),
            Error::InsufficientStorage,
            Error::Overloaded,
            Error::UpstreamBroken("x"),
        ] {
            let back = AbortReason::of(&e).gateway_error("u");
            assert_eq!(back.status(), e.status(), "{e:?}");
        }
        assert_eq!(AbortReason::of(&Error::PeerGone), AbortReason::ClientGone);
    }
}
