//! A stopped worker holds no client long (`Settings::take_back_after`): connections that
//! wait at it past the deadline are taken back from its queue (its hand-off channel, or its
//! steered socket's accept queue) and served by another; a worker stuck in its own code
//! holds only what it took; one stalled past a longer deadline
//! (`Settings::kill_stalled_after`) is killed and replaced.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringleader::{Event, Respawn, Scheduling, Settings, SharedPolicy};
use ringleader_tests::{Harness, describe, signal, stop};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");
const DEADLINE: Duration = Duration::from_millis(50);
/// Far below the stop (it lasts until every client is answered), far above the deadline.
const MARGIN: Duration = Duration::from_secs(2);

/// `n` clients at once, each waiting `DEADLINE + MARGIN` for its answer: what each got, or
/// why not.
fn clients(h: &Harness, port: u16, n: usize) -> Vec<Result<(Duration, String), String>> {
    h.drive(move || {
        let clients: Vec<_> = (0..n)
            .map(|_| {
                std::thread::spawn(move || {
                    let start = Instant::now();
                    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                    s.set_read_timeout(Some(DEADLINE + MARGIN))
                        .expect("timeout");
                    let mut answer = String::new();
                    s.read_to_string(&mut answer)
                        .map(|_| (start.elapsed(), answer))
                        .map_err(|e| format!("no answer within {:?}: {e}", DEADLINE + MARGIN))
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("client"))
            .collect()
    })
}

/// `n` clients while one of two workers is stopped: each is answered by the other.
fn stopped_worker_holds_no_client(settings: Settings, n: usize) {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(settings.take_back_after(Some(DEADLINE)))
        .expect("setup");
    let stopped = h.fork("serve:127.0.0.1:0");
    let good = h.fork("serve:127.0.0.1:0");
    let port = h.listening(2)[0].port;
    let pid = h.primary.worker(stopped).expect("worker").pid();
    stop(pid);
    // Rounds of `n` until some went to the stopped worker and came back: under steer the
    // kernel's hash may send a whole round to the good one (1 in 256 for 8 clients).
    for _ in 0..10 {
        let waits = clients(&h, port, n);
        for w in &waits {
            let (waited, answer) = w
                .as_ref()
                .expect("every client answered while one worker stopped");
            assert_eq!(answer, &format!("hello from {good}\n"), "waited {waited:?}");
        }
        let stats = h.primary.handoff_stats();
        if stats.taken_from_stalled + stats.taken_from_queues > 0 {
            signal(pid, rustix::process::Signal::CONT);
            return;
        }
    }
    panic!(
        "nothing was taken back from the stopped worker: {:?}",
        h.primary.handoff_stats()
    );
}

fn policy(name: &str) -> Settings {
    Settings::default().policy(SharedPolicy::named(name).expect("policy"))
}

#[test]
fn round_robin_takes_back_what_waits_at_a_stopped_worker() {
    stopped_worker_holds_no_client(policy("rr"), 40);
}

#[test]
fn least_connections_takes_back_what_waits_at_a_stopped_worker() {
    stopped_worker_holds_no_client(policy("lc"), 40);
}

/// Steered: the stopped worker's socket queue held connections and never got shorter for
/// the deadline; the primary empties it for the other worker and steers around it. Eight
/// clients: its queue stays below the hand-off bound, which would empty it too.
#[test]
fn steering_empties_the_queue_of_a_stopped_worker() {
    stopped_worker_holds_no_client(Settings::default().scheduling(Scheduling::Steered), 8);
}

/// A worker that took one connection and is stuck in its own code holds that one alone:
/// every connection travels in a message of its own, so the rest of what was sent to it is
/// still in its channel when the deadline comes, and goes to the other worker.
#[test]
fn a_worker_stuck_after_one_accept_holds_that_one_alone() {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(policy("rr").take_back_after(Some(DEADLINE)))
        .expect("setup");
    let stuck = h.fork("take-one:127.0.0.1:0");
    let good = h.fork("serve:127.0.0.1:0");
    let port = h.listening(2)[0].port;
    let waits = clients(&h, port, 40);
    let unanswered: Vec<&String> = waits.iter().filter_map(|w| w.as_ref().err()).collect();
    assert_eq!(unanswered.len(), 1, "{unanswered:?}");
    for (waited, answer) in waits.iter().flatten() {
        assert_eq!(answer, &format!("hello from {good}\n"), "waited {waited:?}");
    }
    let stats = h.primary.handoff_stats();
    assert!(stats.taken_from_stalled > 0, "{stats:?}");
    assert!(h.primary.worker(stuck).is_some());
}

#[test]
fn a_worker_stalled_past_the_longer_deadline_is_killed_and_replaced() {
    const KILL_AFTER: Duration = Duration::from_millis(300);
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(
            Settings::default()
                .take_back_after(Some(DEADLINE))
                .kill_stalled_after(Some(KILL_AFTER))
                .respawn(Some(Respawn::default())),
        )
        .expect("setup");
    let stopped = h.fork("serve:127.0.0.1:0");
    h.fork("serve:127.0.0.1:0");
    let port = h.listening(2)[0].port;
    let pid = h.primary.worker(stopped).expect("worker").pid();
    stop(pid);
    // Requests for twice the kill deadline: the stopped worker keeps being sent a probe,
    // taken back at each take-back deadline, until it is killed.
    let failures = h.drive(move || {
        let start = Instant::now();
        let clients: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut failures = Vec::new();
                    while start.elapsed() < KILL_AFTER * 2 {
                        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                        s.set_read_timeout(Some(DEADLINE + MARGIN))
                            .expect("timeout");
                        let mut answer = String::new();
                        if let Err(e) = s.read_to_string(&mut answer) {
                            failures.push(e.to_string());
                        }
                    }
                    failures
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().expect("client"))
            .collect::<Vec<_>>()
    });
    assert!(failures.is_empty(), "{failures:?}");
    let seen = h.until(|e| matches!(e, Event::Respawned { replaces, .. } if *replaces == stopped));
    let killed = seen.iter().find_map(|e| match e {
        Event::StalledKilled { worker, stalled } if *worker == stopped => Some(*stalled),
        _ => None,
    });
    let killed = killed.unwrap_or_else(|| {
        panic!(
            "no StalledKilled: {:?}",
            seen.iter().map(describe).collect::<Vec<_>>()
        )
    });
    assert!(killed >= KILL_AFTER, "{killed:?}");
    assert!(seen.iter().any(|e| matches!(
        e,
        Event::Exit { worker, signal: Some(ringleader::Signal::KILL), .. } if *worker == stopped
    )));
}

/// `Settings::defer_accept`: a client that connects and sends nothing is not handed to a
/// worker (the fixture greets every connection it takes at once), one that sends is; under
/// round-robin (the primary's socket) and steer (the workers' own sockets).
fn deferred_listeners_hand_over_only_connections_with_data(settings: Settings) {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(settings.defer_accept(Some(Duration::from_secs(2))))
        .expect("setup");
    h.fork("serve:127.0.0.1:0");
    h.fork("serve:127.0.0.1:0");
    let port = h.listening(2)[0].port;
    let (silent, spoke) = h.drive(move || {
        let mut silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut spoke = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        spoke.write_all(b"x").expect("write");
        spoke.set_read_timeout(Some(MARGIN)).expect("timeout");
        let mut greeting = [0u8; 64];
        // A worker took it: its greeting, or a reset (it closed with our byte unread).
        let spoke = match spoke.read(&mut greeting) {
            Ok(n) => Ok(String::from_utf8_lossy(&greeting[..n]).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                Ok("hello from (reset)".to_owned())
            }
            Err(e) => Err(e),
        };
        silent
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut byte = [0u8; 1];
        (silent.read(&mut byte), spoke)
    });
    assert!(
        spoke.as_ref().is_ok_and(|g| g.starts_with("hello from ")),
        "{spoke:?}"
    );
    assert!(
        silent
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the silent client was handed over: {silent:?}"
    );
}

#[test]
fn round_robin_with_defer_accept_hands_over_only_connections_with_data() {
    deferred_listeners_hand_over_only_connections_with_data(policy("rr"));
}

#[test]
fn steer_with_defer_accept_hands_over_only_connections_with_data() {
    deferred_listeners_hand_over_only_connections_with_data(
        Settings::default().scheduling(Scheduling::Steered),
    );
}
