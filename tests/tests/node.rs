//! Unmodified Node.js cluster workers under a ringleader primary (`WorkerProtocol::Node`),
//! with the installed Node: they come online, their HTTP servers share one port, messages go
//! both ways as JSON, a worker that writes a line that is not JSON loses its channel with an
//! `Error` event while the others serve on, and disconnects and exits are Node's.

use std::io::{Read, Write};
use std::net::TcpStream;

use ringleader::{Event, Scheduling, Settings, WorkerProtocol};
use ringleader_tests::{
    GET_CLOSE, Harness, WATCHDOG, assert_stall_killed, at_once, describe, free_port, http_get,
    replacement_of, signal, stop,
};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");
const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node/app.js");

/// One HTTP GET with `connection: close`: the body.
fn get(port: u16) -> Result<String, String> {
    let answer = http_get(port, "/")?;
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .ok_or(answer)
}

/// Sends worker `id` the JSON string `order` and returns the next message it sends.
fn ask(h: &Harness, id: ringleader::WorkerId, order: &str) -> serde_json::Value {
    let order = serde_json::Value::from(order).to_string();
    h.primary
        .worker(id)
        .expect("worker")
        .send(order.as_bytes())
        .expect("send");
    let seen = h.until(|e| matches!(e, Event::Message { worker, .. } if *worker == id));
    let Some(Event::Message { message, .. }) = seen.last() else {
        panic!("{:?}", seen.iter().map(describe).collect::<Vec<_>>())
    };
    serde_json::from_slice(&message.data).expect("JSON")
}

fn node_cluster(scheduling: Scheduling) -> (Harness, u16, [ringleader::WorkerId; 2]) {
    node_cluster_with(scheduling, Settings::default())
}

fn node_cluster_with(
    scheduling: Scheduling,
    settings: Settings,
) -> (Harness, u16, [ringleader::WorkerId; 2]) {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(
            settings
                .exec("node")
                .args([APP])
                .worker_protocol(WorkerProtocol::Node)
                .scheduling(scheduling),
        )
        .expect("setup");
    let port = free_port();
    let port_s = port.to_string();
    let workers = [
        h.primary.fork(&[("PORT", &port_s)]).expect("fork").id(),
        h.primary.fork(&[("PORT", &port_s)]).expect("fork").id(),
    ];
    let listening = h.listening(2);
    assert!(listening.iter().all(|l| l.port == port), "{listening:?}");
    (h, port, workers)
}

fn node_workers_serve_and_talk(scheduling: Scheduling) {
    let (h, port, [a, b]) = node_cluster(scheduling);
    let answers = h.drive(move || (0..40).map(|_| get(port)).collect::<Vec<_>>());
    for answer in &answers {
        let body = answer.as_ref().expect("an answer");
        assert!(
            *body == format!("hello from {a}\n") || *body == format!("hello from {b}\n"),
            "{body:?}"
        );
    }
    // Messages both ways, as JSON.
    assert_eq!(ask(&h, a, "ping"), serde_json::json!({"pong": a}));
    assert!(
        h.primary
            .worker(a)
            .expect("worker")
            .send(b"not json")
            .is_err()
    );
    // A graceful disconnect from the primary: Node closes its server, then its channel.
    h.primary
        .worker(a)
        .expect("worker")
        .disconnect()
        .expect("disconnect");
    let seen = h.until_gone(a);
    assert!(seen.iter().any(|e| e.starts_with("disconnect")), "{seen:?}");
    assert_eq!(h.drive(move || get(port)), Ok(format!("hello from {b}\n")));
}

#[test]
fn node_workers_take_round_robin_connections_as_newconn_handles() {
    node_workers_serve_and_talk(Scheduling::RoundRobin);
}

#[test]
fn node_workers_share_a_socket_and_talk_json() {
    node_workers_serve_and_talk(Scheduling::Shared);
}

