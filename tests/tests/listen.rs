//! Shared server ports, TCP: `listen(0)` gives every worker the same port (B4), keys (B5),
//! bind errors with their errno and a retry (B6), round-robin (B8) and shared sockets (B11),
//! connections queued for a worker that dies go to another (B22b), and a primary disconnect
//! ends the worker's `incoming()` (B16).

use std::io::Read;
use std::net::{SocketAddr, TcpStream};

use ringleader::{AddressType, Event, Scheduling, Settings, Signal, WorkerId, WorkerState};
use ringleader_tests::Harness;

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

/// Waits for `n` Listening events; returns their ports.
fn listening(h: &Harness, n: usize) -> Vec<u16> {
    h.listening(n)
        .iter()
        .map(|l| {
            assert_eq!(l.address_type, AddressType::V4);
            l.port
        })
        .collect()
}

/// Connects and reads the whole answer.
fn fetch(port: u16) -> String {
    let mut s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).expect("connect");
    s.set_read_timeout(Some(ringleader_tests::WATCHDOG))
        .expect("timeout");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    out
}

fn message(h: &Harness) -> String {
    let seen = h.until(|e| matches!(e, Event::Message { .. }));
    match seen.last() {
        Some(Event::Message { message, .. }) => message.text().into_owned(),
        _ => unreachable!(),
    }
}

#[test]
fn b4_b8_listen_zero_gives_every_worker_one_port_and_round_robin_is_exact() {
    let h = Harness::new(FIXTURE);
    let ids: Vec<u32> = (0..3).map(|_| h.fork("serve:127.0.0.1:0")).collect();
    let ports = listening(&h, 3);
    assert!(ports.iter().all(|p| *p == ports[0] && *p != 0), "{ports:?}");
    for id in &ids {
        assert_eq!(
            h.primary.worker(*id).expect("worker").state(),
            WorkerState::Listening
        );
    }
    let port = ports[0];
    let answers = h.drive(move || (0..30).map(|_| fetch(port)).collect::<Vec<_>>());
    let mut counts = [0usize; 4];
    for answer in answers {
        let id: usize = answer
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("worker id");
        counts[id] += 1;
    }
    assert_eq!(
        &counts[1..],
        &[10, 10, 10],
        "sequential connections alternate exactly"
    );
    h.primary.disconnect_all().expect("disconnect");
    h.until(|e| matches!(e, Event::AllDisconnected));
}

#[test]
fn b5_a_second_listen_on_the_same_port_in_one_worker_is_eaddrinuse() {
    let h = Harness::new(FIXTURE);
    h.fork("listen-twice:127.0.0.1:0");
    assert_eq!(message(&h), "second: errno Some(98)");
}

#[test]
fn b6_bind_error_reaches_the_worker_with_its_errno_and_a_retry_works() {
    let h = Harness::new(FIXTURE);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let id = h.fork(&format!("listen-retry:127.0.0.1:{port}"));
    assert_eq!(message(&h), "errno Some(98)");
    drop(taken);
    // The primary forgot the failed key: the retry binds again.
    h.primary
        .worker(id)
        .expect("worker")
        .send(b"retry")
        .expect("send");
    assert_eq!(message(&h), format!("port {port}"));
    assert_eq!(h.drive(move || fetch(port)), "hello from 1\n");
}

#[test]
fn b11_b29_shared_sockets_let_workers_accept_themselves_and_leave_nothing_behind() {
    // Counts this process's fds: no other test may open any meanwhile.
    let _alone = ringleader_tests::alone();
    for scheduling in [Scheduling::Shared, Scheduling::RoundRobin] {
        let h = Harness::new(FIXTURE);
        let before = ringleader_tests::fd_count();
        h.primary
            .setup(Settings::default().scheduling(scheduling))
            .expect("setup");
        for _ in 0..2 {
            h.fork("serve:127.0.0.1:0");
        }
        let ports = listening(&h, 2);
        assert_eq!(ports[0], ports[1]);
        let port = ports[0];
        for answer in h.drive(move || (0..20).map(|_| fetch(port)).collect::<Vec<_>>()) {
            assert!(answer.starts_with("hello from "), "{answer:?}");
        }
        // B29: after the workers disconnect, the primary holds no socket, channel or pidfd.
        h.primary.disconnect_all().expect("disconnect");
        h.until(|e| matches!(e, Event::AllDisconnected));
        assert_eq!(ringleader_tests::fd_count(), before, "{scheduling:?}");
    }
}

