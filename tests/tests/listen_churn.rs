//! Shared ports under stress: a worker stuck in a busy loop is never handed more than its
//! bound while the others serve everything, and 10,000 connections survive a worker being
//! killed (SIGTERM, which the fixture treats as a graceful stop) every 100 ms and respawned,
//! with the primary's fd count back at its start afterwards.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringleader::{Event, Signal};
use ringleader_tests::{Harness, WATCHDOG, fd_count};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");
/// The primary's bound on connections handed to a worker and not yet taken.
const BOUND: usize = 16;

fn fetch(port: u16) -> Result<String, String> {
    let mut s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(WATCHDOG))
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    Ok(out)
}

fn port_of(h: &Harness, n: usize) -> u16 {
    h.listening(n)[0].port
}

#[test]
fn a_stuck_worker_gets_no_more_than_its_bound_and_the_others_serve_the_rest() {
    let h = Harness::new(FIXTURE);
    let good = [h.fork("serve:127.0.0.1:0"), h.fork("serve:127.0.0.1:0")];
    let stuck = h.fork("listen-spin:127.0.0.1:0");
    let port = port_of(&h, 3);
    let (tx, rx) = mpsc::channel();
    for _ in 0..200 {
        let tx = tx.clone();
        std::thread::spawn(move || tx.send(fetch(port)));
    }
    drop(tx);
    // If the stuck worker held more than BOUND, fewer than 200 - BOUND could ever be answered
    // and this would trip the watchdog.
    let (served, rx) = h.drive(move || (rx.iter().take(200 - BOUND).collect::<Vec<_>>(), rx));
    for answer in &served {
        let answer = answer.as_ref().expect("answer");
        assert!(
            good.iter().any(|g| *answer == format!("hello from {g}\n")),
            "{answer}"
        );
    }
    h.primary
        .worker(stuck)
        .expect("stuck")
        .kill(Some(Signal::KILL))
        .expect("kill");
    h.until_gone(stuck);
    let rest = h.drive(move || rx.iter().collect::<Vec<_>>());
    assert_eq!(
        rest.len(),
        BOUND,
        "exactly the stuck worker's share was left"
    );
    assert!(
        rest.iter()
            .all(|a| a.as_ref().is_ok_and(|a| a.starts_with("hello from "))),
        "{rest:?}"
    );
}

#[test]
fn ten_thousand_connections_survive_a_kill_every_100ms() {
    // Counts this process's fds: no other test may open any meanwhile.
    let _alone = ringleader_tests::alone();
    let h = Harness::new(FIXTURE);
    let before = fd_count();
    const MODE: &str = "serve-graceful:127.0.0.1:0";
    for _ in 0..4 {
        h.fork(MODE);
    }
    let port = port_of(&h, 4);
    let (tx, rx) = mpsc::channel();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                // Paced over about two seconds, so that some twenty kills land during the run.
                for _ in 0..1250 {
                    let _ = tx.send(fetch(port));
                    std::thread::sleep(Duration::from_micros(1600));
                }
            })
        })
        .collect();
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut next_kill = Instant::now() + Duration::from_millis(100);
    let (mut kills, mut respawns, mut answers, mut errors) = (0, 0, 0usize, Vec::new());
    let mut listening = 0;
    // The workers that listen and were not told to stop: a kill comes only while another
    // serves, or the listener would end with its last worker (there is no respawning here,
    // only this loop's forks, which a loaded machine can make slower than the kills).
    let mut serving: std::collections::VecDeque<_> = h.primary.workers().into();
    // What the primary looked like when the first error came, for the failure message.
    let mut at_first_error = None;
    while answers + errors.len() < 10_000 {
        assert!(
            Instant::now() < deadline,
            "watchdog: {answers} answers after 120 s"
        );
        while let Ok(a) = rx.try_recv() {
            match a {
                Ok(a) if a.starts_with("hello from ") && a.ends_with('\n') => answers += 1,
                Ok(a) => errors.push(format!("short answer {a:?}")),
                Err(e) => errors.push(e),
            }
            if !errors.is_empty() && at_first_error.is_none() {
                at_first_error = Some(format!(
                    "after {answers} answers, {kills} kills, {respawns} respawns, {listening} \
                     Listening events; {} workers; {:?}",
                    h.primary.workers().len(),
                    h.primary.handoff_stats()
                ));
            }
        }
        if Instant::now() >= next_kill && serving.len() > 1 {
            let victim = serving.pop_front().expect("a worker");
            if h.primary.worker(victim).expect("worker").kill(None).is_ok() {
                kills += 1;
            }
            next_kill += Duration::from_millis(100);
        }
        if let Some(e) = h
            .primary
            .next_event(Some(Duration::from_millis(2)))
            .expect("event")
        {
            match e {
                Event::Exit { .. } => {
                    h.fork(MODE);
                    respawns += 1;
                }
                Event::Listening { worker, .. } => {
                    listening += 1;
                    serving.push_back(worker);
                }
                Event::Error { error, .. } => panic!("primary reported {error}"),
                _ => {}
            }
        }
    }
    for c in clients {
        c.join().expect("client");
    }
    eprintln!(
        "{answers} answers, {} errors, {kills} kills, {respawns} respawns",
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}, {}",
        errors.len(),
        errors.first(),
        at_first_error.unwrap_or_default()
    );
    assert!(
        kills >= 15,
        "only {kills} kills: the test did not stress anything"
    );
    h.primary.disconnect_all().expect("disconnect all");
    h.until(|e| matches!(e, Event::AllDisconnected));
    assert_eq!(
        fd_count(),
        before,
        "the primary's fd count returns to where it started"
    );
}