#[test]
fn node_workers_get_reuseport_sockets_of_their_own() {
    node_workers_serve_and_talk(Scheduling::ReusePort);
}

#[test]
fn node_workers_get_steered_sockets_of_their_own() {
    node_workers_serve_and_talk(Scheduling::Steered);
}

/// Steered: a Node worker stuck in a loop has its socket steered around once its queue is
/// full, and is killed when its queue has not moved for 300 ms; what waited there goes
/// through the primary's relay to the other worker (or to its replacement, if that listens
/// first). Every client is answered.
#[test]
fn a_stuck_steered_node_worker_is_killed_and_its_queue_served_by_the_others() {
    let (h, port, [a, b]) = node_cluster_with(
        Scheduling::Steered,
        Settings::default()
            .kill_stalled_after(Some(std::time::Duration::from_millis(300)))
            .respawn(Some(ringleader::Respawn::default())),
    );
    h.primary
        .worker(a)
        .expect("worker")
        .send(b"\"busy\"")
        .expect("send");
    let answers = h.drive(move || at_once(40, move || get(port)));
    let seen = h.drain();
    // Killed for a queue that did not move: connections waited at a.
    let events = assert_stall_killed(&seen, a);
    let replacement = replacement_of(&seen, a);
    for answer in &answers {
        let body = answer
            .as_ref()
            .unwrap_or_else(|e| panic!("{e}: {events:?}"));
        assert!(
            *body == format!("hello from {b}\n")
                || replacement.is_some_and(|c| *body == format!("hello from {c}\n")),
            "{body:?}: {events:?}"
        );
    }
}

/// Steered, with no respawning: a Node worker stopped with connections queued at its socket
/// is SIGKILLed, and the primary takes what waited there to the other worker through its
/// relay (`newconn`), where before it waited for a replacement that never came.
#[test]
fn connections_queued_at_a_dead_steered_node_worker_go_to_the_other() {
    let (h, port, [a, b]) = node_cluster(Scheduling::Steered);
    let pid_a = h.primary.worker(a).expect("worker").pid();
    stop(pid_a);
    let answers = h.drive(move || {
        // Each connect returns once the connection is queued at one of the two sockets.
        let clients: Vec<TcpStream> = (0..40)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
                s.write_all(GET_CLOSE).expect("send");
                s
            })
            .collect();
        signal(pid_a, rustix::process::Signal::KILL);
        clients
            .into_iter()
            .map(|mut s| {
                let mut answer = String::new();
                s.read_to_string(&mut answer).map(|_| answer)
            })
            .collect::<Vec<_>>()
    });
    let events: Vec<String> = h.drain().iter().map(describe).collect();
    for answer in answers {
        let answer = answer.unwrap_or_else(|e| panic!("{e}: {events:?}"));
        assert!(
            answer.ends_with(&format!("\r\n\r\nhello from {b}\n")),
            "{answer:?}: {events:?}"
        );
    }
}

/// `server.close()` in worker a (round-robin): its `close` reaches the primary, every
/// connection goes to b from then on, and a stays connected.
#[test]
fn a_node_worker_that_closes_its_server_gets_no_more_connections() {
    let (h, port, [a, b]) = node_cluster(Scheduling::RoundRobin);
    assert_eq!(ask(&h, a, "close-server"), serde_json::json!({"closed": a}));
    let answers = h.drive(move || (0..20).map(|_| get(port)).collect::<Vec<_>>());
    for answer in answers {
        assert_eq!(answer, Ok(format!("hello from {b}\n")));
    }
    assert!(h.primary.worker(a).expect("worker").is_connected());
}

