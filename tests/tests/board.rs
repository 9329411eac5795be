//! The load board seen from outside: hints steer the hand-off, and a worker that scribbles
//! over its slot cannot hurt the others.

use std::io::Read;
use std::net::TcpStream;

use ringleader::{Event, Settings, SharedPolicy, WorkerId};
use ringleader_tests::{Harness, WATCHDOG};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

fn port(h: &Harness, n: usize) -> u16 {
    let mut port = 0;
    for _ in 0..n {
        h.until(|e| match e {
            Event::Listening { address, .. } => {
                port = address.port;
                true
            }
            _ => false,
        });
    }
    port
}

/// `n` connections one after the other; which worker answered each.
fn fetch_many(h: &Harness, port: u16, n: usize) -> Vec<String> {
    h.drive(move || {
        (0..n)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
                let mut out = String::new();
                s.read_to_string(&mut out).expect("read");
                out
            })
            .collect()
    })
}

/// Sends `order` to worker `id` and waits for its answer.
fn order(h: &Harness, id: WorkerId, order: &str) -> String {
    ordered(h, id, order).0
}

/// [`order`], with the events that came before the answer.
fn ordered(h: &Harness, id: WorkerId, order: &str) -> (String, Vec<Event>) {
    h.primary
        .worker(id)
        .expect("worker")
        .send(order.as_bytes())
        .expect("send");
    let mut seen = h.until(|e| matches!(e, Event::Message { worker, .. } if *worker == id));
    match seen.pop() {
        Some(Event::Message { message, .. }) => {
            (String::from_utf8_lossy(&message.data).into(), seen)
        }
        _ => unreachable!(),
    }
}

#[test]
fn a_paused_worker_gets_no_connection_until_it_resumes() {
    let h = Harness::new(FIXTURE);
    let a = h.fork("hinted:127.0.0.1:0");
    let b = h.fork("hinted:127.0.0.1:0");
    let port = port(&h, 2);
    assert_eq!(order(&h, a, "pause"), "ok");
    for answer in fetch_many(&h, port, 20) {
        assert_eq!(answer, format!("hello from {b}\n"));
    }
    assert_eq!(order(&h, a, "resume"), "ok");
    let answers = fetch_many(&h, port, 20);
    let from_a = answers
        .iter()
        .filter(|s| **s == format!("hello from {a}\n"))
        .count();
    assert_eq!(from_a, 10, "round robin again: {answers:?}");
}

#[test]
fn when_every_worker_is_paused_connections_wait_and_are_served_on_resume() {
    let h = Harness::new(FIXTURE);
    let a = h.fork("hinted:127.0.0.1:0");
    let port = port(&h, 1);
    assert_eq!(order(&h, a, "pause"), "ok");
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    });
    // The connection is accepted and held: nothing reaches the paused worker.
    while h.primary.handoff_stats().accepted == 0 {
        let _ = h
            .primary
            .next_event(Some(std::time::Duration::from_millis(5)));
    }
    assert_eq!(h.primary.handoff_stats().handed_over, 0);
    assert_eq!(order(&h, a, "resume"), "ok");
    let answer = h.drive(move || client.join().expect("client"));
    assert_eq!(answer, format!("hello from {a}\n"));
}

#[test]
fn a_worker_that_scribbles_over_its_slot_is_reported_once_and_the_others_serve_everything() {
    let h = Harness::new(FIXTURE);
    let bad = h.fork("hinted:127.0.0.1:0");
    let good = h.fork("hinted:127.0.0.1:0");
    let port = port(&h, 2);
    let (answer, before) = ordered(&h, bad, "scribble");
    assert_eq!(answer, "ok");
    let mut answers = fetch_many(&h, port, 30);
    answers.extend(fetch_many(&h, port, 30));
    for answer in &answers {
        assert_eq!(*answer, format!("hello from {good}\n"));
    }
    // One report, naming the worker; it stays alive and connected, just unused.
    let errors: Vec<String> = before
        .into_iter()
        .chain(h.drain())
        .filter_map(|e| match e {
            Event::Error { worker, error } => Some(format!("{worker:?} {error}")),
            _ => None,
        })
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!("Some({bad}) ")),
        "{errors:?}"
    );
    assert!(h.primary.worker(bad).expect("bad").is_connected());
}

/// `n` connections, one after the other, each kept open after one `who` answered (the
/// `serve-lines` fixture answers `<id>: who`): the answers and the open streams.
fn hold(port: u16, n: usize) -> Vec<(String, TcpStream)> {
    use std::io::{BufRead, BufReader, Write};
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
            writeln!(s, "who").expect("write");
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).expect("read");
            (line, s)
        })
        .collect()
}

