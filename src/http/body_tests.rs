//! Table tests for body framing, each input also fed split at every byte.

use super::*;
use std::io::BufReader;

/// A reader that hands out its input in pieces of the given sizes, so every
/// state boundary of the decoder is crossed between two reads.
struct Pieces<'a> {
    data: &'a [u8],
    cuts: Vec<usize>,
}

impl Read for Pieces<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // A zero-byte read means end of input, so a cut at 0 reads 1 byte.
        let want = if self.cuts.is_empty() {
            self.data.len()
        } else {
            self.cuts.remove(0).max(1)
        };
        let n = want.min(out.len()).min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Decode `input` framed as `framing`; return the body and what is left.
fn decode(
    input: &[u8],
    framing: BodyFraming,
    cuts: Vec<usize>,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let mut r = BufReader::with_capacity(64, Pieces { data: input, cuts });
    let mut body = Vec::new();
    {
        let mut reader = BodyReader::new(&mut r, framing, 1000)?;
        let mut buf = [0u8; 7];
        loop {
            match reader.read_body(&mut buf)? {
                0 => break,
                n => body.extend_from_slice(&buf[..n]),
            }
        }
        assert!(reader.is_done());
    }
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    Ok((body, rest))
}

/// An input and what decoding it gives: the body, or the error's status.
type Case = (&'static [u8], Result<&'static [u8], u16>);

#[test]
fn chunked_table() {
    let cases: &[Case] = &[
        (b"5\r\nhello\r\n0\r\n\r\nNEXT", Ok(b"hello")),
        (
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT",
            Ok(b"hello world"),
        ),
        (b"A\r\n0123456789\r\n0\r\n\r\nNEXT", Ok(b"0123456789")),
        (b"a\r\n0123456789\r\n0\r\n\r\nNEXT", Ok(b"0123456789")),
        (b"0\r\n\r\nNEXT", Ok(b"")),
        (b"000\r\n\r\nNEXT", Ok(b"")),
        (b"3;name=val\r\nabc\r\n0;x\r\n\r\nNEXT", Ok(b"abc")),
        (b"3 ;x\r\nabc\r\n0\r\n\r\nNEXT", Ok(b"abc")),
        (b"3 \t ;x\r\nabc\r\n0\r\n\r\nNEXT", Ok(b"abc")),
        (b"5 x\r\nhello\r\n0\r\n\r\n", Err(400)),
        (b"3 \r\nabc\r\n0\r\n\r\n", Err(400)),
        (b"3\r\nabc\r\n0\r\n folded: x\r\n\r\n", Err(400)),
        (b"3\r\nabc\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\nNEXT", Ok(b"abc")),
        (b"x\r\nabc\r\n0\r\n\r\n", Err(400)),
        (b"\r\nabc\r\n0\r\n\r\n", Err(400)),
        (b"-3\r\nabc\r\n0\r\n\r\n", Err(400)),
        (b"+3\r\nabc\r\n0\r\n\r\n", Err(400)),
        (b"0x3\r\nabc\r\n0\r\n\r\n", Err(400)),
        (b"3\nabc\r\n0\r\n\r\n", Err(400)),
        (b"3\r\nabcd\r\n0\r\n\r\n", Err(400)),
        (b"3\r\nabc\n0\r\n\r\n", Err(400)),
        (b"3;\x01\r\nabc\r\n0\r\n\r\n", Err(400)),
        (b"3\r\nabc\r\n0\r\nX: \x00\r\n\r\n", Err(400)),
        (b"11111111111111111\r\n", Err(400)),
        (b"ffffffffffffffff\r\n", Err(413)),
        (b"3e9\r\n", Err(413)),
    ];
    for (input, want) in cases {
        let got = decode(input, BodyFraming::Chunked, vec![]);
        match (got, want) {
            (Ok((body, rest)), Ok(want)) => {
                assert_eq!(&body[..], *want, "{:?}", String::from_utf8_lossy(input));
                assert_eq!(rest, b"NEXT");
            }
            (Err(e), Err(code)) => assert_eq!(e.status(), Some(*code), "{input:?}"),
            (got, want) => panic!(
                "{:?}: got {got:?}, want {want:?}",
                String::from_utf8_lossy(input)
            ),
        }
    }
}

