//! Socket-activated servers as workers (`WorkerProtocol::SocketActivated`): a small Python
//! HTTP server that knows nothing of ringleader (`tests/activated/server.py`, which serves
//! only when `LISTEN_PID` is its own pid) gets the primary's socket at fd 3, under `none` and
//! `steer`; connections queued at a reuseport or steered worker that is SIGKILLed are served
//! by the worker that replaces it; a roll under load loses nothing; round-robin is refused
//! plainly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringleader::{ErrorKind, Event, Respawn, Roll, Scheduling, Settings, WorkerProtocol};
use ringleader_tests::load::{self, Load};
use ringleader_tests::{
    Harness, WATCHDOG, assert_stall_killed, at_once, describe, free_port, http_get, replacement_of,
    signal, stop,
};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");
const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/activated/server.py");

/// One GET with `connection: close`: the body (`hello from PID on NAME`).
fn get(port: u16) -> Result<String, String> {
    let answer = http_get(port, "/")?;
    match answer.split_once("\r\n\r\n") {
        Some((_, body)) if answer.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(format!("answer {answer:?}")),
    }
}

/// The pid in an answer.
fn pid_of(body: &str) -> u32 {
    body.strip_prefix("hello from ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("not an answer: {body:?}"))
}

/// A primary with two Python workers serving `web` on a port of their own under `scheduling`,
/// replaced when they exit unasked; returns it, the port and the workers' ids.
fn cluster(
    scheduling: Scheduling,
    settings: Settings,
) -> (Harness, u16, [ringleader::WorkerId; 2]) {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(
            settings
                .exec("python3")
                .args([SERVER])
                .scheduling(scheduling)
                .worker_protocol(WorkerProtocol::SocketActivated)
                .respawn(Some(
                    Respawn::default().first_delay(Duration::from_millis(10)),
                )),
        )
        .expect("setup");
    let any_port: SocketAddr = ([127, 0, 0, 1], 0).into();
    let port = h
        .primary
        .activation_socket("web", any_port)
        .expect("a socket")
        .port();
    let workers = [
        h.primary.fork(&[]).expect("fork").id(),
        h.primary.fork(&[]).expect("fork").id(),
    ];
    let listening = h.listening(2);
    assert!(listening.iter().all(|l| l.port == port), "{listening:?}");
    (h, port, workers)
}

/// Asks until both workers answered (each answer from one of them, on `web`).
fn both_answer(h: &Harness, port: u16, workers: [ringleader::WorkerId; 2]) {
    let pids: Vec<u32> = workers
        .iter()
        .map(|id| h.primary.worker(*id).expect("worker").pid())
        .collect();
    let seen = h.drive(move || {
        let deadline = Instant::now() + WATCHDOG;
        let mut seen = std::collections::BTreeSet::new();
        // Four at a time, so that a single-threaded server is busy while another asks.
        while seen.len() < 2 && Instant::now() < deadline {
            for answer in at_once(4, move || get(port)) {
                let body = answer.expect("an answer");
                assert!(body.ends_with(" on web\n"), "{body:?}");
                seen.insert(pid_of(&body));
            }
        }
        seen
    });
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), pids);
}

#[test]
fn socket_activated_servers_share_one_socket() {
    let (h, port, workers) = cluster(Scheduling::Shared, Settings::default());
    both_answer(&h, port, workers);
}

#[test]
fn socket_activated_servers_get_steered_sockets_of_their_own() {
    let (h, port, workers) = cluster(Scheduling::Steered, Settings::default());
    both_answer(&h, port, workers);
}

