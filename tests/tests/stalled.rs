//! A stopped worker holds no client long (`Settings::take_back_after`): connections that
//! wait at it past the deadline are taken back from its queue and served by another; one
//! stalled past a longer deadline (`Settings::kill_stalled_after`) is killed and replaced.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringleader::{Event, Respawn, Settings, SharedPolicy};
use ringleader_tests::{Harness, describe, signal, stop};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");
const DEADLINE: Duration = Duration::from_millis(50);
/// Far below the stop (it lasts until every client is answered), far above the deadline.
const MARGIN: Duration = Duration::from_secs(2);

fn stopped_worker_holds_no_client(policy: &str) {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(
            Settings::default()
                .policy(SharedPolicy::named(policy).expect("policy"))
                .take_back_after(Some(DEADLINE)),
        )
        .expect("setup");
    let stopped = h.fork("serve:127.0.0.1:0");
    let good = h.fork("serve:127.0.0.1:0");
    let port = h.listening(2)[0].port;
    let pid = h.primary.worker(stopped).expect("worker").pid();
    stop(pid);
    let waits = h.drive(move || {
        let clients: Vec<_> = (0..40)
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
            .collect::<Vec<_>>()
    });
    signal(pid, rustix::process::Signal::CONT);
    for w in &waits {
        let (waited, answer) = w
            .as_ref()
            .expect("every client answered while one worker stopped");
        assert_eq!(answer, &format!("hello from {good}\n"), "waited {waited:?}");
    }
    let stats = h.primary.handoff_stats();
    assert!(stats.taken_from_stalled > 0, "{stats:?}");
}

#[test]
fn round_robin_takes_back_what_waits_at_a_stopped_worker() {
    stopped_worker_holds_no_client("rr");
}

#[test]
fn least_connections_takes_back_what_waits_at_a_stopped_worker() {
    stopped_worker_holds_no_client("lc");
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