/// Worker b is told to write `what` onto its channel; its channel ends with an `Error`
/// event, worker a serves on, and the supervisor's respawning replaces b.
fn bad_bytes_end_one_channel(what: &str) {
    let (h, port, [a, b]) = node_cluster_with(
        Scheduling::Shared,
        Settings::default().respawn(Some(
            ringleader::Respawn::default().first_delay(std::time::Duration::from_millis(10)),
        )),
    );
    let order = format!("\"{what}\"");
    h.primary
        .worker(b)
        .expect("worker")
        .send(order.as_bytes())
        .expect("send");
    // Node's worker exits when its channel closes. Until it has, it still holds the shared
    // socket, so the requests below wait for its exit.
    let seen = h.until_gone(b);
    let error = format!("error Some({b}) ");
    assert!(
        seen.iter().any(|e| e.starts_with(&error)),
        "{what}: {seen:?}"
    );
    let answers = h.drive(move || (0..10).map(|_| get(port)).collect::<Vec<_>>());
    // The replacement may come, listen and take some of them meanwhile: respawning is 10 ms.
    let seen = h.until(|e| matches!(e, Event::Respawned { replaces, .. } if *replaces == b));
    let Some(Event::Respawned { worker: c, .. }) = seen.last() else {
        unreachable!()
    };
    let c = *c;
    for answer in answers {
        let body = answer.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            body == format!("hello from {a}\n") || body == format!("hello from {c}\n"),
            "{what}: {body:?}"
        );
    }
    h.until(|e| matches!(e, Event::Listening { worker, .. } if *worker == c));
    assert!(h.primary.worker(c).is_some());
}

#[test]
fn a_node_worker_that_writes_a_line_that_is_not_json_loses_its_channel() {
    bad_bytes_end_one_channel("garbage");
}

#[test]
fn a_node_worker_that_writes_binary_garbage_loses_its_channel() {
    bad_bytes_end_one_channel("binary");
}

#[test]
fn a_node_worker_that_sends_a_handle_line_without_its_fd_loses_its_channel() {
    bad_bytes_end_one_channel("handle-no-fd");
}

#[test]
fn a_node_worker_that_leaves_or_exits_is_reported_as_node_would() {
    let (h, _port, [a, b]) = node_cluster(Scheduling::Shared);
    // cluster.worker.disconnect() in the worker: exitedAfterDisconnect, acknowledged.
    h.primary
        .worker(a)
        .expect("worker")
        .send(b"\"leave\"")
        .expect("send");
    let seen = h.until(|e| matches!(e, Event::Exit { worker, .. } if *worker == a));
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::Disconnect { worker, exited_after_disconnect: true } if *worker == a
        )),
        "{:?}",
        seen.iter().map(describe).collect::<Vec<_>>()
    );
    // process.exit(7): an exit code of 7, not voluntary.
    h.primary
        .worker(b)
        .expect("worker")
        .send(b"\"exit\"")
        .expect("send");
    let seen = h.until(|e| matches!(e, Event::Exit { worker, .. } if *worker == b));
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::Exit { worker, code: Some(7), .. } if *worker == b
        )),
        "{:?}",
        seen.iter().map(describe).collect::<Vec<_>>()
    );
}

#[test]
fn connections_sent_to_a_stuck_node_worker_that_dies_are_served_by_another() {
    let (h, port, [a, b]) = node_cluster(Scheduling::RoundRobin);
    let pid = h.primary.worker(a).expect("worker").pid();
    h.primary
        .worker(a)
        .expect("worker")
        .send(b"\"busy\"")
        .expect("send");
    let clients = std::thread::spawn(move || at_once(20, move || get(port)));
    // Once connections have waited at the stuck worker (taken back from its queue), kill it:
    // the one it was sent and never acknowledged must go to the other worker too.
    let deadline = std::time::Instant::now() + WATCHDOG;
    let mut killed = false;
    let mut seen = Vec::new();
    while !clients.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "watchdog: clients hang; {:?} {:?}",
            h.primary.handoff_stats(),
            seen.iter().map(describe).collect::<Vec<_>>()
        );
        if let Ok(Some(e)) = h
            .primary
            .next_event(Some(std::time::Duration::from_millis(5)))
        {
            seen.push(e);
        }
        if !killed && h.primary.handoff_stats().taken_from_stalled > 0 {
            let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
            rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill");
            killed = true;
        }
    }
    assert!(killed, "the stuck worker was never sent a connection");
    let answers = clients.join().expect("clients");
    let events: Vec<String> = h.drain().iter().map(describe).collect();
    for answer in &answers {
        assert_eq!(
            answer,
            &Ok(format!("hello from {b}\n")),
            "{answers:?} {:?} {events:?}",
            h.primary.handoff_stats()
        );
    }
}

