//! A read buffer that a head parser can look into and grow, and that body
//! readers use as a `BufRead` afterwards: the bytes after a head stay put
//! for the body. Used for client connections and upstream connections.

use std::io::{self, BufRead, Read};

/// Buffered input from `inner`.
pub struct Buffered<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
}

impl<R: Read> Buffered<R> {
    pub fn new(inner: R, capacity: usize) -> Self {
        Buffered {
            inner,
            buf: vec![0; capacity.max(1)],
            pos: 0,
            len: 0,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The bytes read and not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..self.len]
    }

    /// Read once more, after the pending bytes: they move to the front and
    /// the buffer grows (to at most `max_capacity`) when it is full.
    /// Let each read from the source take up to `capacity` bytes (for long
    /// bodies: fewer, larger reads).
    pub fn reserve(&mut self, capacity: usize) {
        if self.buf.len() < capacity {
            self.buf.resize(capacity, 0);
        }
    }

    /// `Ok(0)` is end of input.
    pub fn read_more(&mut self, max_capacity: usize) -> io::Result<usize> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        if self.len == self.buf.len() {
            let grown = (self.buf.len() * 2).min(max_capacity);
            self.buf.resize(grown.max(self.len + 1), 0);
        }
        let n = self.inner.read(&mut self.buf[self.len..])?;
        self.len += n;
        Ok(n)
    }
}

impl<R: Read> Read for Buffered<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(out.len());
            out[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Buffered<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.len {
            self.pos = 0;
            self.len = self.inner.read(&mut self.buf)?;
        }
        Ok(&self.buf[self.pos..self.len])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_bytes_survive_growth_and_compaction() {
        let mut b = Buffered::new(&b"abcdefghij"[..], 4);
        assert_eq!(b.read_more(8).unwrap(), 4);
        assert_eq!(b.pending(), b"abcd");
        b.consume(2);
        assert_eq!(b.read_more(8).unwrap(), 2); // compacted, still 4 wide
        assert_eq!(b.pending(), b"cdef");
        assert_eq!(b.read_more(8).unwrap(), 4); // grown to 8
        assert_eq!(b.pending(), b"cdefghij");
        let mut rest = String::new();
        b.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "cdefghij");
        assert_eq!(b.read_more(8).unwrap(), 0);
    }
}
