//! The `hello` example as its users run it, under keep-alive and `Connection: close` clients
//! of ours: a roll (SIGHUP) and an upgrade of the primary (SIGUSR2) fail no request, because
//! its workers drain (the next answer on each connection says `connection: close`, idle
//! connections close) and the primary hands everything over.

use std::path::PathBuf;

use ringleader_tests::load::{self, Load};
use ringleader_tests::{Spawned, alive, free_port, signal};

fn hello() -> PathBuf {
    ringleader_tests::example("hello")
}

/// `hello` with 4 workers under `policy` and its admin endpoint on `admin`, once all
/// listen, and 32 keep-alive clients and 8 `Connection: close` ones on it.
fn loaded_hello(policy: &str, admin: u16) -> (Spawned, u16, Load) {
    let port = free_port();
    let admin = format!("127.0.0.1:{admin}");
    let h = Spawned::start(
        hello(),
        &[
            "--workers",
            "4",
            "--port",
            &port.to_string(),
            "--policy",
            policy,
            "--admin",
            &admin,
        ],
        &[],
    );
    // "Worker <pid> started" from each worker, "Worker <id> listening on …" from the primary.
    h.expect_listening(4);
    let mut load = Load::new();
    load.clients(32, move |stop| load::keep_alive(port, stop));
    load.clients(8, move |_| load::close(port));
    (h, port, load)
}

/// How many workers the admin endpoint on 127.0.0.1:`port` lists in `/status`.
fn metrics_workers(port: u16) -> Option<usize> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(ringleader_tests::WATCHDOG)).ok()?;
    s.write_all(b"GET /status HTTP/1.1\r\nhost: test\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (_, body) = answer.split_once("\r\n\r\n")?;
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    json["workers"].as_array().map(Vec::len)
}

fn roll_under_load(policy: &str) {
    let (h, _port, load) = loaded_hello(policy, free_port());
    load.wait_for(200);
    signal(h.pid(), rustix::process::Signal::HUP);
    let done = h.expect_one_of(&["Replaced ", "The roll stopped"]);
    assert_eq!(done.0, 0, "{policy}: {}", done.1);
    load.wait_for(200);
    let tally = load.stop();
    assert_eq!(tally.failed, 0, "{policy}: {tally:?}");
}

fn upgrade_under_load(policy: &str) {
    let admin = free_port();
    let (mut h, _port, load) = loaded_hello(policy, admin);
    let old = h.pid();
    load.wait_for(200);
    signal(old, rustix::process::Signal::USR2);
    let ready = h.expect_one_of(&["The new primary ", "The upgrade stopped"]);
    assert_eq!(ready.0, 0, "{policy}: {}", ready.1);
    let new: u32 = ready
        .1
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the new primary's pid");
    assert_eq!(h.wait(), Some(0), "{policy}: the old primary retires");
    load.wait_for(200);
    let tally = load.stop();
    assert_eq!(tally.failed, 0, "{policy}: {tally:?}");
    assert!(alive(new) && !alive(old));
    // The new primary serves the admin endpoint on the same address.
    let status = metrics_workers(admin);
    assert_eq!(status, Some(4), "{policy}: the new primary's /status");
    // The new primary is in the old one's process group: Spawned's drop kills it.
}

#[test]
fn hello_rolls_under_round_robin_with_no_failed_request() {
    roll_under_load("rr");
}

#[test]
fn hello_rolls_under_reuseport_with_no_failed_request() {
    roll_under_load("reuseport");
}

#[test]
fn hello_upgrades_under_round_robin_with_no_failed_request() {
    upgrade_under_load("rr");
}

#[test]
fn hello_upgrades_under_steering_with_no_failed_request() {
    upgrade_under_load("steer");
}
