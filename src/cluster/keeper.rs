//! A worker rank's keeper. MPICH's launcher kills every rank of a host
//! when one of them dies from a signal (`kill -9`, a segfault), whatever
//! `-disable-auto-cleanup` says, but lets a plain non-zero exit pass. So
//! the process the launcher starts for a worker forks before MPI starts:
//! the child is the rank, and the parent, the keeper, only waits for it
//! and turns a death by signal into exit code `DIED`. Rank 0 is not kept:
//! when it dies, the job ends.
//!
//! The keeper ignores the stop signals: a worker ends when rank 0 tells it
//! to, over MPI (it only notes a stop signal of its own), and a launcher
//! that kills the keeper kills the rank with it (`PR_SET_PDEATHSIG`).
//! Passing them on made a worker see the launcher's SIGTERM twice (once
//! for its process group), which is the forced stop.
//!
//! The keeper re-executes this binary as `mpiweb-keeper --keeper-of PID`,
//! so that it does not pass for a rank: its command line and name differ
//! (`pgrep -x mpiweb` and a search for the binary's path find ranks
//! only), and it holds none of the rank's memory.

/// The keeper's exit code when its rank died from a signal.
pub const DIED: i32 = 70;

/// This process's rank as its launcher gave it, before MPI starts.
fn launcher_rank() -> Option<u32> {
    ["PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// The argument that makes this binary a keeper of the pid after it.
const KEEPER_OF: &str = "--keeper-of";

/// If this process was started as a keeper (`mpiweb-keeper --keeper-of
/// PID`), keep that rank and exit with its code; otherwise return.
pub fn run_if_keeper() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [flag, child] = args.as_slice() else {
        return;
    };
    if flag != KEEPER_OF {
        return;
    }
    let (Ok(child), Some(rank)) = (child.parse(), launcher_rank()) else {
        eprintln!("mpiweb: {KEEPER_OF} needs the pid of a rank started by mpirun");
        std::process::exit(2);
    };
    std::process::exit(keep(rank, child));
}

/// On a worker rank under a launcher, become its keeper: fork, return in
/// the child (the rank), and in the parent wait for the child and exit
/// with its code (`DIED` for a death by signal). Elsewhere, or if the fork
/// fails (one warning line), return at once: the rank runs unkept.
/// Must be called while the process has one thread, before MPI starts.
pub fn keep_worker() {
    let Some(rank) = launcher_rank().filter(|&r| r > 0) else {
        return;
    };
    // SAFETY: the process has one thread here (nothing is started before
    // this call), so the child may run on freely.
    let pid = unsafe { libc::fork() };
    match pid {
        0 => {
            // The rank ends with its keeper: a launcher that kills the
            // keeper leaves no orphan rank behind.
            // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        }
        -1 => {
            let e = std::io::Error::last_os_error();
            eprintln!(
                "mpiweb[{rank}]: cannot fork a keeper ({e}): a crash of this rank ends the job"
            );
        }
        child => {
            become_keeper(child);
            // The binary could not be executed again: keep from here.
            std::process::exit(keep(rank, child));
        }
    }
}

/// Execute this binary again as the keeper of `child`; returns only if
/// that failed.
fn become_keeper(child: libc::pid_t) {
    let pid = std::ffi::CString::new(child.to_string()).unwrap_or_default();
    let argv = [
        c"mpiweb-keeper".as_ptr(),
        c"--keeper-of".as_ptr(),
        pid.as_ptr(),
        std::ptr::null(),
    ];
    // SAFETY: a NUL-terminated path and a null-terminated array of
    // NUL-terminated strings that outlive the call; /proc/self/exe is this
    // very binary even if its file was replaced since.
    unsafe { libc::execv(c"/proc/self/exe".as_ptr(), argv.as_ptr()) };
}

/// The keeper: wait for `child` and return the exit code to leave with.
fn keep(rank: u32, child: libc::pid_t) -> i32 {
    // SAFETY: PR_SET_NAME takes a NUL-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"mpiweb-keeper".as_ptr()) };
    let ignored = [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGHUP,
    ];
    for signal in ignored {
        // SAFETY: SIG_IGN is a valid disposition for each of them.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `child` is our child.
        let got = unsafe { libc::waitpid(child, &mut status, 0) };
        if got == child {
            break;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return DIED;
        }
    }
    if libc::WIFEXITED(status) {
        return libc::WEXITSTATUS(status);
    }
    let signal = libc::WTERMSIG(status);
    let line = format!("mpiweb[{rank}]: the rank (pid {child}) died of signal {signal}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    DIED
}
