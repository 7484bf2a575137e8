//! Credit: the sending end within its grants, the receiving end's grants.

use super::*;
use std::io::Write;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

/// Stream 7's `Out`, which keeps what is sent.
fn ends(sent: &Arc<Mutex<Vec<Frame>>>) -> (u64, Out) {
    let sent = Arc::clone(sent);
    (
        7,
        Arc::new(move |b: Vec<Frame>| sent.lock().unwrap().extend(b)),
    )
}

fn data_lens(sent: &Mutex<Vec<Frame>>) -> Vec<usize> {
    sent.lock()
        .unwrap()
        .iter()
        .filter_map(|f| match f {
            Frame::Data { bytes, .. } => Some(bytes.len()),
            _ => None,
        })
        .collect()
}

fn grant(tx: &Sender<Frame>, bytes: u32) {
    tx.send(Frame::Credit { id: 7, bytes }).unwrap();
}

#[test]
fn writes_stay_within_the_credit_and_wait_for_grants() {
    let (tx, rx) = channel();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (id, out) = ends(&sent);
    let mut w = Sending::new(
        WorkerEnds {
            id,
            rx: &rx,
            out: &out,
        },
        Duration::from_millis(50),
    );
    grant(&tx, 100);
    assert_eq!(w.write(&[1; 300]).unwrap(), 100);
    // No credit left and none coming: the write times out.
    let e = w.write(&[1; 300]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert_eq!(w.stopped(), Some(Stopped::TimedOut));
    assert_eq!(data_lens(&sent), [100]);
}

#[test]
fn a_write_sends_at_most_a_chunk() {
    let (tx, rx) = channel();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (id, out) = ends(&sent);
    let mut w = Sending::new(
        WorkerEnds {
            id,
            rx: &rx,
            out: &out,
        },
        Duration::from_millis(50),
    );
    grant(&tx, WINDOW);
    w.write_all(&vec![0; CHUNK * 2 + 5]).unwrap();
    w.finish();
    assert_eq!(data_lens(&sent), [CHUNK, CHUNK, 5]);
    assert!(matches!(
        sent.lock().unwrap().last(),
        Some(Frame::End { id: 7 })
    ));
}

#[test]
fn an_abort_or_an_early_answer_stops_the_body() {
    let (tx, rx) = channel();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (id, out) = ends(&sent);
    let mut w = Sending::with_credit(
        WorkerEnds {
            id,
            rx: &rx,
            out: &out,
        },
        10,
        Duration::from_millis(50),
    );
    tx.send(Frame::Head {
        id: 7,
        status: 413,
        fields: Vec::new(),
        length: None,
    })
    .unwrap();
    assert!(w.write(&[0; 5]).is_err());
    assert_eq!(w.stopped(), Some(Stopped::Answered));
    assert!(matches!(w.answer(), Some(Frame::Head { status: 413, .. })));

    let (tx, rx) = channel();
    let mut w = Sending::with_credit(
        WorkerEnds {
            id,
            rx: &rx,
            out: &out,
        },
        10,
        Duration::from_millis(50),
    );
    tx.send(Frame::Abort {
        id: 7,
        reason: AbortReason::NoSpace,
    })
    .unwrap();
    let e = w.write(&[0; 5]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
    assert_eq!(w.stopped(), Some(Stopped::Aborted(AbortReason::NoSpace)));
    drop(tx);
    // A gone channel, once the credit is spent.
    let (tx, rx) = channel::<Frame>();
    drop(tx);
    let mut w = Sending::new(
        WorkerEnds {
            id,
            rx: &rx,
            out: &out,
        },
        Duration::from_millis(50),
    );
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
    let (tx, rx) = channel();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (id, out) = ends(&sent);
    let mut r = Receiving::new(
        WorkerEnds {
            id,
            rx: &rx,
            out: &out,
        },
        Duration::from_millis(50),
    );
    let piece = GRANT_EVERY as usize;
    for _ in 0..2 {
        tx.send(Frame::Data {
            id: 7,
            bytes: vec![1; piece],
        })
        .unwrap();
    }
    tx.send(Frame::Credit { id: 7, bytes: 5 }).unwrap();
    tx.send(Frame::End { id: 7 }).unwrap();
    let grants = || {
        sent.lock()
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
    tx.send(Frame::Abort {
        id: 7,
        reason: AbortReason::ClientGone,
    })
    .unwrap();
    assert_eq!(
        r.try_next_piece(),
        Some(Err(Stopped::Aborted(AbortReason::ClientGone)))
    );
    assert_eq!(r.try_next_piece(), None);
}
