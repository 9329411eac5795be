//! The examples a user starts from, run as users run them against real sockets:
//! `hello_tokio` (hyper in each worker) answers like `hello` and rolls under keep-alive and
//! close clients with no failed request; `hello` serves many connections from one loop, and
//! every client while one of its workers is stopped; `proxy` forwards connections to an upstream both
//! ways; `custom_loop` serves `hello`'s answers from a primary in a mio loop that also reads
//! commands from standard input.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ringleader_tests::load::{self, Load};
use ringleader_tests::{
    GET_CLOSE, Spawned, WATCHDOG, children_of, example, free_port, http_get, signal, stop,
};

/// One request with `connection: close`: the answer's head and body.
fn get(port: u16) -> (String, String) {
    let answer = http_get(port, "/").expect("an answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    (head.to_lowercase(), body.to_owned())
}

#[test]
fn hello_tokio_answers_like_hello_and_rolls_with_no_failed_request() {
    let port = free_port();
    let h = Spawned::start(
        example("hello_tokio"),
        &["--workers", "2", "--port", &port.to_string()],
        &[],
    );
    h.expect_listening(2);
    let (head, body) = get(port);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-worker-id: "), "{head}");
    assert_eq!(body, "hello world\n");
    let mut clients = Load::new();
    clients.clients(16, move |stop| load::keep_alive(port, stop));
    clients.clients(4, move |_| load::close(port));
    clients.wait_for(200);
    signal(h.pid(), rustix::process::Signal::HUP);
    let done = h.expect_one_of(&["Replaced ", "The roll stopped"]);
    assert_eq!(done.0, 0, "{}", done.1);
    clients.wait_for(200);
    let tally = clients.stop();
    assert_eq!(tally.failed, 0, "{tally:?}");
}

/// Reads one `hello world` response from `s`: its head, lowercased.
fn read_hello(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"hello world\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => panic!(
                "the connection ended before its answer: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let got = String::from_utf8_lossy(&got).to_lowercase();
    assert!(got.starts_with("http/1.1 200"), "{got}");
    got
}

/// A roll (HUP) of `example`'s one worker while one keep-alive connection and one new one
/// have half a request head sent: both get their answer once the rest arrives, after the
/// worker was told to leave.
fn drains_half_sent_requests(example_name: &str) {
    let port = free_port();
    let h = Spawned::start(
        example(example_name),
        &["--workers", "1", "--port", &port.to_string()],
        &[],
    );
    h.expect_listening(1);
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
        s
    };
    let head = "GET / HTTP/1.1\r\nhost: test\r\n";
    let mut reused = connect();
    reused
        .write_all(format!("{head}\r\n").as_bytes())
        .expect("write");
    read_hello(&mut reused);
    reused.write_all(head.as_bytes()).expect("write");
    let mut fresh = connect();
    fresh.write_all(head.as_bytes()).expect("write");
    // Both halves have reached the worker: the fresh connection was taken (a new one is
    // answered after it, by the same single worker's accept loop).
    assert!(http_get(port, "/").is_ok());
    signal(h.pid(), rustix::process::Signal::HUP);
    // In the order it happens: the successor listens, then its predecessor is told to go.
    h.expect_line("Worker 2 listening on");
    h.expect_line("Worker 2 is ready; worker 1 leaves");
    // Longer than the worker takes to see its disconnect: without the drain's care, its
    // connections would be closed by now. Waiting less only makes the test weaker (a worker
    // that had not seen it yet answers without `connection: close`).
    std::thread::sleep(std::time::Duration::from_millis(300));
    for s in [&mut reused, &mut fresh] {
        s.write_all(b"\r\n").expect("the rest of the head");
        read_hello(s);
    }
    h.expect_line("Replaced ");
}

#[test]
fn hello_answers_half_sent_requests_when_it_drains() {
    drains_half_sent_requests("hello");
}

/// `hello` serves from one loop per worker: a hundred keep-alive connections open at once
/// add no thread, each answers again, and fifty requests pipelined in one write get fifty
/// answers in order.
#[test]
fn hello_serves_a_hundred_open_connections_without_a_thread_for_each() {
    let port = free_port();
    let h = Spawned::start(
        example("hello"),
        &["--workers", "1", "--port", &port.to_string()],
        &[],
    );
    h.expect_listening(1);
    let worker = children_of(h.pid())[0];
    let threads = || {
        std::fs::read_dir(format!("/proc/{worker}/task"))
            .expect("the worker's threads")
            .count()
    };
    let before = threads();
    let request = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";
    let mut open: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
            s.write_all(request).expect("write");
            read_hello(&mut s);
            s
        })
        .collect();
    assert_eq!(threads(), before, "threads with 100 connections open");
    for s in &mut open {
        s.write_all(request).expect("write");
        read_hello(s);
    }
    let s = &mut open[0];
    s.write_all(&request.repeat(50)).expect("write");
    let (mut got, mut buf) = (String::new(), [0u8; 4096]);
    while got.matches("hello world\n").count() < 50 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => panic!("{} answers of 50", got.matches("hello world\n").count()),
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 50);
}

