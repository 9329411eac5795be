//! Non-blocking listeners driven by a loop of the worker's own: an epoll over the listener's
//! fd, edge-triggered and accepting until `WouldBlock`, or level-triggered and accepting one
//! connection per wake-up (connections left over from a hand-off message that carried
//! several must keep the fd readable). A burst is served whole under every scheduling, and a
//! disconnect ends the worker's loop.

use ringleader::{Event, Scheduling, Settings};
use ringleader_tests::{Harness, burst, hellos};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

fn burst_through_own_loops(scheduling: Scheduling, trigger: &str) {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().scheduling(scheduling))
        .expect("setup");
    let mode = format!("nb-serve:{trigger}:127.0.0.1:0");
    let workers = [h.fork(&mode), h.fork(&mode)];
    let port = h.listening(2)[0].port;
    let answers = h.drive(move || burst(port, 300));
    let served = hellos(&answers);
    assert_eq!(
        served,
        300,
        "{scheduling:?} {trigger}: {:?}",
        answers.first()
    );
    // A disconnect ends each worker's own loop (accept says ConnectionAborted): it exits.
    for w in workers {
        h.primary
            .worker(w)
            .expect("worker")
            .disconnect()
            .expect("disconnect");
    }
    h.until(|e| matches!(e, Event::Exit { worker, .. } if *worker == workers[1]));
}

#[test]
fn round_robin_edge_triggered() {
    burst_through_own_loops(Scheduling::RoundRobin, "ET");
}

#[test]
fn round_robin_level_triggered_one_per_wake_up() {
    burst_through_own_loops(Scheduling::RoundRobin, "LT");
}

#[test]
fn shared_edge_triggered() {
    burst_through_own_loops(Scheduling::Shared, "ET");
}

#[test]
fn reuseport_level_triggered_one_per_wake_up() {
    burst_through_own_loops(Scheduling::ReusePort, "LT");
}

#[test]
fn steered_edge_triggered() {
    burst_through_own_loops(Scheduling::Steered, "ET");
}

#[test]
fn steered_level_triggered_one_per_wake_up() {
    burst_through_own_loops(Scheduling::Steered, "LT");
}