#[test]
fn b22b_connections_queued_for_a_dying_worker_are_served_by_another() {
    let h = Harness::new(FIXTURE);
    let good = h.fork("serve:127.0.0.1:0");
    let stuck = h.fork("listen-spin:127.0.0.1:0");
    let port = listening(&h, 2)[0];
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for _ in 0..20 {
        let tx = tx.clone();
        std::thread::spawn(move || tx.send(fetch(port)));
    }
    drop(tx);
    // Round-robin alternates, so once the good worker has answered 10 clients the other 10
    // sit untaken with the stuck worker (below its bound of 16).
    let (first, rx) = h.drive(move || (rx.iter().take(10).collect::<Vec<_>>(), rx));
    let expected = format!("hello from {good}\n");
    assert!(first.iter().all(|a| *a == expected), "{first:?}");
    h.primary
        .worker(stuck)
        .expect("stuck")
        .kill(Some(Signal::KILL))
        .expect("kill");
    let seen = h.until_gone(stuck);
    assert!(!seen.iter().any(|e| e.starts_with("error")), "{seen:?}");
    // The stuck worker's 10 were taken back and handed to the good one: nobody hangs.
    let rest = h.drive(move || rx.iter().take(10).collect::<Vec<_>>());
    assert_eq!(rest.len(), 10);
    assert!(rest.iter().all(|a| *a == expected), "{rest:?}");
}

/// Disconnects worker `a` from the primary: it exits voluntarily with code 0, and `b`
/// answers every connection after that.
fn disconnect_and_check_the_other_serves(h: &Harness, a: WorkerId, b: WorkerId, port: u16) {
    h.primary
        .worker(a)
        .expect("a")
        .disconnect()
        .expect("disconnect");
    let seen = h.until_gone(a);
    assert!(
        seen.contains(&format!("exit {a} code=Some(0) signal=None ead=true")),
        "{seen:?}"
    );
    for answer in h.drive(move || (0..5).map(|_| fetch(port)).collect::<Vec<_>>()) {
        assert_eq!(answer, format!("hello from {b}\n"));
    }
}

#[test]
fn b16_primary_disconnect_ends_incoming_and_the_worker_exits() {
    let h = Harness::new(FIXTURE);
    let a = h.fork("serve:127.0.0.1:0");
    let b = h.fork("serve:127.0.0.1:0");
    let port = listening(&h, 2)[0];
    // Every connection now goes to the other worker.
    disconnect_and_check_the_other_serves(&h, a, b, port);
}

#[test]
fn b28_listen_close_listen_keeps_the_shared_port_and_hands_over_queued_connections() {
    let h = Harness::new(FIXTURE);
    let stay = h.fork("serve:127.0.0.1:0");
    let port = listening(&h, 1)[0];
    let cycler = h.fork("relisten:127.0.0.1:0");
    let w = h.primary.worker(cycler).expect("worker");
    for round in 0..3 {
        assert_eq!(
            message(&h),
            format!("port {port}"),
            "round {round}: the same key, the same port"
        );
        w.send(b"close").expect("send");
    }
    assert_eq!(message(&h), "done");
    // The worker closed its listener: connections go to the one still listening.
    for answer in h.drive(move || (0..6).map(|_| fetch(port)).collect::<Vec<_>>()) {
        assert_eq!(answer, format!("hello from {stay}\n"));
    }
}

#[test]
fn b15_ipv6_only_and_dual_stack() {
    let h = Harness::new(FIXTURE);
    h.fork("listen-v6only:[::1]:0");
    let mut port = 0;
    h.until(|e| {
        if let Event::Listening { address, .. } = e {
            assert_eq!(address.address_type, AddressType::V6);
            assert_eq!(address.address, "::1");
            port = address.port;
            true
        } else {
            false
        }
    });
    let answer = h.drive(move || {
        let mut s = TcpStream::connect(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)))
            .expect("connect");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    });
    assert_eq!(answer, "hello from 1\n");
    // IPV6_V6ONLY: nothing listens on the IPv4 side of the port.
    let v4 = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.kind());
    assert_eq!(v4.err(), Some(std::io::ErrorKind::ConnectionRefused));
}

#[test]
fn b16_a_shared_listener_stops_on_disconnect_too() {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().scheduling(Scheduling::Shared))
        .expect("setup");
    let a = h.fork("serve:127.0.0.1:0");
    let b = h.fork("serve:127.0.0.1:0");
    let port = listening(&h, 2)[0];
    // The worker was blocked waiting on the shared socket; the disconnect ends that wait.
    disconnect_and_check_the_other_serves(&h, a, b, port);
}

