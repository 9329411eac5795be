//! Rolling restarts (`Primary::roll`): every worker replaced under load with no failed
//! request; a successor that crashes or never gets ready stops the roll and the old workers
//! keep serving; one roll at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ringleader::{ErrorKind, Event, Roll, Scheduling, Settings};
use ringleader_tests::{Harness, WATCHDOG, describe, fd_count, fetch_hello};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

/// Waits for the roll to end; panics if it failed.
fn rolled(h: &Harness) -> usize {
    let seen = h.until(|e| matches!(e, Event::RollDone { .. } | Event::RollFailed { .. }));
    match seen.last() {
        Some(Event::RollDone { replaced, .. }) => *replaced,
        _ => panic!(
            "the roll failed: {:?}",
            seen.iter().map(describe).collect::<Vec<_>>()
        ),
    }
}

fn roll_under_load(scheduling: Scheduling) {
    let _alone = ringleader_tests::alone();
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().scheduling(scheduling))
        .expect("setup");
    for _ in 0..4 {
        h.fork("serve:127.0.0.1:0");
    }
    let port = h.listening(4)[0].port;
    let before: Vec<u32> = h
        .primary
        .workers()
        .iter()
        .filter_map(|id| h.primary.worker(*id).map(|w| w.pid()))
        .collect();
    let fds = fd_count();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (stop, ok, failed, errors) =
                (stop.clone(), ok.clone(), failed.clone(), errors.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match fetch_hello(port) {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            errors.lock().expect("lock").push(e);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    h.primary.roll(Roll::default()).expect("roll");
    let err = h.primary.roll(Roll::default()).expect_err("a second roll");
    assert_eq!(err.kind(), ErrorKind::Settings);
    assert_eq!(rolled(&h), 4);
    stop.store(true, Ordering::Relaxed);
    h.drive(move || {
        for c in clients {
            c.join().expect("client");
        }
    });
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed,
        0,
        "{ok} answered, {failed} failed: {:?}",
        errors.lock().expect("lock").first()
    );
    assert!(ok > 0);
    let after: Vec<u32> = h
        .primary
        .workers()
        .iter()
        .filter_map(|id| h.primary.worker(*id).map(|w| w.pid()))
        .collect();
    assert_eq!(after.len(), 4, "{scheduling:?}");
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} -> {after:?}"
    );
    // The old workers' channels, pidfds and sockets are gone once their exits are seen.
    let deadline = std::time::Instant::now() + WATCHDOG;
    while fd_count() != fds {
        assert!(
            std::time::Instant::now() < deadline,
            "fds {} -> {}",
            fds,
            fd_count()
        );
        let _ = h.primary.next_event(Some(Duration::from_millis(10)));
    }
}

#[test]
fn a_roll_under_round_robin_replaces_every_worker_and_fails_no_request() {
    roll_under_load(Scheduling::RoundRobin);
}

#[test]
fn a_roll_under_shared_sockets_replaces_every_worker_and_fails_no_request() {
    roll_under_load(Scheduling::Shared);
}

#[test]
fn a_roll_under_reuseport_replaces_every_worker_and_fails_no_request() {
    roll_under_load(Scheduling::ReusePort);
}

#[test]
fn a_roll_under_steering_replaces_every_worker_and_fails_no_request() {
    roll_under_load(Scheduling::Steered);
}

/// Two serving workers, then a roll whose successors run `mode` instead.
fn failing_roll(mode: &str, rules: Roll) -> (Harness, Vec<u32>, u16, String) {
    let h = Harness::new(FIXTURE);
    let old: Vec<u32> = (0..2).map(|_| h.fork("serve:127.0.0.1:0")).collect();
    let port = h.listening(2)[0].port;
    h.primary
        .setup(Settings::default().env([("FIXTURE_MODE_OVERRIDE", mode)]))
        .expect("setup");
    h.primary.roll(rules).expect("roll");
    let seen = h.until(|e| matches!(e, Event::RollDone { .. } | Event::RollFailed { .. }));
    let reason = match seen.last() {
        Some(Event::RollFailed { reason, .. }) => reason.clone(),
        _ => panic!(
            "the roll did not fail: {:?}",
            seen.iter().map(describe).collect::<Vec<_>>()
        ),
    };
    (h, old, port, reason)
}