/// Worker a stops (SIGSTOP) while 40 clients ask; once connections wait in its socket's
/// queue it is SIGKILLed. Every client is answered: by b, or, for those queued at a, by
/// the worker that replaces a and takes its socket over.
fn queued_at_a_killed_server(scheduling: Scheduling) {
    let (h, port, [a, b]) = cluster(scheduling, Settings::default());
    let pid = |id| h.primary.worker(id).expect("worker").pid();
    let (pid_a, pid_b) = (pid(a), pid(b));
    stop(pid_a);
    let clients = std::thread::spawn(move || at_once(40, move || get(port)));
    let deadline = Instant::now() + WATCHDOG;
    let mut seen = Vec::new();
    let queued_at_a = |h: &Harness| {
        let m = h.primary.metrics();
        m.workers.iter().find(|w| w.id == a).map_or(0, |w| w.queued)
    };
    let mut queued = 0;
    while !clients.is_finished() {
        assert!(
            Instant::now() < deadline,
            "watchdog: clients hang; {:?}",
            seen.iter().map(describe).collect::<Vec<_>>()
        );
        if let Ok(Some(e)) = h.primary.next_event(Some(Duration::from_millis(5))) {
            seen.push(e);
        }
        if queued == 0 {
            queued = queued_at_a(&h);
            if queued > 0 {
                signal(pid_a, rustix::process::Signal::KILL);
            }
        }
    }
    assert!(
        queued > 0,
        "no connection ever waited at the stopped worker"
    );
    let answers = clients.join().expect("clients");
    seen.extend(h.drain());
    let events: Vec<String> = seen.iter().map(describe).collect();
    let replacement =
        replacement_of(&seen, a).unwrap_or_else(|| panic!("a was not replaced: {events:?}"));
    let pid_c = pid(replacement);
    let mut by_replacement = 0;
    for answer in &answers {
        let body = answer
            .as_ref()
            .unwrap_or_else(|e| panic!("{e}: {events:?}"));
        let served_by = pid_of(body);
        assert!(
            served_by == pid_b || served_by == pid_c,
            "{body:?} (a {pid_a}, b {pid_b}, its replacement {pid_c})"
        );
        by_replacement += usize::from(served_by == pid_c);
    }
    assert!(
        by_replacement > 0,
        "{queued} waited at a, none was served by its replacement: {answers:?}"
    );
}

#[test]
fn connections_queued_at_a_killed_steered_server_are_served_by_its_replacement() {
    queued_at_a_killed_server(Scheduling::Steered);
}

#[test]
fn connections_queued_at_a_killed_reuseport_server_are_served_by_its_replacement() {
    queued_at_a_killed_server(Scheduling::ReusePort);
}

/// A steered server that stops (SIGSTOP) with connections in its queue is killed once its
/// queue has not moved for 300 ms (`kill_stalled_after`) since it started (seen taking a
/// connection, or 3 s after it was spawned: `start_within`), and its replacement serves
/// them. The replacement, which may be slow to start on a loaded machine, is not killed for
/// the queue it inherits.
#[test]
fn a_stopped_steered_server_is_killed_and_its_replacement_serves_its_queue() {
    let (h, port, [a, b]) = cluster(
        Scheduling::Steered,
        Settings::default()
            .kill_stalled_after(Some(Duration::from_millis(300)))
            .start_within(Duration::from_secs(3)),
    );
    let pid = |id| h.primary.worker(id).expect("worker").pid();
    let (pid_a, pid_b) = (pid(a), pid(b));
    stop(pid_a);
    let answers = h.drive(move || at_once(40, move || get(port)));
    let events = assert_stall_killed(&h.drain(), a);
    for answer in &answers {
        let body = answer
            .as_ref()
            .unwrap_or_else(|e| panic!("{e}: {events:?}"));
        assert_ne!(pid_of(body), pid_a, "{body:?}");
    }
    assert!(
        answers.iter().flatten().any(|body| pid_of(body) != pid_b),
        "nothing waited at the stopped server: {answers:?}"
    );
}