#[test]
fn reuseport_gives_every_worker_its_own_socket_on_one_port() {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().scheduling(Scheduling::ReusePort))
        .expect("setup");
    for _ in 0..3 {
        h.fork("serve:127.0.0.1:0");
    }
    let ports = listening(&h, 3);
    assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
    let port = ports[0];
    // The kernel hashes client addresses over the three sockets; the primary never accepts.
    let answers = h.drive(move || (0..60).map(|_| fetch(port)).collect::<Vec<_>>());
    assert!(
        answers.iter().all(|a| a.starts_with("hello from ")),
        "{answers:?}"
    );
    let distinct: std::collections::BTreeSet<&String> = answers.iter().collect();
    assert!(
        distinct.len() >= 2,
        "connections spread over several workers: {distinct:?}"
    );
    h.primary.disconnect_all().expect("disconnect");
    h.until(|e| matches!(e, Event::AllDisconnected));
}

#[test]
fn b14_exclusive_listeners_bypass_the_primary() {
    let h = Harness::new(FIXTURE);
    h.fork("exclusive:127.0.0.1:0");
    h.fork("exclusive:127.0.0.1:0");
    let mut ports = Vec::new();
    let seen = h.until(|e| {
        if let Event::Message { message, .. } = e {
            ports.push(
                message
                    .text()
                    .trim_start_matches("port ")
                    .parse::<u16>()
                    .expect("port"),
            );
        }
        ports.len() == 2
    });
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Listening { .. })),
        "no Listening for exclusive"
    );
    assert_ne!(ports[0], ports[1], "each worker bound port 0 itself");
    // The worker accepts by itself: no loop of the primary is needed.
    assert_eq!(fetch(ports[0]).len(), "hello from 1\n".len());
}

#[test]
fn b9_a_rejected_connection_goes_to_another_worker() {
    let h = Harness::new(FIXTURE);
    let refuser = h.fork("reject-all:127.0.0.1:0");
    let server = h.fork("serve:127.0.0.1:0");
    let port = listening(&h, 2)[0];
    // Round-robin hands half of these to the refuser first; every one ends at the server.
    for answer in h.drive(move || (0..20).map(|_| fetch(port)).collect::<Vec<_>>()) {
        assert_eq!(answer, format!("hello from {server}\n"));
    }
    let _ = refuser;
}

#[test]
fn b14_listen_on_the_primarys_fd() {
    use std::os::fd::AsRawFd;
    let h = Harness::new(FIXTURE);
    // A listening socket the primary (this process) made itself, shared by number.
    let own = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = own.local_addr().expect("addr").port();
    let id = h.fork(&format!("listen-fd:{}", own.as_raw_fd()));
    assert_eq!(message(&h), format!("port {port}"));
    assert_eq!(h.drive(move || fetch(port)), format!("hello from {id}\n"));
    // A number that is not a listening socket is refused with an errno.
    let file = std::fs::File::open("/dev/null").expect("open");
    h.fork(&format!("listen-fd:{}", file.as_raw_fd()));
    assert_eq!(message(&h), "errno Some(88)", "ENOTSOCK");
    drop(own);
}

#[test]
fn b20_a_disconnected_worker_finishes_its_open_connections_before_it_exits() {
    use std::io::{BufRead, BufReader, Write};
    let h = Harness::new(FIXTURE);
    let a = h.fork("serve-lines:127.0.0.1:0");
    let port = listening(&h, 1)[0];
    let pid = h.primary.worker(a).expect("a").pid();
    let ask = |conn: TcpStream, line: &'static str| {
        move || {
            let mut conn = conn;
            writeln!(conn, "{line}").expect("write");
            let mut answer = String::new();
            BufReader::new(&conn).read_line(&mut answer).expect("read");
            (conn, answer)
        }
    };
    let conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(ringleader_tests::WATCHDOG))
        .expect("timeout");
    let (conn, answer) = h.drive(ask(conn, "one"));
    assert_eq!(answer, format!("{a}: one\n"));
    h.primary
        .worker(a)
        .expect("a")
        .disconnect()
        .expect("disconnect");
    let seen = h.until(|e| matches!(e, Event::Disconnect { worker, .. } if *worker == a));
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Exit { .. })),
        "{seen:?}"
    );
    // The channel is closed and the worker has left the map, but the process lives on while
    // it has a connection to finish, and that connection is still served.
    assert!(!h.primary.workers().contains(&a));
    assert!(ringleader_tests::alive(pid));
    let (conn, answer) = h.drive(ask(conn, "two"));
    assert_eq!(answer, format!("{a}: two\n"));
    // The client hangs up: the worker has nothing left and exits by itself, voluntarily.
    drop(conn);
    let seen = h.until(|e| matches!(e, Event::Exit { worker, .. } if *worker == a));
    match seen.last() {
        Some(Event::Exit {
            code,
            exited_after_disconnect,
            ..
        }) => {
            assert_eq!(*code, Some(0));
            assert!(*exited_after_disconnect);
        }
        other => panic!("{other:?}"),
    }
}
