//! Active health checks. On rank 0, one thread per checked upstream sends
//! a GET of the route's `health=` path through the `Transport`, like any
//! proxied request: one worker rank runs each probe and its answer comes
//! back over MPI, so an upstream is probed once per interval for the whole
//! cluster, however many ranks there are. The verdict is kept in the
//! route's `Backends`, on rank 0, where every request is routed.

use super::backends::Backends;
use super::route::HealthCheck;
use crate::error::Error;
use crate::stream::transport::{Stream, Transport};
use crate::stream::wire::{AbortReason, Frame, ProxyRequest, Service};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

/// Start the checks of every pool that has them.
pub fn start(pools: &[Arc<Backends>], transport: &Arc<dyn Transport>) {
    for pool in pools {
        let Some(check) = pool.spec.health.clone() else {
            continue;
        };
        for index in 0..pool.size() {
            let pool = Arc::clone(pool);
            let transport = Arc::clone(transport);
            let check = check.clone();
            let spawned = thread::Builder::new()
                .name("health".into())
                .spawn(move || loop {
                    let began = Instant::now();
                    if let Some((passed, detail)) = probe(&transport, &pool, index, &check) {
                        pool.checked(index, passed, &detail);
                    }
                    thread::sleep(check.interval.saturating_sub(began.elapsed()));
                });
            if let Err(e) = spawned {
                log::error!("cannot start a health check thread: {e}");
            }
        }
    }
}

/// One check of upstream `index`: whether it passed and what was seen.
/// `None` when no worker could run it (that says nothing of the upstream).
fn probe(
    transport: &Arc<dyn Transport>,
    pool: &Backends,
    index: usize,
    check: &HealthCheck,
) -> Option<(bool, String)> {
    let up = &pool.spec.upstreams[index];
    let opened = Stream::open(transport, |id| Frame::Open {
        id,
        service: Service::Proxy(Box::new(ProxyRequest {
            upstream: up.authority.clone().into_bytes(),
            method: b"GET".to_vec(),
            target: check.path.clone().into_bytes(),
            fields: vec![
                (b"Host".to_vec(), up.host.clone().into_bytes()),
                (b"User-Agent".to_vec(), b"mpiweb-health-check".to_vec()),
            ],
            has_body: false,
            length: None,
        })),
    });
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(_) => return None,
    };
    let until = Instant::now() + check.timeout;
    let mut verdict: Option<(bool, String)> = None;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match stream.recv(left) {
            Ok(Frame::Head { status, .. }) => {
                verdict = Some(((200..400).contains(&status), format!("status {status}")));
            }
            // The body is read to its end, so the worker keeps the
            // connection for the next check.
            Ok(Frame::End { .. }) => return verdict,
            Ok(Frame::Abort {
                reason: AbortReason::Refused,
                ..
            }) => return None,
            Ok(Frame::Abort { reason, .. }) => {
                return Some((false, format!("{reason:?}").to_lowercase()))
            }
            Ok(_) => {}
            // A head in time is the verdict, however slow the body; the
            // stream's drop aborts what is left on the worker.
            Err(Error::UpstreamTimeout) => {
                return Some(
                    verdict.unwrap_or_else(|| {
                        (false, format!("no answer within {:?}", check.timeout))
                    }),
                )
            }
            // The worker went away: nothing learned of the upstream.
            Err(_) => return None,
        }
    }
}
