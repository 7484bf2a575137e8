//! Credit: the sending end within its grants, the receiving end's grants.

use super::*;
use std::io::Write;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

const WAIT: Duration = Duration::from_millis(50);

/// Stream 7 seen from a worker: what rank 0 sends it (`tx`), and what it
/// sent (`sent`).
struct Far {
    tx: Sender<Frame>,
    rx: Receiver<Frame>,
    out: Out,
    sent: Arc<Mutex<Vec<Frame>>>,
}

impl Far {
    fn new() -> Far {
        let (tx, rx) = channel();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&sent);
        let out: Out = Arc::new(move |b: Vec<Frame>| keep.lock().unwrap().extend(b));
        Far { tx, rx, out, sent }
    }

    fn ends(&self) -> WorkerEnds<'_> {
        WorkerEnds {
            id: 7,
            rx: &self.rx,
            out: &self.out,
        }
    }

    fn says(&self, frame: Frame) {
        self.tx.send(frame).unwrap();
    }

    fn grant(&self, bytes: u32) {
        self.says(Frame::Credit { id: 7, bytes });
    }

    fn data_lens(&self) -> Vec<usize> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter_map(|f| match f {
                Frame::Data { bytes, .. } => Some(bytes.len()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn writes_stay_within_the_credit_and_wait_for_grants() {
    let far = Far::new();
    let mut w = Sending::new(far.ends(), WAIT);
    far.grant(100);
    assert_eq!(w.write(&[1; 300]).unwrap(), 100);
    // No credit left and none coming: the write times out.
    let e = w.write(&[1; 300]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert_eq!(w.stopped(), Some(Stopped::TimedOut));
    assert_eq!(far.data_lens(), [100]);
}

#[test]
fn a_write_sends_at_most_a_chunk() {
    let far = Far::new();
    let mut w = Sending::new(far.ends(), WAIT);
    far.grant(WINDOW);
    w.write_all(&vec![0; CHUNK * 2 + 5]).unwrap();
    w.finish();
    assert_eq!(far.data_lens(), [CHUNK, CHUNK, 5]);
    assert!(matches!(
        far.sent.lock().unwrap().last(),
        Some(Frame::End { id: 7 })
    ));
}

#[test]
fn an_abort_or_an_early_answer_stops_the_body() {
    let far = Far::new();
    let mut w = Sending::with_credit(far.ends(), 10, WAIT);
    far.says(Frame::Head {
        id: 7,
        status: 413,
        fields: Vec::new(),
        length: None,
    });
    assert!(w.write(&[0; 5]).is_err());
    assert_eq!(w.stopped(), Some(Stopped::Answered));
    assert!(matches!(w.answer(), Some(Frame::Head { status: 413, .. })));

    let far = Far::new();
    let mut w = Sending::with_credit(far.ends(), 10, WAIT);
    far.says(Frame::Abort {
        id: 7,
        reason: AbortReason::NoSpace,
    });
    let e = w.write(&[0; 5]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
    assert_eq!(w.stopped(), Some(Stopped::Aborted(AbortReason::NoSpace)));
    // A gone channel, once the credit is spent.
    let Far { tx, rx, out, .. } = Far::new();
    drop(tx);
    let ends = WorkerEnds {
        id: 7,
        rx: &rx,
        out: &out,
    };
    let mut w = Sending::new(ends, WAIT);
    assert!(w.write(&[0; 5]).is_err());
    assert_eq!(w.stopped(), Some(Stopped::Gone));
}

#[test]
fn grants_wait_for_a_quarter_window_and_never_exceed_one() {
    let w = u64::from(WINDOW);
    for (consumed, grant, left) in [
        (0, None, 0),
        (GRANT_EVERY - 1, None, GRANT_EVERY - 1),
        (GRANT_EVERY, Some(GRANT_EVERY), 0),
        (w + 5, Some(w), 5),
    ] {
        let mut c = consumed;
        assert_eq!(take_grant(&mut c).map(u64::from), grant, "{consumed}");
        assert_eq!(c, left, "{consumed}");
    }
}

#[test]
fn the_receiving_end_grants_a_piece_back_once_the_next_is_asked_for() {
    let far = Far::new();
    let mut r = Receiving::new(far.ends(), WAIT);
    let piece = GRANT_EVERY as usize;
    for _ in 0..2 {
        far.says(Frame::Data {
            id: 7,
            bytes: vec![1; piece],
        });
    }
    far.says(Frame::Credit { id: 7, bytes: 5 });
    far.says(Frame::End { id: 7 });
    let grants = || {
        far.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|f| matches!(f, Frame::Credit { .. }))
            .count()
    };
    assert_eq!(r.next_piece().unwrap().map(|p| p.len()), Some(piece));
    // Handed out, not consumed yet: nothing granted.
    assert_eq!(grants(), 0);
    assert_eq!(r.next_piece().unwrap().map(|p| p.len()), Some(piece));
    assert_eq!(grants(), 1);
    // A grant of the other direction is skipped; the end is `None`.
    assert_eq!(r.next_piece().unwrap(), None);
    assert_eq!(grants(), 2);
    // Nothing more: the wait runs out.
    assert_eq!(r.next_piece(), Err(Stopped::TimedOut));
    far.says(Frame::Abort {
        id: 7,
        reason: AbortReason::ClientGone,
    });
    assert_eq!(
        r.try_next_piece(),
        Some(Err(Stopped::Aborted(AbortReason::ClientGone)))
    );
    assert_eq!(r.try_next_piece(), None);
}