fn old_workers_serve(h: &Harness, old: &[u32], port: u16) {
    let answers = h.drive(move || (0..20).map(|_| fetch_hello(port)).collect::<Vec<_>>());
    for a in answers {
        let a = a.expect("an answer");
        assert!(
            old.iter().any(|id| a == format!("hello from {id}\n")),
            "{a:?} from an old worker"
        );
    }
    let mut ids = h.primary.workers();
    ids.sort_unstable();
    assert_eq!(ids, old);
}

#[test]
fn a_roll_waits_for_successors_to_say_they_are_ready_when_told_is_asked() {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().ready_when_told(true))
        .expect("setup");
    // Each worker listens at once and says it is ready 200 ms later (a warm-up).
    for _ in 0..2 {
        h.fork("ready-after:200:127.0.0.1:0");
    }
    h.listening(2);
    h.primary.roll(Roll::default()).expect("roll");
    let seen = h.until(|e| matches!(e, Event::RollDone { .. } | Event::RollFailed { .. }));
    let names: Vec<String> = seen.iter().map(describe).collect();
    assert!(
        matches!(seen.last(), Some(Event::RollDone { .. })),
        "{names:?}"
    );
    let steps: Vec<_> = seen
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Event::RollStep { new, .. } => Some((i, *new)),
            _ => None,
        })
        .collect();
    assert_eq!(steps.len(), 2, "{names:?}");
    for (at, new) in steps {
        let listened = seen[..at]
            .iter()
            .position(|e| matches!(e, Event::Listening { worker, .. } if *worker == new));
        let ready = seen[..at]
            .iter()
            .position(|e| matches!(e, Event::Ready { worker } if *worker == new));
        assert!(
            listened.is_some() && ready.is_some(),
            "successor {new} replaced its predecessor before it said it was ready: {names:?}"
        );
    }
}

#[test]
fn a_successor_that_listens_but_never_says_ready_stops_the_roll_when_told_is_asked() {
    let h = Harness::new(FIXTURE);
    let old: Vec<u32> = (0..2).map(|_| h.fork("serve:127.0.0.1:0")).collect();
    let port = h.listening(2)[0].port;
    // The successors listen where their predecessors did, and never call `ready`.
    h.primary
        .setup(Settings::default().ready_when_told(true))
        .expect("setup");
    h.primary
        .roll(Roll::default().ready_within(Duration::from_millis(300)))
        .expect("roll");
    let seen = h.until(|e| matches!(e, Event::RollDone { .. } | Event::RollFailed { .. }));
    match seen.last() {
        Some(Event::RollFailed { reason, .. }) => assert!(reason.contains("not ready"), "{reason}"),
        _ => panic!("{:?}", seen.iter().map(describe).collect::<Vec<_>>()),
    }
    old_workers_serve(&h, &old, port);
}

#[test]
fn a_successor_that_crashes_at_start_stops_the_roll_and_the_old_workers_serve() {
    let (h, old, port, reason) = failing_roll("exit:3", Roll::default());
    assert!(reason.contains("exited"), "{reason}");
    old_workers_serve(&h, &old, port);
}

#[test]
fn a_successor_that_never_listens_stops_the_roll_in_time_and_the_old_workers_serve() {
    let rules = Roll::default().ready_within(Duration::from_millis(300));
    let (h, old, port, reason) = failing_roll("echo", rules);
    assert!(reason.contains("not ready"), "{reason}");
    old_workers_serve(&h, &old, port);
}
