//! Shared Unix sockets (B13: round-robin and shared, a relative path, Node's
//! readableAll/writableAll) and UDP, always shared (B12).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use ringleader::{AddressType, Event, Scheduling, Settings};
use ringleader_tests::{Harness, WATCHDOG};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

fn unix_cluster(scheduling: Scheduling) {
    let dir = std::env::temp_dir().join(format!(
        "ringleader-unix-{}-{scheduling:?}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().cwd(&dir).scheduling(scheduling))
        .expect("setup");
    for _ in 0..2 {
        h.fork("serve-unix:s.sock");
    }
    let seen = h.listening(2);
    let path = dir.join("s.sock");
    for l in &seen {
        assert_eq!(l.address_type, AddressType::Unix);
        assert_eq!(
            l.address,
            path.display().to_string(),
            "relative paths resolve in the worker"
        );
    }
    let mode = std::fs::metadata(&path)
        .expect("socket file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o666, "readableAll + writableAll");
    let answers = h.drive(move || {
        (0..10)
            .map(|_| {
                let mut s = UnixStream::connect(&path).expect("connect");
                s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
                let mut out = String::new();
                s.read_to_string(&mut out).expect("read");
                out
            })
            .collect::<Vec<_>>()
    });
    assert!(
        answers.iter().all(|a| a.starts_with("hello from ")),
        "{answers:?}"
    );
    if scheduling == Scheduling::RoundRobin {
        let ones = answers
            .iter()
            .filter(|a| a.as_str() == "hello from 1\n")
            .count();
        assert_eq!(ones, 5, "round-robin alternates: {answers:?}");
    }
    h.primary.disconnect_all().expect("disconnect");
    h.until(|e| matches!(e, Event::AllDisconnected));
    assert!(
        !dir.join("s.sock").exists(),
        "the socket file goes with the last worker"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn b13_unix_socket_round_robin() {
    unix_cluster(Scheduling::RoundRobin);
}

#[test]
fn b13_unix_socket_shared() {
    unix_cluster(Scheduling::Shared);
}

#[test]
fn b13_unix_paths_up_to_the_sun_path_limit_work_and_longer_ones_are_enametoolong() {
    let dir = std::env::temp_dir().join(format!("ringleader-sun-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    // sun_path holds 108 bytes; Linux takes a path that fills it without a terminating NUL.
    let of_length = |n: usize, tag: char| {
        let base = dir.display().to_string() + "/";
        let name: String = std::iter::repeat_n(tag, n - base.len()).collect();
        base + &name
    };
    let h = Harness::new(FIXTURE);
    let id = h.fork("unix-paths");
    h.online(id);
    let worker = h.primary.worker(id).expect("worker");
    let ask = |path: &str| {
        worker.send(path.as_bytes()).expect("send");
        let reply = h.until(|e| matches!(e, Event::Message { .. }));
        match reply.last() {
            Some(Event::Message { message, .. }) => {
                String::from_utf8_lossy(&message.data).into_owned()
            }
            _ => unreachable!(),
        }
    };
    assert_eq!(ask(&of_length(109, 'a')), "errno Some(36)", "ENAMETOOLONG");
    assert_eq!(ask(&of_length(300, 'b')), "errno Some(36)", "ENAMETOOLONG");
    let longest = of_length(108, 'c');
    assert_eq!(ask(&longest), "ok");
    assert!(std::path::Path::new(&longest).exists());
    // The failures left nothing behind: the same primary still serves a good path.
    assert_eq!(ask(&of_length(60, 'd')), "ok");
    h.primary.disconnect_all().expect("disconnect");
    h.until(|e| matches!(e, Event::AllDisconnected));
    assert!(
        !std::path::Path::new(&longest).exists(),
        "the socket file goes with the listener"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn b12_udp_is_shared_even_under_round_robin() {
    let h = Harness::new(FIXTURE);
    for _ in 0..2 {
        h.fork("udp:127.0.0.1:0");
    }
    let seen = h.listening(2);
    assert!(
        seen.iter()
            .all(|l| l.address_type == AddressType::Udp4 && l.port == seen[0].port),
        "{seen:?}"
    );
    let port = seen[0].port;
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("client");
    client.set_read_timeout(Some(WATCHDOG)).expect("timeout");
    let mut buf = [0u8; 64];
    for _ in 0..20 {
        client.send_to(b"ping", ("127.0.0.1", port)).expect("send");
        let (n, _) = client.recv_from(&mut buf).expect("a worker answers");
        assert!(buf[..n].starts_with(b"pong from "));
    }
}
