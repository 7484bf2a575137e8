//! A lone process's proxied request without a body, run on its own
//! connection thread: the request goes out and the answer comes back as
//! frames that the thread writing them to the client pulls itself, one
//! step at a time. No other thread, no channel, no credit: the client's
//! socket is the back-pressure, and dropping the stream closes the upstream
//! connection (the client left).

use super::exchange::{
    connect_failure, head_frame, log_abort, may_resend, read_final_head, Failure, Req, READ_BUF,
};
use super::upstream::{Conn, Pool};
use crate::http::body::Paused;
use crate::stream::transport::Pull;
use crate::stream::wire::{AbortReason, Frame};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One request run on the thread that reads its answer.
pub struct Inline {
    pool: Arc<Pool>,
    req: Req,
    timeout: Duration,
    phase: Phase,
}

enum Phase {
    /// Nothing sent yet.
    Start,
    /// The request went out on the connection; its answer's head must
    /// come by the deadline (the upstream timeout).
    Sent(Conn, Instant),
    /// The head came; the body is read a piece at a time.
    Body {
        conn: Conn,
        body: Paused,
        keep_alive: bool,
    },
    /// The stream ended: its `End` or `Abort` was made.
    Ended,
}

impl Inline {
    /// `req` to be sent through `pool`, whose reads and writes wait at most
    /// `timeout`.
    pub fn new(pool: Arc<Pool>, req: Req, timeout: Duration) -> Inline {
        Inline {
            pool,
            req,
            timeout,
            phase: Phase::Start,
        }
    }

    /// Send the request head on `conn`; once more on a new connection
    /// when a pooled one proves stale.
    fn send(&self, mut conn: Conn) -> Result<Phase, Failure> {
        let req = &self.req;
        if let Err(e) = conn.send_head(req.method, &req.target, &req.fields, req.framing) {
            let failure = Failure::from(e);
            if !may_resend(&failure, &conn) {
                return Err(failure);
            }
            conn = self.fresh()?;
            conn.send_head(req.method, &req.target, &req.fields, req.framing)?;
        }
        Ok(Phase::Sent(conn, Instant::now() + self.timeout))
    }

    /// A new connection to the request's upstream.
    fn fresh(&self) -> Result<Conn, Failure> {
        log::debug!(
            "upstream {}: reused connection failed before answering; sending again",
            self.req.authority
        );
        self.pool
            .connect(&self.req.authority)
            .map_err(connect_failure)
    }

    /// The next frames, or `None` when nothing came within `wait`.
    fn step(&mut self, wait: Duration) -> Result<Option<Vec<Frame>>, Failure> {
        let id = self.req.id;
        loop {
            match std::mem::replace(&mut self.phase, Phase::Ended) {
                Phase::Start => {
                    let conn = self
                        .pool
                        .get(&self.req.authority)
                        .map_err(connect_failure)?;
                    self.phase = self.send(conn)?;
                }
                Phase::Sent(mut conn, deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if !conn.wait_answer(wait.min(left)) {
                        if Instant::now() >= deadline {
                            return Err(Failure::Abort(AbortReason::Timeout));
                        }
                        self.phase = Phase::Sent(conn, deadline);
                        return Ok(None);
                    }
                    let head = match read_final_head(&mut conn, self.req.method) {
                        Ok(head) => head,
                        Err(f) if may_resend(&f, &conn) => {
                            self.phase = self.send(self.fresh()?)?;
                            continue;
                        }
                        Err(f) => return Err(f),
                    };
                    let mut batch = vec![head_frame(id, &head)];
                    let body = conn.body(&head)?.pause();
                    self.phase = Phase::Body {
                        conn,
                        body,
                        keep_alive: head.keep_alive,
                    };
                    self.piece(&mut batch)?;
                    return Ok(Some(batch));
                }
                body @ Phase::Body { .. } => {
                    self.phase = body;
                    let mut batch = Vec::with_capacity(2);
                    self.piece(&mut batch)?;
                    return Ok(Some(batch));
                }
                Phase::Ended => return Err(Failure::Quiet),
            }
        }
    }

    /// Read the next piece of the body into `batch`, with the `End` when
    /// the body is done (the connection then goes back to the pool if the
    /// answer left it reusable).
    fn piece(&mut self, batch: &mut Vec<Frame>) -> Result<(), Failure> {
        let id = self.req.id;
        let Phase::Body {
            mut conn,
            body,
            keep_alive,
        } = std::mem::replace(&mut self.phase, Phase::Ended)
        else {
            return Ok(());
        };
        let mut reader = conn.resume_body(body);
        let read = match reader.is_done() {
            true => Ok(0),
            false => READ_BUF.with_borrow_mut(|buf| {
                reader.read_body(buf).inspect(|&n| {
                    if n > 0 {
                        batch.push(Frame::Data {
                            id,
                            bytes: buf[..n].to_vec(),
                        });
                    }
                })
            }),
        };
        // Mid-body, a timeout and a cut connection end the same way: the
        // client's message is cut short too.
        let n = read.map_err(|_| Failure::Abort(AbortReason::BadUpstream))?;
        let body = reader.pause();
        if n > 0 && !body.is_done() {
            self.phase = Phase::Body {
                conn,
                body,
                keep_alive,
            };
            return Ok(());
        }
        batch.push(Frame::End { id });
        if keep_alive && body.is_done() {
            self.pool.put(conn);
        }
        Ok(())
    }
}

impl Pull for Inline {
    fn pull(&mut self, timeout: Duration) -> Result<Vec<Frame>, RecvTimeoutError> {
        match self.step(timeout) {
            Ok(Some(batch)) => Ok(batch),
            Ok(None) => Err(RecvTimeoutError::Timeout),
            Err(Failure::Abort(reason)) => {
                self.phase = Phase::Ended;
                log_abort(&self.req.authority, reason);
                Ok(vec![Frame::Abort {
                    id: self.req.id,
                    reason,
                }])
            }
            Err(Failure::Quiet) => Err(RecvTimeoutError::Disconnected),
        }
    }
}
