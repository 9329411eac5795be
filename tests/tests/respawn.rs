//! Workers that exit unasked are replaced (`Settings::respawn`): after growing delays while
//! they keep failing to boot, and not at all once they fail too often; always once they
//! served, or when they were killed from outside; at once after a stable run; never when
//! they were asked to go.

use std::time::{Duration, Instant};

use ringleader::{Event, Respawn, Settings};
use ringleader_tests::{Harness, replacement_of};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

fn respawning(h: &Harness, rules: Respawn) {
    h.primary
        .setup(Settings::default().respawn(Some(rules)))
        .expect("setup");
}

#[test]
fn a_worker_that_fails_at_start_is_replaced_after_growing_delays_then_given_up_on() {
    let h = Harness::new(FIXTURE);
    let first = Duration::from_millis(20);
    respawning(
        &h,
        Respawn::default()
            .first_delay(first)
            .give_up_after(4, Duration::from_secs(60)),
    );
    let start = Instant::now();
    h.fork("exit:3");
    let mut delays = Vec::new();
    let mut exits = 0;
    let seen = h.until(|e| match e {
        Event::Exit { code, .. } => {
            assert_eq!(*code, Some(3));
            exits += 1;
            false
        }
        Event::Respawned { delay, .. } => {
            delays.push(*delay);
            false
        }
        Event::GaveUp { .. } => true,
        _ => false,
    });
    assert_eq!(exits, 4, "one worker and three replacements");
    assert_eq!(delays, [first, first * 2, first * 4]);
    // The delays were waited (a lower bound only: the machine may be slow).
    assert!(start.elapsed() >= first * 7);
    match seen.last() {
        Some(Event::GaveUp { exits, .. }) => assert_eq!(*exits, 4),
        other => panic!("{other:?}"),
    }
    // Nothing is left to wait for: no worker, no replacement.
    assert!(h.primary.workers().is_empty());
    assert!(
        h.primary
            .next_event(Some(Duration::from_millis(200)))
            .expect("event")
            .is_none()
    );
}

#[test]
fn a_worker_that_ran_stably_is_replaced_at_once_and_one_asked_to_go_is_not() {
    let h = Harness::new(FIXTURE);
    respawning(
        &h,
        Respawn::default()
            .first_delay(Duration::from_secs(3600))
            .stable_after(Duration::from_millis(50)),
    );
    h.fork("exit-after:0:200");
    let mut replacements = Vec::new();
    h.until(|e| {
        if let Event::Respawned { worker, delay, .. } = e {
            assert_eq!(*delay, Duration::ZERO, "a stable run resets the back-off");
            replacements.push(*worker);
        }
        replacements.len() == 2
    });
    // Asked to go: it exits, and nothing replaces it.
    h.primary.disconnect_all().expect("disconnect");
    let seen = h.until(|e| matches!(e, Event::AllDisconnected));
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Respawned { .. })),
        "{:?}",
        seen.iter()
            .map(ringleader_tests::describe)
            .collect::<Vec<_>>()
    );
    assert!(h.primary.workers().is_empty());
}

#[test]
fn a_worker_that_served_and_died_is_always_replaced() {
    let h = Harness::new(FIXTURE);
    // Two boot failures would end the line; these workers boot, serve, and die.
    respawning(
        &h,
        Respawn::default()
            .first_delay(Duration::from_millis(10))
            .give_up_after(2, Duration::from_secs(60)),
    );
    let port = ringleader_tests::free_port();
    h.fork(&format!("serve-once:127.0.0.1:{port}"));
    h.listening(1);
    let mut delays = Vec::new();
    for _ in 0..5 {
        // The primary holds the connection while the line has no worker.
        let answer = h.drive(move || ringleader_tests::fetch_hello(port));
        assert!(answer.is_ok(), "{answer:?}");
        let seen = h.until(|e| matches!(e, Event::Respawned { .. } | Event::GaveUp { .. }));
        match seen.last() {
            Some(Event::Respawned { delay, booted, .. }) => {
                assert!(booted, "it served");
                delays.push(delay.as_millis());
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delays, [0, 10, 20, 40, 80]);
    let m = h.primary.metrics();
    assert_eq!((m.cluster.respawns, m.cluster.respawns_booted), (5, 5));
}

#[test]
fn a_worker_killed_before_it_booted_is_replaced_and_not_given_up_on() {
    let h = Harness::new(FIXTURE);
    respawning(
        &h,
        Respawn::default()
            .first_delay(Duration::from_millis(10))
            .give_up_after(2, Duration::from_secs(60)),
    );
    // Online, listening nowhere: it never boots. Killed four times, as the OOM killer would.
    let mut worker = h.fork("sleep");
    for _ in 0..4 {
        h.until(|e| matches!(e, Event::Online { worker: w } if *w == worker));
        let pid = h.primary.worker(worker).expect("worker").pid();
        ringleader_tests::signal(pid, rustix::process::Signal::KILL);
        let seen = h.until(|e| matches!(e, Event::Respawned { .. } | Event::GaveUp { .. }));
        match seen.last() {
            Some(Event::Respawned {
                worker: w, booted, ..
            }) => {
                assert!(!booted);
                worker = *w;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(h.primary.metrics().cluster.gave_up, 0);
}

/// The only worker of a round-robin listener is SIGKILLed with connections handed to it and
/// not taken (it was stopped): the listener waits for its replacement with them, and the
/// replacement serves every one, where Node's primary would close them unserved.
#[test]
fn connections_of_a_lone_worker_that_dies_wait_for_its_replacement() {
    let h = Harness::new(FIXTURE);
    respawning(
        &h,
        Respawn::default().first_delay(Duration::from_millis(10)),
    );
    let port = ringleader_tests::free_port();
    let first = h.fork(&format!("serve:127.0.0.1:{port}"));
    h.listening(1);
    let pid = h.primary.worker(first).expect("worker").pid();
    ringleader_tests::stop(pid);
    let clients = std::thread::spawn(move || ringleader_tests::burst(port, 10));
    let deadline = Instant::now() + ringleader_tests::WATCHDOG;
    let mut seen = Vec::new();
    while h.primary.handoff_stats().handed_over < 10 {
        assert!(Instant::now() < deadline, "watchdog: nothing handed over");
        if let Some(e) = h
            .primary
            .next_event(Some(Duration::from_millis(5)))
            .expect("event")
        {
            seen.push(e);
        }
    }
    ringleader_tests::signal(pid, rustix::process::Signal::KILL);
    let answers = h.drive(move || clients.join().expect("clients"));
    seen.extend(h.until(|e| matches!(e, Event::Respawned { .. })));
    let replacement = replacement_of(&seen, first).expect("a replacement");
    for answer in &answers {
        assert_eq!(
            answer,
            &Ok(format!("hello from {replacement}\n")),
            "{answers:?}"
        );
    }
    assert_eq!(h.primary.handoff_stats().closed_unserved, 0);
}
