//! SIGTERM, SIGINT, SIGUSR2 and SIGHUP. The handlers only touch atomics
//! (all a signal handler may safely do), and the threads that care look at
//! them: the first SIGTERM, SIGINT or SIGUSR2 asks for a graceful stop, a
//! second one ends the process at once; SIGHUP asks the access log to
//! reopen its file. SIGUSR2 is the stop Open MPI's launcher passes on:
//! `mpirun.openmpi` turns SIGTERM and SIGINT into SIGKILL of every rank
//! two seconds later, but forwards SIGUSR1 and SIGUSR2 and keeps waiting.
//! SIGUSR1 only notes a death: MPICH's launcher sends it to every rank
//! each time one dies (its default action would end the survivors too),
//! and rank 0 then takes a silent worker for dead at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Stop signals received so far.
static STOPS: AtomicUsize = AtomicUsize::new(0);
/// A SIGUSR1 (a rank died) not yet acted on.
static DEATH: AtomicBool = AtomicBool::new(false);
/// A SIGHUP not yet acted on.
static REOPEN: AtomicBool = AtomicBool::new(false);
/// Exit code after a second stop signal (128 + SIGTERM, as a shell reports it).
const FORCED_EXIT: i32 = 143;

extern "C" fn on_stop(_: libc::c_int) {
    if STOPS.fetch_add(1, Ordering::SeqCst) >= 1 {
        // SAFETY: `_exit` is async-signal-safe; nothing else is touched.
        unsafe { libc::_exit(FORCED_EXIT) };
    }
}

extern "C" fn on_death(_: libc::c_int) {
    DEATH.store(true, Ordering::SeqCst);
}

extern "C" fn on_hangup(_: libc::c_int) {
    REOPEN.store(true, Ordering::SeqCst);
}

/// Install the handlers for this process.
pub fn install() {
    let handlers: [(libc::c_int, extern "C" fn(libc::c_int)); 5] = [
        (libc::SIGTERM, on_stop),
        (libc::SIGINT, on_stop),
        (libc::SIGUSR2, on_stop),
        (libc::SIGHUP, on_hangup),
        (libc::SIGUSR1, on_death),
    ];
    for (signal, handler) in handlers {
        // SAFETY: a zeroed sigaction with a handler that only uses atomics
        // and `_exit`; SA_RESTART keeps blocking calls from failing.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                log::warn!("cannot handle signal {signal}");
            }
        }
    }
}

/// Whether a stop was asked for.
pub fn stop_requested() -> bool {
    STOPS.load(Ordering::SeqCst) > 0
}

/// Whether a SIGUSR1 (a rank died) came since the last call.
pub fn take_death_notice() -> bool {
    DEATH.swap(false, Ordering::SeqCst)
}

/// Whether a SIGHUP came since the last call.
pub fn take_reopen() -> bool {
    REOPEN.swap(false, Ordering::SeqCst)
}