#[test]
fn chunked_split_at_every_byte() {
    let input = b"5;e=1\r\nhello\r\n1\r\n!\r\n0\r\nT: v\r\n\r\nNEXT";
    for cut in 0..input.len() {
        let (body, rest) = decode(input, BodyFraming::Chunked, vec![cut, 1]).unwrap();
        assert_eq!(body, b"hello!", "cut at {cut}");
        assert_eq!(rest, b"NEXT", "cut at {cut}");
    }
    // and one byte at a time
    let (body, rest) = decode(input, BodyFraming::Chunked, vec![1; input.len()]).unwrap();
    assert_eq!(
        (body.as_slice(), rest.as_slice()),
        (&b"hello!"[..], &b"NEXT"[..])
    );
}

#[test]
fn a_body_paused_after_every_read_decodes_the_same() {
    let input = b"5;e=1\r\nhello\r\n1\r\n!\r\n0\r\nT: v\r\n\r\nNEXT";
    let mut r = BufReader::with_capacity(
        64,
        Pieces {
            data: input,
            cuts: vec![1; input.len()],
        },
    );
    let mut paused = BodyReader::new(&mut r, BodyFraming::Chunked, 1000)
        .unwrap()
        .pause();
    let mut body = Vec::new();
    while !paused.is_done() {
        // Each piece on a reader made anew, as the owner of the input
        // lends it between pieces.
        let mut reader = BodyReader::resume(&mut r, paused);
        let mut buf = [0u8; 3];
        let n = reader.read_body(&mut buf).unwrap();
        body.extend_from_slice(&buf[..n]);
        paused = reader.pause();
    }
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert_eq!(
        (body.as_slice(), rest.as_slice()),
        (&b"hello!"[..], &b"NEXT"[..])
    );
}

#[test]
fn content_length_stops_at_its_end() {
    for cut in 0..8 {
        let (body, rest) = decode(b"abcdeNEXT", BodyFraming::Length(5), vec![cut]).unwrap();
        assert_eq!(
            (body.as_slice(), rest.as_slice()),
            (&b"abcde"[..], &b"NEXT"[..])
        );
    }
}

#[test]
fn until_close_reads_everything_at_any_split() {
    for cut in 0..6 {
        let (body, rest) = decode(b"abcdef", BodyFraming::UntilClose, vec![cut]).unwrap();
        assert_eq!((body.as_slice(), rest.len()), (&b"abcdef"[..], 0));
    }
    // The cap holds here too.
    let mut input: &[u8] = &[b'x'; 2000];
    let mut reader = BodyReader::new(&mut input, BodyFraming::UntilClose, 1000).unwrap();
    assert!(matches!(reader.drain(), Err(Error::BodyTooLarge)));
}

#[test]
fn short_bodies_mean_the_peer_left() {
    assert!(matches!(
        decode(b"abc", BodyFraming::Length(5), vec![]),
        Err(Error::PeerGone)
    ));
    assert!(matches!(
        decode(b"5\r\nab", BodyFraming::Chunked, vec![]),
        Err(Error::PeerGone)
    ));
}

#[test]
fn declared_length_over_the_cap_fails_before_reading() {
    let mut r: &[u8] = b"";
    assert!(matches!(
        BodyReader::new(&mut r, BodyFraming::Length(1001), 1000),
        Err(Error::BodyTooLarge)
    ));
}

#[test]
fn continue_is_sent_once_before_the_first_read() {
    let mut input: &[u8] = b"abc";
    let mut out = Vec::new();
    {
        let mut reader = BodyReader::new(&mut input, BodyFraming::Length(3), 10)
            .unwrap()
            .with_continue(&mut out);
        assert!(reader.continue_pending());
        assert_eq!(reader.drain().unwrap(), 3);
        assert!(!reader.continue_pending());
    }
    assert_eq!(out, CONTINUE);
}

#[test]
fn io_errors_round_trip() {
    let e = io::Error::other(Error::BodyTooLarge);
    assert!(matches!(unwrap_io(e), Error::BodyTooLarge));
    let e = io::Error::from(io::ErrorKind::ConnectionReset);
    assert!(matches!(unwrap_io(e), Error::PeerGone));
}

#[test]
fn read_full_gathers_pieces_until_the_buffer_is_full_or_the_end() {
    /// Hands out at most 3 bytes a read.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(3).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut r = Trickle(b"0123456789");
    let mut buf = [0u8; 8];
    assert_eq!(read_full(&mut r, &mut buf).unwrap(), 8);
    assert_eq!(&buf, b"01234567");
    assert_eq!(read_full(&mut r, &mut buf).unwrap(), 2);
    assert_eq!(&buf[..2], b"89");
    assert_eq!(read_full(&mut r, &mut buf).unwrap(), 0);
}
