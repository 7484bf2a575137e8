//! Request bodies: Content-Length and chunked decoding over any `BufRead`.
//!
//! The chunked decoder is a byte-driven state machine (RFC 9112 §7.1), so
//! input split at any byte decodes the same. Chunk lines must end in CRLF:
//! a bare LF inside chunked framing is refused, which closes a request
//! smuggling gap between servers that disagree about line endings.

use crate::config;
use crate::error::Error;
use std::io::{self, BufRead, Read, Write};
use std::time::Instant;

/// How a request's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes: only a response may be framed so
    /// (RFC 9112 §6.3, rule 8).
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length {
        remaining: u64,
    },
    Size {
        value: u64,
        digits: usize,
    },
    /// Whitespace after the size: only more of it or `;` may follow
    /// (`chunk-ext = *( BWS ";" ... )`, RFC 9112 §7.1.1).
    SizeWs {
        size: u64,
    },
    Ext {
        size: u64,
        len: usize,
    },
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    Trailer {
        line: usize,
    },
    TrailerLf {
        line: usize,
    },
    UntilClose,
    Done,
}

/// The interim response sent before the first body read of a request that
/// asked for it (RFC 9110 §10.1.1).
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Reads one request body and stops exactly at its end, so the next
/// request on the connection starts where it should.
pub struct BodyReader<'a, R: BufRead> {
    input: &'a mut R,
    framing: Framing,
    continue_to: Option<&'a mut dyn Write>,
}

/// Where a paused `BodyReader` was in its body.
pub struct Paused(Framing);

impl Paused {
    /// Whether the whole body was read.
    pub fn is_done(&self) -> bool {
        self.0.state == State::Done
    }
}

/// The decoder's state, apart from the input it reads.
struct Framing {
    state: State,
    /// Body bytes delivered so far.
    total: u64,
    max: u64,
    /// Framing bytes in the trailer section, capped like a head.
    trailer_bytes: usize,
}

impl<'a, R: BufRead> BodyReader<'a, R> {
    /// A reader for a body framed as `framing`, refusing more than `max` bytes.
    /// A declared length over `max` fails at once, before anything is read.
    pub fn new(input: &'a mut R, framing: BodyFraming, max: u64) -> Result<Self, Error> {
        let state = match framing {
            BodyFraming::None => State::Done,
            BodyFraming::Length(n) if n > max => return Err(Error::BodyTooLarge),
            BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(n) => State::Length { remaining: n },
            BodyFraming::Chunked => State::Size {
                value: 0,
                digits: 0,
            },
            BodyFraming::UntilClose => State::UntilClose,
        };
        Ok(BodyReader {
            input,
            framing: Framing {
                state,
                total: 0,
                max,
                trailer_bytes: 0,
            },
            continue_to: None,
        })
    }

    /// Go on decoding a body from where `pause` left it, on the same input.
    pub fn resume(input: &'a mut R, paused: Paused) -> Self {
        BodyReader {
            input,
            framing: paused.0,
            continue_to: None,
        }
    }

    /// Stop reading for now and give the input back, keeping where the
    /// decoder is: a body read a piece at a time by whoever owns its input
    /// between pieces (a lone process's proxied answer).
    pub fn pause(self) -> Paused {
        Paused(self.framing)
    }

    /// Send `100 Continue` to `out` before the first read that needs bytes.
    pub fn with_continue(mut self, out: &'a mut dyn Write) -> Self {
        if !self.is_done() {
            self.continue_to = Some(out);
        }
        self
    }

    /// Whether the whole body (and any trailers) has been read.
    pub fn is_done(&self) -> bool {
        self.framing.state == State::Done
    }

    /// Whether a `100 Continue` was asked for and not yet sent: then the
    /// client may be holding its body back, and the body cannot be drained.
    pub fn continue_pending(&self) -> bool {
        self.continue_to.is_some()
    }

    /// Read and discard the rest of the body.
    pub fn drain(&mut self) -> Result<u64, Error> {
        let mut scratch = [0u8; 8192];
        let mut n = 0;
        loop {
            match self.read_body(&mut scratch)? {
                0 => return Ok(n),
                got => n += got as u64,
            }
        }
    }