#[test]
fn least_connections_steers_around_a_worker_holding_connections() {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().policy(SharedPolicy::named("lc").expect("lc")))
        .expect("setup");
    let a = h.fork("serve-lines:127.0.0.1:0");
    let b = h.fork("serve-lines:127.0.0.1:0");
    let port = port(&h, 2);
    // Six long-lived connections: the first goes to a, then b has fewer, and so on; keep
    // the ones a holds open and close b's.
    let held = h.drive(move || hold(port, 6));
    let on_a: Vec<_> = held
        .into_iter()
        .filter(|(line, _)| line.starts_with(&format!("{a}:")))
        .collect();
    assert_eq!(on_a.len(), 3, "least connections alternates while equal");
    // b's three are closed now; once b has finished them, a holds 3 and b none.
    let deadline = std::time::Instant::now() + WATCHDOG;
    while h.primary.worker(b).expect("b").load().finished < 3 {
        assert!(std::time::Instant::now() < deadline, "b never finished");
        let _ = h
            .primary
            .next_event(Some(std::time::Duration::from_millis(5)));
    }
    let load_a = h.primary.worker(a).expect("a").load();
    assert_eq!((load_a.taken, load_a.finished), (3, 0), "{load_a:?}");
    let next = h.drive(move || hold(port, 3));
    for (line, _) in &next {
        assert!(line.starts_with(&format!("{b}:")), "{line:?}");
    }
    drop(on_a);
}

#[test]
fn a_slot_goes_to_the_next_worker_only_after_its_owner_exited_and_starts_from_zero() {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().board_slots(2))
        .expect("setup");
    let a = h.fork("hinted:127.0.0.1:0");
    let b = h.fork("hinted:127.0.0.1:0");
    let p = port(&h, 2);
    fetch_many(&h, p, 10);
    let load = |id| h.primary.worker(id).expect("worker").load();
    assert!(load(a).on_board && load(b).on_board);
    assert_eq!((load(a).handed, load(a).taken), (5, 5));
    // No slot left: the third worker runs without one, and still serves.
    let c = h.fork("hinted:127.0.0.1:0");
    port(&h, 1);
    assert!(!load(c).on_board);
    let refused = order(&h, c, "pause");
    assert!(refused.contains("no board slot"), "{refused}");
    let answers = fetch_many(&h, p, 9);
    assert!(
        answers.contains(&format!("hello from {c}\n")),
        "{answers:?}"
    );
    // a dies; its slot waits for its exit, then the next worker gets it, zeroed.
    h.primary
        .worker(a)
        .expect("a")
        .kill(Some(ringleader::Signal::KILL))
        .expect("kill");
    h.until_gone(a);
    let d = h.fork("hinted:127.0.0.1:0");
    port(&h, 1);
    let fresh = load(d);
    assert!(fresh.on_board);
    assert_eq!((fresh.handed, fresh.taken, fresh.finished), (0, 0, 0));
    let answers = fetch_many(&h, p, 9);
    let from_d = answers
        .iter()
        .filter(|s| **s == format!("hello from {d}\n"))
        .count() as u64;
    assert_eq!(load(d).taken, from_d);
}

#[test]
fn a_draining_worker_gives_back_what_was_queued_for_it() {
    let h = Harness::new(FIXTURE);
    let lazy = h.fork("hinted-lazy:127.0.0.1:0");
    let busy = h.fork("hinted:127.0.0.1:0");
    let p = port(&h, 2);
    // Four clients at once: round robin queues two at the worker that is not accepting.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", p)).expect("connect");
                s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
                let mut out = String::new();
                s.read_to_string(&mut out).expect("read");
                out
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + WATCHDOG;
    while h.primary.worker(lazy).expect("lazy").load().handed < 2 {
        assert!(std::time::Instant::now() < deadline, "nothing queued");
        let _ = h
            .primary
            .next_event(Some(std::time::Duration::from_millis(5)));
    }
    assert_eq!(order(&h, lazy, "drain"), "ok");
    let answers = h.drive(move || {
        clients
            .into_iter()
            .map(|c| c.join().expect("client"))
            .collect::<Vec<_>>()
    });
    for answer in &answers {
        assert_eq!(*answer, format!("hello from {busy}\n"));
    }
    let load = h.primary.worker(lazy).expect("lazy").load();
    assert!(load.draining, "{load:?}");
    assert_eq!((load.handed, load.taken), (0, 0), "{load:?}");
    assert_eq!(h.primary.handoff_stats().taken_back, 2);
}
