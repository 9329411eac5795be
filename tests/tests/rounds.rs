//! Accept rounds under round-robin (`Primary::set_accept_rounds`): the first connection after
//! a quiet spell is handed over at once; the ones that arrive while the listener rests stay in
//! the kernel's backlog and are taken together at the next round, each worker's share in one
//! message.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringleader_tests::{Harness, WATCHDOG};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");
/// Longer than any test may run: a connection that waited for such a round would trip the
/// watchdog.
const FOREVER: Duration = Duration::from_secs(3600);

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).expect("connect");
    s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
    s
}

/// A primary accepting in rounds of `FOREVER`, or `None` (said on stderr) where this kernel
/// cannot accept in rounds.
fn resting() -> Option<Harness> {
    let h = Harness::new(FIXTURE);
    h.primary.set_accept_rounds(FOREVER);
    if h.primary.accept_rounds().is_none() {
        eprintln!(
            "skipped: no accept rounds on this backend and kernel ({:?})",
            h.primary.backend()
        );
        return None;
    }
    Some(h)
}

fn answer(mut s: TcpStream) -> String {
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn the_first_connection_after_a_quiet_spell_is_not_held_for_a_round() {
    let Some(h) = resting() else { return };
    let a = h.fork("serve:127.0.0.1:0");
    let port = h.listening(1)[0].port;
    assert_eq!(
        h.drive(move || answer(connect(port))),
        format!("hello from {a}\n")
    );
    assert_eq!(h.primary.handoff_stats().accepted, 1);
}

#[test]
fn connections_that_arrive_during_a_rest_go_out_together_at_the_next_round() {
    let Some(h) = resting() else { return };
    let a = h.fork("serve:127.0.0.1:0");
    let b = h.fork("serve:127.0.0.1:0");
    let port = h.listening(2)[0].port;
    // The first connection is taken at once; the listener then rests "forever".
    let first = h.drive(move || answer(connect(port)));
    assert!(first.starts_with("hello from "), "{first}");
    let before = h.primary.handoff_stats();
    assert_eq!(before.accepted, 1);

    // Twenty more wait in the backlog, however long the loop runs meanwhile.
    let waiting: Vec<TcpStream> = h.drive(move || (0..20).map(|_| connect(port)).collect());
    h.drain();
    assert_eq!(h.primary.handoff_stats().accepted, 1, "taken during a rest");

    // A short interval cuts the rest short: one round takes all twenty, half for each.
    h.primary.set_accept_rounds(Duration::from_millis(1));
    let answers = h.drive(move || waiting.into_iter().map(answer).collect::<Vec<_>>());
    let (from_a, from_b) = (format!("hello from {a}\n"), format!("hello from {b}\n"));
    assert_eq!(answers.iter().filter(|s| **s == from_a).count(), 10);
    assert_eq!(answers.iter().filter(|s| **s == from_b).count(), 10);
    let after = h.primary.handoff_stats();
    assert_eq!(after.accepted - before.accepted, 20);
    // Every connection travels in a message of its own, so that a worker holds only what
    // it took.
    assert_eq!(after.handoff_messages - before.handoff_messages, 20);
}

#[test]
fn with_rounds_off_each_connection_is_taken_as_it_comes() {
    let Some(h) = resting() else { return };
    h.primary.set_accept_rounds(Duration::ZERO);
    let a = h.fork("serve:127.0.0.1:0");
    let port = h.listening(1)[0].port;
    let answers = h.drive(move || (0..5).map(|_| answer(connect(port))).collect::<Vec<_>>());
    assert!(answers.iter().all(|s| *s == format!("hello from {a}\n")));
    let stats = h.primary.handoff_stats();
    assert_eq!((stats.accepted, stats.handoff_messages), (5, 5));
}
