//! The system calls std does not expose: `sendfile(2)`, since std's
//! `io::copy` refuses file-to-socket sendfile on purpose; `listen(2)` again,
//! since std fixes the backlog at 128; `setrlimit(2)` for the open-file
//! limit; and `sched_setscheduler(2)` for the threads' policy.

use crate::http::response::SendFile;
use std::fs::File;
use std::io;
use std::net::{TcpListener, TcpStream};

/// Bytes per call, well under the 2 GiB a single sendfile may move.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
const CHUNK: u64 = 1 << 30;

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod ffi {
    use std::ffi::{c_int, c_long};
    extern "C" {
        /// ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count);
        /// off_t is 64 bits on every 64-bit Linux.
        pub fn sendfile(out_fd: c_int, in_fd: c_int, offset: *mut c_long, count: usize) -> isize;
    }
}

extern "C" {
    /// int listen(int sockfd, int backlog);
    fn listen(fd: std::ffi::c_int, backlog: std::ffi::c_int) -> std::ffi::c_int;
}

/// Set the accept backlog of a listening socket. Linux lets `listen` be
/// called again to change it; the kernel caps it at `net.core.somaxconn`.
/// std's 128 overflows when thousands of clients connect at once, and a
/// dropped SYN is retried only after a second or more.
pub fn set_backlog(listener: &TcpListener, backlog: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is a bound, listening socket owned by `listener`
    // for the whole call; listen(2) reads nothing from our memory.
    match unsafe { listen(listener.as_raw_fd(), backlog) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Raise the soft limit on open files to the hard limit, as Go's runtime
/// does at start: shells start programs with a soft limit of 1024, far
/// below what a server with a thread per connection needs, while the hard
/// limit is usually much higher. Returns the soft limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, exclusively borrowed rlimit for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // An unlimited hard limit still cannot be the soft one: Linux caps
    // open files at fs.nr_open.
    let ceiling = match lim.rlim_max {
        libc::RLIM_INFINITY => std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20),
        max => max,
    };
    if lim.rlim_cur >= ceiling {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: ceiling,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: `raised` is a valid rlimit that outlives the call.
    match unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } {
        0 => Ok(ceiling),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Put the calling thread, and every thread it starts from now on, under
/// Linux's `SCHED_BATCH` policy: the same share of the CPU at the same
/// nice value, but a thread that wakes does not preempt the one running on
/// its core; it runs when that one blocks or its slice ends. A request
/// wakes a chain of threads (a connection thread, a poller, a pool
/// thread); under the default policy each wake-up also pushed the waker
/// off its core, mid-batch, a switch more per wake-up. Measured with
/// proxied small answers at 50 connections: 9.0-9.2 switches per request
/// became 7.4-7.7 under mpirun, 2.8 became 2.2 alone, and req/s rose
/// 8-17%. Called before MPI starts any thread of its own.
pub fn batch_scheduling() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param
    // that outlives the call.
    match unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
impl SendFile for &TcpStream {
    fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<u64> {
        use std::os::fd::AsRawFd;
        let mut off = i64::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past i64"))?;
        let mut sent = 0u64;
        while sent < len {
            let count = (len - sent).min(CHUNK) as usize;
            // SAFETY: both descriptors are open for the duration of the call
            // (borrowed from `self` and `file`), and `off` is a valid,
            // exclusively borrowed off_t that the kernel updates.
            let n = unsafe { ffi::sendfile(self.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
            match n {
                0 => break, // the file ended early; the caller sees the short count
                n if n > 0 => sent += n as u64,
                _ => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::Interrupted => {}
                        // SO_SNDTIMEO expired: the client stopped reading.
                        io::ErrorKind::WouldBlock => return Err(io::ErrorKind::TimedOut.into()),
                        _ => return Err(e),
                    }
                }
            }
        }
        Ok(sent)
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
impl SendFile for &TcpStream {}
