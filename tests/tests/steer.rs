//! Steered listeners (`Scheduling::Steered`): every worker accepts from a socket of its own
//! on the shared port, the primary places connections by weights and accepts none itself
//! while all is well; a queue at the bound, or the queue of a worker that died, is emptied
//! into the others.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;

use ringleader::{Event, Scheduling, Settings, Signal, WorkerId};
use ringleader_tests::Harness;

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

fn steered() -> Harness {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().scheduling(Scheduling::Steered))
        .expect("setup");
    h
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).expect("connect");
    s.set_read_timeout(Some(ringleader_tests::WATCHDOG))
        .expect("timeout");
    s
}

fn answer(mut s: TcpStream) -> String {
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    out
}

/// `n` clients on threads: each is connected (its handshake done, so it waits in some
/// accept queue) when this returns; their answers come on the receiver.
fn clients(port: u16, n: usize) -> mpsc::Receiver<String> {
    let (connected, wait) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    for _ in 0..n {
        let (connected, tx) = (connected.clone(), tx.clone());
        std::thread::spawn(move || {
            let s = connect(port);
            let _ = connected.send(());
            let _ = tx.send(answer(s));
        });
    }
    for _ in 0..n {
        wait.recv_timeout(ringleader_tests::WATCHDOG)
            .expect("a client connects");
    }
    rx
}

/// A worker that listens and never accepts, alone at first, so that `n` clients all wait
/// in its queue; then a worker that serves. Returns the harness, both ids, the port and the
/// clients' answers.
fn stuck_then_good(n: usize) -> (Harness, WorkerId, WorkerId, u16, mpsc::Receiver<String>) {
    let h = steered();
    let stuck = h.fork("listen-spin:127.0.0.1:0");
    let port = h.listening(1)[0].port;
    let answers = clients(port, n);
    let good = h.fork("serve:127.0.0.1:0");
    h.listening(1);
    (h, stuck, good, port, answers)
}

#[test]
fn steered_workers_share_one_port_and_the_primary_accepts_none() {
    // Counts this process's fds: no other test may open any meanwhile.
    let _alone = ringleader_tests::alone();
    let h = steered();
    let before = ringleader_tests::fd_count();
    for _ in 0..3 {
        h.fork("serve:127.0.0.1:0");
    }
    let ports: Vec<u16> = h.listening(3).iter().map(|l| l.port).collect();
    assert!(ports.iter().all(|p| *p == ports[0] && *p != 0), "{ports:?}");
    let port = ports[0];
    let answers = h.drive(move || (0..60).map(|_| answer(connect(port))).collect::<Vec<_>>());
    assert!(
        answers.iter().all(|a| a.starts_with("hello from ")),
        "{answers:?}"
    );
    let distinct: std::collections::BTreeSet<&String> = answers.iter().collect();
    assert!(distinct.len() >= 2, "spread over the workers: {distinct:?}");
    let stats = h.primary.handoff_stats();
    assert_eq!(stats.accepted, 0, "the kernel placed every one: {stats:?}");
    assert!(stats.steerings >= 1, "{stats:?}");
    // The primary's copies of the workers' sockets go with the listener.
    h.primary.disconnect_all().expect("disconnect");
    h.until(|e| matches!(e, Event::AllDisconnected));
    assert_eq!(ringleader_tests::fd_count(), before);
}

#[test]
fn connections_queued_for_a_steered_worker_that_dies_are_served_by_another() {
    // Alone, the stuck worker gets every connection; it never accepts one.
    let (h, stuck, good, port, answers) = stuck_then_good(10);
    h.primary
        .worker(stuck)
        .expect("stuck")
        .kill(Some(Signal::KILL))
        .expect("kill");
    let seen = h.until_gone(stuck);
    assert!(!seen.iter().any(|e| e.starts_with("error")), "{seen:?}");
    // Its socket outlived it (the primary holds a copy): the ten waiting there were taken
    // and handed to the good worker, and new connections go to it too.
    let expected = format!("hello from {good}\n");
    let rest = h.drive(move || {
        let mut got: Vec<String> = answers.iter().take(10).collect();
        got.extend((0..5).map(|_| answer(connect(port))));
        got
    });
    assert_eq!(rest.len(), 15);
    assert!(rest.iter().all(|a| *a == expected), "{rest:?}");
    let stats = h.primary.handoff_stats();
    assert_eq!(stats.taken_from_queues, 10, "{stats:?}");
}

#[test]
fn a_queue_at_the_bound_is_steered_around_and_emptied_into_the_others() {
    // Beyond the bound of 16, while the stuck worker is the only one: nowhere else to go.
    let (h, stuck, good, _, answers) = stuck_then_good(20);
    // With a worker that can take them, the stuck one's queue goes to it, and the stuck
    // one (alive, never accepting) gets nothing while its queue is at the bound.
    let expected = format!("hello from {good}\n");
    let got = h.drive(move || answers.iter().take(20).collect::<Vec<_>>());
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|a| *a == expected), "{got:?}");
    let stats = h.primary.handoff_stats();
    assert_eq!(stats.taken_from_queues, 20, "{stats:?}");
    assert!(ringleader_tests::alive(
        h.primary.worker(stuck).expect("stuck").pid()
    ));
}