#[test]
fn when_every_worker_is_saturated_the_primary_stops_accepting_and_loses_nothing() {
    // Counts this process's fds: no other test may open any meanwhile.
    let _alone = ringleader_tests::alone();
    const PENDING_BOUND: usize = 256;
    const BACKLOG: usize = 511;
    let h = Harness::new(FIXTURE);
    let stuck = h.fork("listen-spin:127.0.0.1:0");
    let port = port_of(&h, 1);
    let before = fd_count();
    // 400 clients from a process of their own, so that this process's fds are the primary's.
    let clients =
        ringleader_tests::Spawned::start(FIXTURE, &["clients", &port.to_string(), "400"], &[]);
    clients.expect_line("STARTED");
    // Let the primary accept what it will: the stuck worker takes 16, the primary queues up
    // to its bound, and the kernel's backlog holds the rest.
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let _ = h
            .primary
            .next_event(Some(Duration::from_millis(10)))
            .expect("event");
        most = most.max(fd_count().saturating_sub(before));
    }
    eprintln!("the primary held at most {most} accepted connections");
    assert!(
        most >= PENDING_BOUND,
        "the test did not saturate the cluster ({most})"
    );
    // epoll stops at the bound exactly; on io_uring one multishot accept drains what the
    // listen backlog holds in a single pass before it can be cancelled, so the bound there is
    // one backlog more.
    assert!(
        most <= PENDING_BOUND + BACKLOG,
        "the primary held {most} connections, bound {PENDING_BOUND}"
    );
    // A worker that serves arrives; once it listens, the stuck one goes (retiring the only
    // listener first would close the listener and its queue, as Node does): all 400 are served.
    let server = h.fork("serve:127.0.0.1:0");
    h.until(|e| matches!(e, Event::Listening { worker, .. } if *worker == server));
    h.primary
        .worker(stuck)
        .expect("stuck")
        .kill(Some(Signal::KILL))
        .expect("kill");
    let answers = h.drive(move || clients.expect_line("ANSWERS"));
    assert_eq!(answers, "400 0", "every client answered by worker {server}");
}

#[test]
fn b10_a_primary_out_of_fds_skips_the_failed_accepts_and_loses_no_connection() {
    // The fixture primary can hold about one connection at a time: most accepts fail with
    // EMFILE while 200 clients connect at once. Each failure leaves its connection in the
    // kernel's backlog; accepting resumes and every client gets its answer.
    let primary = ringleader_tests::Spawned::start(FIXTURE, &["starved"], &[]);
    let port = primary.expect_line("READY");
    let clients = ringleader_tests::Spawned::start(FIXTURE, &["clients", &port, "200"], &[]);
    clients.expect_line("STARTED");
    assert_eq!(clients.expect_line("ANSWERS"), "200 0");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(primary.pid() as i32).expect("pid"),
        rustix::process::Signal::USR1,
    )
    .expect("signal");
    let stats = primary.expect_line("STATS");
    let n: Vec<u64> = stats
        .split(' ')
        .map(|x| x.parse().expect("number"))
        .collect();
    assert_eq!(n[0], 200, "accepted, in {stats}");
    assert!(n[1] >= 200, "handed over, in {stats}");
    // On an io_uring limited to older kernels (no multishot accept), one accept is in flight
    // at a time and its connection is handed over before the next: the primary rarely holds
    // two, and the limit may never be hit. Say so rather than pass as if it had been.
    let one_at_a_time = std::env::var_os(ringleader::ENV_URING_KERNEL).is_some()
        && std::env::var(ringleader::ENV_BACKEND).as_deref() == Ok("io_uring");
    if n[2] == 0 && one_at_a_time {
        eprintln!("not provoked: one accept at a time never ran the primary out of fds ({stats})");
        return;
    }
    assert!(
        n[2] > 0,
        "the test never ran the primary out of fds ({stats})"
    );
}