/// Two Node workers in `mode` (the app's `APP_MODE`) under round-robin, listening on
/// `port` (or the socket `sock`), once both said so.
fn node_mode(mode: &str, port: u16, sock: &str, listening: usize) -> Harness {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(
            Settings::default()
                .exec("node")
                .args([APP])
                .worker_protocol(WorkerProtocol::Node),
        )
        .expect("setup");
    let port = port.to_string();
    let env = [("PORT", port.as_str()), ("APP_MODE", mode), ("SOCK", sock)];
    h.primary.fork(&env).expect("fork");
    h.primary.fork(&env).expect("fork");
    if listening > 0 {
        h.listening(listening);
    }
    h
}

#[test]
fn node_net_servers_take_round_robin_connections() {
    let port = free_port();
    let h = node_mode("net", port, "", 2);
    let answers = h.drive(move || {
        (0..20)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
                let mut line = String::new();
                s.read_to_string(&mut line).map(|_| line)
            })
            .collect::<Vec<_>>()
    });
    for a in answers {
        assert!(a.expect("an answer").starts_with("hello from "));
    }
}

#[test]
fn node_dgram_sockets_share_the_port() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a port")
        .port();
    let h = node_mode("dgram", port, "", 2);
    let pong = h.drive(move || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        (0..25).find_map(|_| {
            s.send_to(b"ping", ("127.0.0.1", port)).expect("send");
            s.recv(&mut buf)
                .ok()
                .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        })
    });
    assert!(pong.is_some_and(|p| p.starts_with("pong from ")));
}

#[test]
fn node_http_on_a_unix_socket_takes_round_robin_connections() {
    let sock = std::env::temp_dir().join(format!("rl-node-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let path = sock.to_string_lossy().into_owned();
    let h = node_mode("unix", 0, &path, 2);
    let answers = h.drive(move || {
        (0..10)
            .map(|_| {
                let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
                s.write_all(GET_CLOSE).expect("write");
                let mut answer = String::new();
                s.read_to_string(&mut answer).map(|_| answer)
            })
            .collect::<Vec<_>>()
    });
    let _ = std::fs::remove_file(&path);
    for a in answers {
        assert!(a.expect("an answer").contains("hello from "));
    }
}

#[test]
fn node_listen_zero_gives_every_worker_one_port() {
    let h = node_mode("zero", 0, "", 0);
    let mut ports = Vec::new();
    h.until(|e| {
        if let Event::Message { message, .. } = e {
            let v: serde_json::Value = serde_json::from_slice(&message.data).expect("JSON");
            ports.push(v["port"].as_u64().expect("a port"));
        }
        ports.len() == 2
    });
    assert_eq!(ports[0], ports[1], "{ports:?}");
    let port = u16::try_from(ports[0]).expect("a port");
    assert!(
        h.drive(move || get(port))
            .expect("an answer")
            .starts_with("hello from ")
    );
}

#[test]
fn node_https_servers_share_their_ticket_keys_through_the_primary() {
    let port = free_port();
    let h = node_mode("https", port, "", 2);
    let client = concat!(env!("CARGO_MANIFEST_DIR"), "/node/https-get.js");
    let out = h.drive(move || {
        std::process::Command::new("node")
            .args([client, &port.to_string(), "10"])
            .output()
            .expect("node client")
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = String::from_utf8_lossy(&out.stdout);
    assert_eq!(body.matches("hello from ").count(), 10, "{body}");
}
