//! Upgrading the primary in place (`Primary::upgrade`): under load, a new primary takes over
//! the listening sockets and no request fails; a new primary that fails is killed and the old
//! one keeps serving.

use ringleader_tests::load::Load;
use ringleader_tests::{Spawned, alive, fetch_hello, free_port};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

fn usr2(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::USR2).expect("signal");
}

/// What process `pid` holds of its own: sockets, and the kernel objects of its loop, board
/// and workers (io_uring or epoll, pidfds, memfd). Not its standard streams, nor pipes it may
/// inherit from the test harness (cargo's jobserver), which the new primary does not.
fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| {
        d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|t| {
                let t = t.to_string_lossy();
                t.starts_with("socket:") || t.starts_with("anon_inode:") || t.starts_with("/memfd:")
            })
            .count()
    })
}

/// One connection to the Unix socket at `path`: its `hello from` line, or what went wrong.
fn fetch_unix(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let mut s =
        std::os::unix::net::UnixStream::connect(path).map_err(|e| format!("unix connect: {e}"))?;
    s.set_read_timeout(Some(ringleader_tests::WATCHDOG))
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("unix read: {e}"))?;
    out.starts_with("hello from ")
        .then_some(out.clone())
        .ok_or(format!("unix answer {out:?}"))
}

/// A `pong from` answer to a datagram sent to 127.0.0.1:`port`, trying a few times (UDP
/// loses datagrams by design; a worker that exits with one read and unanswered loses it).
fn ping_udp(port: u16) -> bool {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    (0..25).any(|_| {
        s.send_to(b"ping", ("127.0.0.1", port)).expect("send");
        s.recv(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"pong from "))
    })
}

/// An upgrade of a primary with four workers scheduled as `sched`, under 32 clients (and 8
/// more on a Unix socket, with a UDP port besides, when `all_kinds`): no request fails, the
/// old primary exits, and the new one holds as many fds as the old one did.
fn upgrade_under_load(sched: &str, all_kinds: bool) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("rl-upgrade-{}-{sched}.sock", std::process::id()));
    let unix = dir.to_string_lossy().into_owned();
    let mut env = vec![("FIXTURE_SCHED", sched)];
    if all_kinds {
        let _ = std::fs::remove_file(&dir);
        env.push(("FIXTURE_UNIX", unix.as_str()));
    }
    let mut old = Spawned::start(FIXTURE, &["upgradable", &port.to_string()], &env);
    let old_pid: u32 = old.expect_line("LISTENING").parse().expect("pid");
    let fds_before = fds_of(old_pid);
    if all_kinds {
        assert!(ping_udp(port), "{sched}: UDP before the upgrade");
    }
    let mut load = Load::new();
    load.clients(32, move |_| fetch_hello(port).map(|_| 1));
    if all_kinds {
        let path = dir.clone();
        load.clients(8, move |_| fetch_unix(&path).map(|_| 1));
    }
    usr2(old_pid);
    // The new primary runs the same scenario and says when its workers listen; the old one
    // says when the new one told it so, and when its own workers are gone. The lines of the
    // two processes may come in any order.
    let (mut new_pid, mut ready, mut done) = (None, None, false);
    while new_pid.is_none() || ready.is_none() || !done {
        match old.expect_one_of(&["LISTENING", "UPGRADE READY", "OLD DONE"]) {
            (0, pid) => new_pid = Some(pid),
            (1, pid) => ready = Some(pid),
            _ => done = true,
        }
    }
    assert_eq!(new_pid, ready);
    let new_pid: u32 = new_pid.expect("pid").parse().expect("pid");
    assert_ne!(new_pid, old_pid);
    assert_eq!(
        old.wait(),
        Some(0),
        "{sched}: the old primary exits once its workers are gone"
    );
    // The new generation serves alone now.
    for _ in 0..20 {
        assert!(fetch_hello(port).is_ok(), "{sched}");
    }
    let tally = load.stop();
    assert_eq!(tally.failed, 0, "{sched}: {tally:?}");
    assert!(tally.ok > 0, "{sched}");
    if all_kinds {
        assert!(
            fetch_unix(&dir).is_ok(),
            "{sched}: the socket file is the new primary's"
        );
        assert!(ping_udp(port), "{sched}: UDP after the upgrade");
    }
    assert!(alive(new_pid) && !alive(old_pid));
    // The new primary holds what the old one held: its sockets, its workers' channels.
    let deadline = std::time::Instant::now() + ringleader_tests::WATCHDOG;
    while fds_of(new_pid) != fds_before {
        assert!(
            std::time::Instant::now() < deadline,
            "{sched}: fds {fds_before} in the old primary, {} in the new",
            fds_of(new_pid)
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if all_kinds {
        let _ = std::fs::remove_file(&dir);
    }
    // The new primary and its workers are in the old one's process group: Spawned's drop
    // kills them all.
}

#[test]
fn an_upgrade_under_round_robin_hands_the_sockets_over_and_fails_no_request() {
    upgrade_under_load("rr", false);
}

#[test]
fn an_upgrade_under_shared_sockets_hands_the_sockets_over_and_fails_no_request() {
    upgrade_under_load("none", false);
}

#[test]
fn an_upgrade_under_reuseport_hands_every_workers_socket_over_and_fails_no_request() {
    upgrade_under_load("reuseport", false);
}

#[test]
fn an_upgrade_under_steering_hands_the_group_over_and_fails_no_request() {
    upgrade_under_load("steer", false);
}

#[test]
fn an_upgrade_hands_unix_and_udp_sockets_over_too() {
    upgrade_under_load("rr", true);
}

#[test]
fn an_upgrade_under_steering_hands_unix_and_udp_sockets_over_too() {
    upgrade_under_load("steer", true);
}

#[test]
fn a_new_primary_that_fails_is_killed_and_the_old_one_keeps_serving() {
    let port = free_port();
    let old = Spawned::start(
        FIXTURE,
        &["upgradable", &port.to_string(), "/bin/false"],
        &[],
    );
    let old_pid: u32 = old.expect_line("LISTENING").parse().expect("pid");
    usr2(old_pid);
    let reason = old.expect_line("UPGRADE FAILED");
    assert!(
        ["exited", "closed", "channel", "take the sockets"]
            .iter()
            .any(|w| reason.contains(w)),
        "{reason}"
    );
    for _ in 0..20 {
        assert!(fetch_hello(port).is_ok());
    }
    assert!(alive(old_pid));
}

#[test]
fn a_new_primary_that_never_gets_ready_is_killed_in_time_and_the_old_one_keeps_serving() {
    // A new program that takes the sockets (it holds the channel open) and never answers.
    let script = std::env::temp_dir().join(format!("rl-never-ready-{}", std::process::id()));
    std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let port = free_port();
    let old = Spawned::start(
        FIXTURE,
        &["upgradable", &port.to_string(), &script.to_string_lossy()],
        &[("FIXTURE_READY_MS", "300")],
    );
    let old_pid: u32 = old.expect_line("LISTENING").parse().expect("pid");
    usr2(old_pid);
    let reason = old.expect_line("UPGRADE FAILED");
    let _ = std::fs::remove_file(&script);
    assert!(reason.contains("not ready in time"), "{reason}");
    for _ in 0..20 {
        assert!(fetch_hello(port).is_ok());
    }
    assert!(alive(old_pid));
}
