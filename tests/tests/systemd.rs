//! Under systemd: the test plays the service manager. The listening socket comes at fd 3
//! (`LISTEN_FDS=1`, `LISTEN_PID` the service's own pid, set by the shell it execs from), and
//! the service reports on `NOTIFY_SOCKET`: `READY=1` only once every worker listens, and
//! `RELOADING=1` then `READY=1` around a roll, `STOPPING=1` at the end.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use ringleader_tests::{Spawned, WATCHDOG};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

/// The next notification, as its lines.
fn next(manager: &UnixDatagram) -> Vec<String> {
    let mut buf = [0u8; 512];
    let n = manager
        .recv(&mut buf)
        .expect("a notification within the watchdog");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn answer(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn a_socket_activated_service_listens_on_its_socket_and_tells_the_manager() {
    // The manager's side: the socket it passes, and where it listens for notifications.
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = socket.local_addr().expect("addr").port();
    let passed = socket.as_fd().try_clone_to_owned().expect("dup");
    rustix::io::fcntl_setfd(&passed, rustix::io::FdFlags::empty()).expect("inheritable");
    let dir = std::env::temp_dir().join(format!("rl-systemd-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let manager = UnixDatagram::bind(&dir).expect("notify socket");
    manager.set_read_timeout(Some(WATCHDOG)).expect("timeout");
    // LISTEN_PID must be the service's own pid: the shell sets it to its own, then execs.
    let script = format!(
        "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec {FIXTURE} systemd {port} 3<&{}",
        passed.as_raw_fd()
    );
    let service = Spawned::start(
        "/bin/sh",
        &["-c", &script],
        &[("NOTIFY_SOCKET", dir.to_str().expect("path"))],
    );
    drop(passed);
    // READY=1 comes once both workers listen, on the passed socket: the port was already
    // taken (by that very socket), yet no worker failed with EADDRINUSE.
    assert_eq!(next(&manager), ["READY=1"]);
    drop(socket);
    for _ in 0..10 {
        assert!(answer(port).starts_with("hello from "));
    }
    // A roll: RELOADING=1 with its monotonic time, then READY=1.
    let pid = rustix::process::Pid::from_raw(service.pid() as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).expect("hup");
    let reloading = next(&manager);
    assert_eq!(reloading[0], "RELOADING=1");
    assert!(reloading[1].starts_with("MONOTONIC_USEC="), "{reloading:?}");
    assert_eq!(next(&manager), ["READY=1"]);
    service.expect_line("ROLLED");
    assert!(answer(port).starts_with("hello from "));
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("term");
    assert_eq!(next(&manager), ["STOPPING=1"]);
    service.expect_line("DONE");
    let _ = std::fs::remove_file(&dir);
    // Nothing else came.
    manager
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    assert!(
        manager.recv(&mut buf).is_err(),
        "an unexpected notification"
    );
}
