//! `sendfile(2)` from a file to a socket, so large files never pass
//! through user space. Declared here against the C library std already
//! links: std's `io::copy` refuses file-to-socket sendfile on purpose, and
//! no crate is needed for one call.

use crate::http::response::SendFile;
use std::fs::File;
use std::io;
use std::net::TcpStream;

/// Bytes per call, well under the 2 GiB a single sendfile may move.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
const CHUNK: u64 = 1 << 30;

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod sys {
    use std::ffi::{c_int, c_long};
    extern "C" {
        /// ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count);
        /// off_t is 64 bits on every 64-bit Linux.
        pub fn sendfile(out_fd: c_int, in_fd: c_int, offset: *mut c_long, count: usize) -> isize;
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
            let n = unsafe { sys::sendfile(self.as_raw_fd(), file.as_raw_fd(), &mut off, count) };
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