/// One of `hello`'s two workers stopped (`SIGSTOP`): every client is still answered, by the
/// other worker, whatever the policy; what was sent to the stopped one comes back to the
/// primary after 50 ms. Each client waits 2 s at most, far less than the stop.
fn hello_answers_while_a_worker_is_stopped(policy: &str) {
    let port = free_port();
    let h = Spawned::start(
        example("hello"),
        &[
            "--workers",
            "2",
            "--policy",
            policy,
            "--port",
            &port.to_string(),
        ],
        &[],
    );
    h.expect_listening(2);
    let workers = children_of(h.pid());
    stop(workers[0]);
    for i in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        s.write_all(GET_CLOSE).expect("write");
        let mut answer = String::new();
        let read = s.read_to_string(&mut answer);
        assert!(
            read.is_ok() && answer.ends_with("hello world\n"),
            "client {i} under {policy}: {read:?} {answer:?}"
        );
    }
    signal(workers[0], rustix::process::Signal::CONT);
}

#[test]
fn hello_answers_every_client_while_a_worker_is_stopped_under_rr() {
    hello_answers_while_a_worker_is_stopped("rr");
}

#[test]
fn hello_answers_every_client_while_a_worker_is_stopped_under_lc() {
    hello_answers_while_a_worker_is_stopped("lc");
}

#[test]
fn hello_answers_every_client_while_a_worker_is_stopped_under_steer() {
    hello_answers_while_a_worker_is_stopped("steer");
}

#[test]
fn hello_tokio_answers_half_sent_requests_when_it_drains() {
    drains_half_sent_requests("hello_tokio");
}

#[test]
fn proxy_forwards_every_connection_to_the_upstream_both_ways() {
    // An upstream that echoes each connection until its client shuts down writing.
    let upstream = TcpListener::bind("127.0.0.1:0").expect("upstream");
    let up_port = upstream.local_addr().expect("addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for conn in upstream.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let _ = conn.read_to_end(&mut buf);
                    let _ = conn.write_all(&buf);
                });
            }
        })
    };
    let port = free_port();
    let mut proxy = Spawned::start(
        example("proxy"),
        &[
            "--port",
            &port.to_string(),
            "--upstream",
            &format!("127.0.0.1:{up_port}"),
            "--workers",
            "2",
        ],
        &[],
    );
    proxy.expect_listening(2);
    let clients: Vec<_> = (0..40)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
                let sent = format!("ping {i} ").repeat(1000);
                s.write_all(sent.as_bytes()).expect("write");
                s.shutdown(std::net::Shutdown::Write).expect("shutdown");
                let mut back = String::new();
                s.read_to_string(&mut back).expect("read");
                back == sent
            })
        })
        .collect();
    let echoed = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .filter(|ok| *ok)
        .count();
    assert_eq!(echoed, 40);
    signal(proxy.pid(), rustix::process::Signal::TERM);
    assert_eq!(proxy.wait(), Some(0), "a graceful stop");
    stop.store(true, Ordering::Relaxed);
    let _ = TcpStream::connect(("127.0.0.1", up_port));
    serving.join().expect("upstream");
}

#[test]
fn custom_loop_serves_from_a_mio_loop_and_takes_commands() {
    let port = free_port();
    let mut h = Spawned::start_piped(
        example("custom_loop"),
        &["--workers", "2", "--port", &port.to_string()],
        &[],
    );
    h.expect_listening(2);
    for _ in 0..20 {
        let (head, body) = get(port);
        assert!(head.contains("x-worker-id: "), "{head}");
        assert_eq!(body, "hello world\n");
    }
    h.write_line("status");
    let status = h.expect_line("status: ");
    assert!(status.starts_with("2 workers"), "{status}");
    h.write_line("roll");
    h.expect_line("Replaced ");
    assert_eq!(get(port).1, "hello world\n");
    h.write_line("quit");
    assert_eq!(h.wait(), Some(0));
}

#[test]
fn custom_loop_serves_with_stdin_at_dev_null_and_takes_hellos_flags() {
    let (port, admin) = (free_port(), free_port());
    let admin_addr = format!("127.0.0.1:{admin}");
    let h = Spawned::start_without_stdin(
        example("custom_loop"),
        &[
            "--workers",
            "2",
            "--port",
            &port.to_string(),
            "--policy",
            "steer",
            "--admin",
            &admin_addr,
        ],
        &[],
    );
    h.expect_line("Standard input cannot be watched");
    h.expect_listening(2);
    assert_eq!(get(port).1, "hello world\n");
    // --admin is served, and --policy was taken.
    let metrics = http_get(admin, "/metrics").expect("metrics");
    assert!(metrics.contains("ringleader_"), "{metrics}");
    // Steered, the kernel placed the connection: the primary accepted none.
    let status = http_get(admin, "/status").expect("status");
    let (_, body) = status.split_once("\r\n\r\n").expect("a body");
    let status: serde_json::Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(status["cluster"]["accepted"], 0, "{status}");
}
