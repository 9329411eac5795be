//! What `ringleader run` tells a user who got something wrong, and how it prints workers'
//! output: a missing program named with the OS's reason, a program that never comes online
//! told what to add, a taken port named, a socket-activated server that dies not reported
//! listening, no worker count of 0, `--proxy-protocol` under a policy where workers accept,
//! hostnames in `--listen`, and worker lines never split.

use std::io::Read;
use std::net::ToSocketAddrs;

use ringleader_tests::{Spawned, WATCHDOG, example, ringleader_command};

const ACTIVATED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/activated/server.py");

/// `ringleader run ARGS`, with its stderr lines read too.
fn run(args: &[&str]) -> Spawned {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    Spawned::start_with_stderr(ringleader_command(), &all, &[])
}

#[test]
fn a_missing_program_is_named_with_the_reason() {
    let (code, lines) = run(&["--workers", "1", "--", "/no/such/program"]).lines_until_exit();
    assert_eq!(code, Some(1), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/no/such/program") && l.contains("No such file")),
        "{lines:?}"
    );
}

#[test]
fn a_program_that_never_comes_online_is_told_what_to_add() {
    let h = run(&["--workers", "1", "--", "sleep", "60"]);
    let hint = h.expect_line("ringleader: no worker of sleep came online");
    assert!(hint.contains("--listen HOST:PORT"), "{hint}");
}

#[test]
fn a_taken_port_is_named_in_the_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let hello = example("hello");
    // Each worker fails to boot: the default rule gives up after 5 within 30 s.
    let (code, lines) = run(&[
        "--workers",
        "1",
        "--",
        hello.to_str().expect("a UTF-8 path"),
        "--port",
        &port,
    ])
    .lines_until_exit();
    assert_eq!(code, Some(1), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("0.0.0.0:{port}")) && l.contains("Address already in use")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("No worker is left; giving up: Worker ")),
        "{lines:?}"
    );
}

#[test]
fn a_socket_activated_server_that_dies_at_once_is_not_reported_listening() {
    let (code, lines) = run(&[
        "--workers",
        "1",
        "--max-restarts",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--",
        "true",
    ])
    .lines_until_exit();
    assert_eq!(code, Some(1), "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("listening")), "{lines:?}");
    assert!(
        lines.iter().any(|l| l == "worker 1 died (code 0)"),
        "{lines:?}"
    );
}

#[test]
fn zero_workers_is_refused() {
    let (code, lines) = run(&["--workers", "0", "--", "true"]).lines_until_exit();
    assert_eq!(code, Some(2), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("--workers")), "{lines:?}");
}

#[test]
fn the_proxy_protocol_under_a_policy_where_workers_accept_is_refused_with_the_policies_that_work() {
    let (code, lines) = run(&[
        "--policy",
        "none",
        "--proxy-protocol",
        "8000",
        "--",
        "sleep",
        "60",
    ])
    .lines_until_exit();
    assert_eq!(code, Some(1), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("--proxy-protocol")
            && l.contains("--policy none")
            && l.contains("rr, lc, p2c, weighted or sticky")),
        "{lines:?}"
    );
}

#[test]
fn listen_takes_a_host_name() {
    let port = ringleader_tests::free_port();
    let at = format!("localhost:{port}");
    let h = run(&[
        "--workers",
        "1",
        "--listen",
        &at,
        "--",
        "python3",
        ACTIVATED,
    ]);
    h.expect_workers(1, "was given the socket on");
    let addr = at
        .to_socket_addrs()
        .expect("localhost")
        .next()
        .expect("an address");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
    std::io::Write::write_all(&mut s, ringleader_tests::GET_CLOSE).expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1."), "{answer}");
}

#[test]
fn workers_lines_are_never_split() {
    // Each line goes out in two writes of 100 bytes a moment apart, from two workers at
    // once for 300 ms: inherited as they were, their halves interleaved.
    let script = "import os, time\nend = time.time() + 0.3\nwhile time.time() < end:\n    os.write(2, b'A' * 100)\n    time.sleep(0.0005)\n    os.write(2, b'B' * 100 + b'\\n')\n";
    let (_, lines) = run(&[
        "--workers",
        "2",
        "--max-restarts",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--",
        "python3",
        "-c",
        script,
    ])
    .lines_until_exit();
    let whole = format!("{}{}", "A".repeat(100), "B".repeat(100));
    // Each after its worker's tag.
    let ours: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("[worker "))
        .filter_map(|l| l.split_once("] ").map(|(_, line)| line))
        .filter(|l| l.starts_with('A') || l.starts_with('B'))
        .collect();
    assert!(ours.len() >= 100, "{} lines", ours.len());
    assert!(ours.iter().all(|l| *l == whole), "a split line");
}
