//! A pool of threads for blocking upstream work: a job goes to an idle
//! thread, or to a new one when none is idle, so one slow upstream never
//! holds up another request. Threads idle for a while end.

use crate::config;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// How long a thread waits for work before it ends.
const IDLE_FOR: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Threads waiting for work, minus jobs queued for them.
    idle: usize,
}

#[derive(Default)]
pub struct Threads {
    shared: Arc<(Mutex<State>, Condvar)>,
}

impl Threads {
    pub fn new() -> Threads {
        Threads::default()
    }

    /// Run `job` on a pool thread.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let job: Job = Box::new(job);
        let (lock, cv) = &*self.shared;
        {
            let mut st = relock(lock);
            if st.idle > 0 {
                st.idle -= 1;
                st.queue.push_back(job);
                cv.notify_one();
                return;
            }
        }
        let shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new()
            .name("upstream".into())
            .stack_size(config::CONNECTION_STACK_BYTES)
            .spawn(move || work(job, &shared));
        if let Err(e) = spawned {
            log::error!("cannot start an upstream thread: {e}");
        }
    }

    /// Threads waiting for work now.
    pub fn idle(&self) -> usize {
        relock(&self.shared.0).idle
    }
}

/// The pool's state. Poisoned, it is recovered: no job runs under the
/// lock, only a counter and a queue change, each in one step, so the state
/// is whole; giving up instead would drop a job (a request) without a word.
fn relock(lock: &Mutex<State>) -> MutexGuard<'_, State> {
    lock.lock().unwrap_or_else(|p| p.into_inner())
}

fn work(first: Job, shared: &(Mutex<State>, Condvar)) {
    first();
    let (lock, cv) = shared;
    let mut st = relock(lock);
    st.idle += 1;
    loop {
        if let Some(job) = st.queue.pop_front() {
            drop(st);
            job();
            st = relock(lock);
            st.idle += 1;
            continue;
        }
        // Recovered when poisoned, as in `relock`.
        let (next, timeout) = cv
            .wait_timeout(st, IDLE_FOR)
            .unwrap_or_else(|p| p.into_inner());
        st = next;
        if timeout.timed_out() && st.queue.is_empty() {
            st.idle -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Instant;

    #[test]
    fn slow_jobs_do_not_hold_up_others_and_threads_are_reused() {
        let pool = Threads::new();
        let (tx, rx) = channel();
        let t0 = Instant::now();
        for i in 0..16 {
            let tx = tx.clone();
            pool.run(move || {
                thread::sleep(Duration::from_millis(200));
                let _ = tx.send((i, thread::current().id()));
            });
        }
        let mut first: Vec<_> = (0..16).map(|_| rx.recv().unwrap()).collect();
        // Sixteen sleeps of 200 ms ran side by side, not one after another.
        assert!(
            t0.elapsed() < Duration::from_millis(1600),
            "{:?}",
            t0.elapsed()
        );
        first.sort_by_key(|p| p.0);
        let until = Instant::now() + Duration::from_secs(10);
        while pool.idle() < 16 && Instant::now() < until {
            thread::yield_now();
        }
        assert_eq!(pool.idle(), 16);
        // The same threads take the next round.
        for i in 0..16 {
            let tx = tx.clone();
            pool.run(move || {
                let _ = tx.send((i, thread::current().id()));
            });
        }
        let ids: Vec<_> = first.iter().map(|p| p.1).collect();
        for _ in 0..16 {
            let (_, id) = rx.recv().unwrap();
            assert!(ids.contains(&id));
        }
    }
}