    /// Discard the rest of the body if it is at most `max` bytes and
    /// arrives before `deadline`. `Ok(false)`: it was not worth waiting
    /// for, and the connection must close instead of being reused.
    pub fn drain_within(&mut self, max: u64, deadline: Instant) -> Result<bool, Error> {
        if let State::Length { remaining } = self.framing.state {
            if remaining > max {
                return Ok(false);
            }
        }
        let mut scratch = [0u8; 8192];
        let mut n = 0u64;
        loop {
            match self.read_body(&mut scratch) {
                Ok(0) => return Ok(true),
                Ok(got) => n += got as u64,
                // A read timeout while draining is a slow client, not a lost one.
                Err(Error::PeerGone) => return Ok(false),
                Err(e) => return Err(e),
            }
            if n > max || Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    /// Read body bytes into `out`; `Ok(0)` at the end of the body.
    pub fn read_body(&mut self, out: &mut [u8]) -> Result<usize, Error> {
        if out.is_empty() || self.is_done() {
            return Ok(0);
        }
        if let Some(w) = self.continue_to.take() {
            w.write_all(CONTINUE)
                .and_then(|_| w.flush())
                .map_err(Error::from_downstream_io)?;
        }
        loop {
            let buf = self.input.fill_buf().map_err(Error::from_downstream_io)?;
            let f = &mut self.framing;
            if buf.is_empty() {
                if f.state == State::UntilClose {
                    f.state = State::Done;
                    return Ok(0);
                }
                // The peer closed before the body ended.
                return Err(Error::PeerGone);
            }
            match f.state {
                State::Done => return Ok(0),
                State::UntilClose => {
                    let n = buf.len().min(out.len());
                    if n as u64 > f.max.saturating_sub(f.total) {
                        return Err(Error::BodyTooLarge);
                    }
                    out[..n].copy_from_slice(&buf[..n]);
                    self.input.consume(n);
                    f.total += n as u64;
                    return Ok(n);
                }
                State::Length { remaining } | State::Data { remaining } => {
                    let n = buf.len().min(out.len()).min(clamp(remaining));
                    out[..n].copy_from_slice(&buf[..n]);
                    self.input.consume(n);
                    let left = remaining - n as u64;
                    f.state = match f.state {
                        State::Length { .. } if left == 0 => State::Done,
                        State::Length { .. } => State::Length { remaining: left },
                        _ if left == 0 => State::DataCr,
                        _ => State::Data { remaining: left },
                    };
                    f.total += n as u64;
                    return Ok(n);
                }
                _ => {
                    let mut used = 0;
                    for &b in buf {
                        used += 1;
                        f.state = f.step(b)?;
                        if matches!(f.state, State::Data { .. } | State::Done) {
                            break;
                        }
                    }
                    self.input.consume(used);
                    if f.state == State::Done {
                        return Ok(0);
                    }
                }
            }
        }
    }
}

impl Framing {
    /// One byte of chunked framing (everything but chunk data).
    fn step(&mut self, b: u8) -> Result<State, Error> {
        let bad = Error::BadRequest;
        Ok(match self.state {
            State::Size { value, digits } => match (b as char).to_digit(16) {
                Some(d) if digits < config::MAX_CHUNK_SIZE_DIGITS => State::Size {
                    value: value << 4 | u64::from(d),
                    digits: digits + 1,
                },
                Some(_) => return Err(bad("chunk size too long")),
                None if digits == 0 => return Err(bad("malformed chunk size")),
                None => {
                    if value > self.max.saturating_sub(self.total) {
                        return Err(Error::BodyTooLarge);
                    }
                    match b {
                        b'\r' => State::SizeLf { size: value },
                        b';' => State::Ext {
                            size: value,
                            len: 0,
                        },
                        b' ' | b'\t' => State::SizeWs { size: value },
                        _ => return Err(bad("malformed chunk size")),
                    }
                }
            },
            State::SizeWs { size } => match b {
                b' ' | b'\t' => State::SizeWs { size },
                b';' => State::Ext { size, len: 0 },
                _ => return Err(bad("malformed chunk extension")),
            },
            State::Ext { size, len } => match b {
                b'\r' => State::SizeLf { size },
                _ if len >= config::MAX_CHUNK_EXT_BYTES => {
                    return Err(bad("chunk extension too long"))
                }
                b'\t' | b' '..=b'~' | 0x80..=0xff => State::Ext { size, len: len + 1 },
                _ => return Err(bad("control character in chunk extension")),
            },
            State::SizeLf { size } => match b {
                b'\n' if size == 0 => State::Trailer { line: 0 },
                b'\n' => State::Data { remaining: size },
                _ => return Err(bad("chunk size line not ended by CRLF")),
            },
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size {
                value: 0,
                digits: 0,
            },
            State::DataCr | State::DataLf => return Err(bad("chunk data not followed by CRLF")),
            State::Trailer { line } => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > config::MAX_HEAD_BYTES {
                    return Err(Error::HeadTooLarge);
                }
                match b {
                    b'\r' => State::TrailerLf { line },
                    // A field line starts with a name: no obs-fold in trailers.
                    b' ' | b'\t' if line == 0 => return Err(bad("folded trailer line")),
                    b'\t' | b' '..=b'~' | 0x80..=0xff => State::Trailer { line: line + 1 },
                    _ => return Err(bad("control character in trailer")),
                }
            }
            State::TrailerLf { line } => match b {
                b'\n' if line == 0 => State::Done,
                b'\n' => State::Trailer { line: 0 },
                _ => return Err(bad("trailer line not ended by CRLF")),
            },
            State::Length { .. } | State::Data { .. } | State::UntilClose | State::Done => {
                self.state
            }
        })
    }
}

fn clamp(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl<R: BufRead> Read for BodyReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.read_body(out).map_err(io::Error::other)
    }
}

/// Recover the `Error` a `BodyReader` wrapped into an `io::Error`.
/// Fill `buf` from `r` as far as it goes: the bytes read, fewer only at
/// the end (0 there). A body reader hands out what one read of the
/// connection brought, often a few KiB: this gathers a whole piece.
pub fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> Result<usize, Error> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(unwrap_io(e)),
        }
    }
    Ok(got)
}

pub fn unwrap_io(e: io::Error) -> Error {
    match e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        true => match e.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(err)) => *err,
            _ => Error::Internal("lost body error".into()),
        },
        false => Error::from_downstream_io(e),
    }
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