/// A steered server that takes a second to start is not killed as stalled, although its
/// queue holds connections and does not move for longer than `kill_stalled_after`: it serves
/// them once it has started.
#[test]
fn a_steered_server_slow_to_start_is_not_killed_as_stalled() {
    let (h, port, _) = cluster(
        Scheduling::Steered,
        Settings::default().kill_stalled_after(Some(Duration::from_millis(200))),
    );
    let slow = h.primary.fork(&[("START_DELAY", "1")]).expect("fork");
    let slow_pid = slow.pid();
    h.listening(1);
    let answers = h.drive(move || at_once(40, move || get(port)));
    let events: Vec<String> = h.drain().iter().map(describe).collect();
    assert!(
        !events.iter().any(|e| e.starts_with("stalled-killed")),
        "{events:?}"
    );
    for answer in &answers {
        answer
            .as_ref()
            .unwrap_or_else(|e| panic!("{e}: {events:?}"));
    }
    assert!(
        answers
            .iter()
            .flatten()
            .any(|body| pid_of(body) == slow_pid),
        "nothing waited at the slow server: {answers:?}"
    );
}

/// A roll (SIGTERM to each old worker once its successor runs) under 8 looping clients:
/// nothing fails, and the workers are new.
fn roll_under_load(scheduling: Scheduling) {
    let (h, port, old) = cluster(scheduling, Settings::default());
    let mut load = Load::new();
    load.clients(8, move |_| load::close(port));
    let load = h.drive(move || {
        load.wait_for(20);
        load
    });
    h.primary.roll(Roll::default()).expect("roll");
    let seen = h.until(|e| matches!(e, Event::RollDone { .. } | Event::RollFailed { .. }));
    assert!(
        matches!(seen.last(), Some(Event::RollDone { replaced: 2, .. })),
        "{:?}",
        seen.iter().map(describe).collect::<Vec<_>>()
    );
    let tally = h.drive(move || {
        load.wait_for(20);
        load.stop()
    });
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert!(tally.ok > 0);
    let now = h.primary.workers();
    assert!(now.iter().all(|id| !old.contains(id)), "{now:?} {old:?}");
}

#[test]
fn a_roll_of_socket_activated_servers_loses_nothing_shared() {
    roll_under_load(Scheduling::Shared);
}

#[test]
fn a_roll_of_socket_activated_servers_loses_nothing_reuseport() {
    roll_under_load(Scheduling::ReusePort);
}

#[test]
fn a_roll_of_socket_activated_servers_loses_nothing_steered() {
    roll_under_load(Scheduling::Steered);
}

#[test]
fn round_robin_is_refused_for_socket_activated_servers_with_the_reason() {
    let h = Harness::new(FIXTURE);
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    h.primary
        .setup(
            Settings::default()
                .exec("python3")
                .args([SERVER])
                .worker_protocol(WorkerProtocol::SocketActivated),
        )
        .expect("setup");
    let err = h
        .primary
        .activation_socket("web", addr)
        .expect_err("round-robin with socket-activated workers");
    assert_eq!(err.kind(), ErrorKind::Settings);
    assert!(err.to_string().contains("round-robin"), "{err}");
    // Nothing was bound: the port is free.
    std::net::TcpListener::bind(addr).expect("the port is still free");
    // Forking one is refused alike.
    let err = h.primary.fork(&[]).expect_err("a fork under round-robin");
    assert_eq!(err.kind(), ErrorKind::Settings);
    assert!(err.to_string().contains("round-robin"), "{err}");
}

#[test]
fn a_bind_error_is_the_setup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(
            Settings::default()
                .scheduling(Scheduling::Shared)
                .worker_protocol(WorkerProtocol::SocketActivated),
        )
        .expect("setup");
    let err = h
        .primary
        .activation_socket("web", addr)
        .expect_err("the port is taken");
    assert_eq!(err.raw_os_error(), Some(98), "{err}");
    // A name systemd could not pass.
    let err = h
        .primary
        .activation_socket("a:b", ([127, 0, 0, 1], 0).into())
        .expect_err("a name with ':'");
    assert_eq!(err.kind(), ErrorKind::Settings);
}
