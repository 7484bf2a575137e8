//! A copy of the request body sent so far, kept so that the request can be
//! sent again: to a second upstream (rank 0) or on a fresh connection after
//! a reused one failed before answering (the worker). Each copy is capped
//! (`config::REPLAY_LIMIT`) and all copies of a process together too
//! (`config::REPLAY_BUDGET`): beyond either, the body is not kept and the
//! request is not sent again, rather than memory growing with the load.

use crate::config;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes kept in every `Replay` of this process together.
static KEPT: AtomicUsize = AtomicUsize::new(0);

/// The request body read so far, kept for a second sending.
pub struct Replay {
    kept: Vec<u8>,
    limit: usize,
    /// Everything read so far is in `kept`.
    whole: bool,
    budget: &'static AtomicUsize,
}

impl Replay {
    /// Keep up to `limit` bytes (0: keep nothing, and a body makes the
    /// request unreplayable).
    pub fn new(limit: usize) -> Replay {
        Replay::with_budget(limit, &KEPT)
    }

    fn with_budget(limit: usize, budget: &'static AtomicUsize) -> Replay {
        Replay {
            kept: Vec::new(),
            limit,
            whole: true,
            budget,
        }
    }

    /// Keep `bytes` too, within this request's limit and the budget of
    /// all; otherwise give up keeping.
    pub fn keep(&mut self, bytes: &[u8]) {
        if !self.whole || bytes.is_empty() {
            return;
        }
        let n = bytes.len();
        let all = self.budget.fetch_add(n, Ordering::Relaxed) + n;
        if self.kept.len() + n <= self.limit && all <= config::REPLAY_BUDGET {
            self.kept.extend_from_slice(bytes);
            return;
        }
        self.budget.fetch_sub(n, Ordering::Relaxed);
        drop(self.take());
        self.whole = false;
    }

    /// What was kept, given back to the budget; nothing is kept after.
    pub fn take(&mut self) -> Vec<u8> {
        self.budget.fetch_sub(self.kept.len(), Ordering::Relaxed);
        self.limit = 0;
        std::mem::take(&mut self.kept)
    }

    /// Whether every byte read so far was kept: the body can be sent again.
    pub fn is_whole(&self) -> bool {
        self.whole
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.kept.len(), Ordering::Relaxed);
    }
}

/// Reads the request body and keeps a copy in `replay`, up to its limit.
pub struct Tee<'a> {
    pub inner: &'a mut dyn Read,
    pub replay: &'a mut Replay,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.replay.keep(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_was_read_within_its_limit_and_returns_the_budget() {
        static BUDGET: AtomicUsize = AtomicUsize::new(0);
        let kept = || BUDGET.load(Ordering::Relaxed);
        let replay = |limit| Replay::with_budget(limit, &BUDGET);
        let mut r = replay(10);
        r.keep(b"hello");
        assert_eq!((r.kept.as_slice(), kept()), (&b"hello"[..], 5));
        r.keep(b"world!");
        assert!(
            !r.is_whole() && r.kept.is_empty(),
            "over the limit: nothing kept"
        );
        assert_eq!(kept(), 0);
        r.keep(b"x");
        assert!(r.kept.is_empty(), "once given up, never again");

        let mut r = replay(10);
        r.keep(b"abc");
        assert_eq!(r.take(), b"abc");
        assert_eq!(kept(), 0);
        r.keep(b"d");
        assert!(!r.is_whole(), "taken: nothing more is kept");
        let mut r = replay(10);
        r.keep(b"xy");
        drop(r);
        assert_eq!(kept(), 0);

        // A limit of 0 keeps nothing; a body makes it unreplayable, no
        // body leaves it whole.
        let mut r = replay(0);
        r.keep(b"");
        assert!(r.is_whole());
        r.keep(b"a");
        assert!(!r.is_whole());

        // Through a Tee, in reads of any size.
        let mut r = replay(100);
        let mut body: &[u8] = b"0123456789abcdef";
        let mut tee = Tee {
            inner: &mut body,
            replay: &mut r,
        };
        let mut sent = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            let n = tee.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            sent.extend_from_slice(&buf[..n]);
        }
        assert_eq!(r.kept, sent);
        assert!(r.is_whole());
    }
}
