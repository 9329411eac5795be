//! What the host tells a load balancer: `/livez`, `/readyz` (200 when every wanted worker
//! listens and the host is not draining, else 503 with the reason), HAProxy's agent line,
//! the same in `/metrics`; `hello`'s lame-duck before a stop (not ready at once, serving
//! on for the drain delay) and after a retirement (ready again at half weight); and an
//! admin endpoint that half-sent requests cannot lock a scrape out of.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use ringleader::Event;
use ringleader_tests::{
    Harness, Spawned, WATCHDOG, example, fetch_hello, free_port, http_get, http_status, signal,
};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

/// One GET to the admin endpoint: the status line and the body.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    http_status(addr.port(), path)
}

/// The agent's line.
fn agent(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
    let mut line = String::new();
    s.read_to_string(&mut line).expect("read");
    line
}

#[test]
fn readiness_follows_the_listening_workers_and_the_lame_duck() {
    let h = Harness::new(FIXTURE);
    let admin = h.primary.serve_admin("127.0.0.1:0").expect("admin");
    let agent_at = h.primary.serve_agent("127.0.0.1:0").expect("agent");
    h.primary.set_wanted_workers(2);
    // The loop turns only while a worker lives: one that does not listen.
    h.fork("echo");
    h.online(h.fork("echo"));
    let probe = move || {
        let ready = get(admin, "/readyz");
        let metrics = get(admin, "/metrics").1;
        let gauge = |name: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_default()
                .to_owned()
        };
        (
            ready,
            agent(agent_at),
            get(admin, "/livez").0,
            gauge("ringleader_ready"),
            gauge("ringleader_draining"),
        )
    };
    let (ready, line, live, _, _) = h.drive(probe);
    assert_eq!(ready.0, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(ready.1, "not ready: no worker listens\n");
    assert_eq!(line, "down#no worker listens\n");
    assert_eq!(live, "HTTP/1.1 200 OK");
    let first = h.fork("serve:127.0.0.1:0");
    h.listening(1);
    let (ready, line, ..) = h.drive(probe);
    assert_eq!(ready.1, "not ready: 1 of 2 workers listen\n");
    assert_eq!(line, "up ready 50%\n");
    h.fork("serve:127.0.0.1:0");
    h.listening(1);
    let (ready, line, _, gauge, _) = h.drive(probe);
    assert_eq!(ready, ("HTTP/1.1 200 OK".to_owned(), "ready\n".to_owned()));
    assert_eq!(line, "up ready 100%\n");
    assert_eq!(gauge, "1");
    // A lame-duck: not ready, whatever the workers do, and they serve on.
    h.primary.set_draining(true);
    let (ready, line, _, gauge, draining) = h.drive(probe);
    assert_eq!(ready.1, "not ready: draining\n");
    assert_eq!(line, "drain\n");
    assert_eq!((gauge.as_str(), draining.as_str()), ("0", "1"));
    assert!(h.primary.health().draining);
    h.primary.set_draining(false);
    // One of the two gone: half the weight.
    h.primary
        .worker(first)
        .expect("worker")
        .kill(Some(ringleader::Signal::KILL))
        .expect("kill");
    h.until(|e| matches!(e, Event::Exit { worker, .. } if *worker == first));
    let (ready, line, ..) = h.drive(probe);
    assert_eq!(ready.1, "not ready: 1 of 2 workers listen\n");
    assert_eq!(line, "up ready 50%\n");
}

#[test]
fn half_sent_admin_requests_do_not_lock_a_scrape_out() {
    let h = Harness::new(FIXTURE);
    h.fork("serve:127.0.0.1:0");
    let port = h.listening(1)[0].port;
    let admin = h.primary.serve_admin("127.0.0.1:0").expect("admin");
    let (metrics, served) = h.drive(move || {
        // 500 clients that send half a request and nothing more (a slowloris).
        let half: Vec<TcpStream> = (0..500)
            .filter_map(|_| {
                let mut s = TcpStream::connect(admin).ok()?;
                s.write_all(b"GET /metrics HTTP/1.1\r\n").ok()?;
                Some(s)
            })
            .collect();
        // The oldest unfinished request makes room for the scrape.
        let metrics = get(admin, "/metrics").0;
        let served = (0..20).filter(|_| fetch_hello(port).is_ok()).count();
        drop(half);
        (metrics, served)
    });
    assert_eq!(metrics, "HTTP/1.1 200 OK");
    assert_eq!(served, 20);
}

/// `hello` with 2 workers, its admin endpoint, its agent and a lame-duck of 2 s (long
/// enough for a loaded machine to look while it lasts).
fn hello_behind_a_balancer() -> (Spawned, u16, SocketAddr, SocketAddr) {
    let (port, admin, agent_port) = (free_port(), free_port(), free_port());
    let admin: SocketAddr = format!("127.0.0.1:{admin}").parse().expect("addr");
    let agent_at: SocketAddr = format!("127.0.0.1:{agent_port}").parse().expect("addr");
    let h = Spawned::start(
        example("hello"),
        &[
            "--workers",
            "2",
            "--port",
            &port.to_string(),
            "--admin",
            &admin.to_string(),
            "--agent",
            &agent_at.to_string(),
            "--drain-delay",
            "2000",
        ],
        &[],
    );
    h.expect_listening(2);
    (h, port, admin, agent_at)
}

#[test]
fn a_stop_begins_with_a_lame_duck_that_serves_on() {
    let (mut h, port, admin, agent_at) = hello_behind_a_balancer();
    assert_eq!(get(admin, "/readyz").0, "HTTP/1.1 200 OK");
    let signalled = Instant::now();
    signal(h.pid(), rustix::process::Signal::TERM);
    // Not ready as soon as the primary has read its signal...
    while get(admin, "/readyz").0 == "HTTP/1.1 200 OK" {
        assert!(signalled.elapsed() < WATCHDOG, "watchdog: still ready");
    }
    let not_ready_after = signalled.elapsed();
    assert_eq!(agent(agent_at), "drain\n");
    // ...and serving on meanwhile: a new connection and a request are answered.
    assert!(http_get(port, "/").is_ok());
    h.expect_line("Draining for 2s");
    assert_eq!(h.wait(), Some(0));
    eprintln!("/readyz said 503 {not_ready_after:?} after TERM");
}

#[test]
fn a_retirement_drains_then_the_host_is_ready_at_half_weight() {
    let (h, _port, admin, agent_at) = hello_behind_a_balancer();
    assert_eq!(agent(agent_at), "up ready 100%\n");
    signal(h.pid(), rustix::process::Signal::TTOU);
    h.expect_line("Draining for 2s");
    h.expect_line("Worker 2 exited");
    // Ready again once the retired worker is gone; one of the first two listens.
    let deadline = Instant::now() + WATCHDOG;
    while get(admin, "/readyz").0 != "HTTP/1.1 200 OK" {
        assert!(Instant::now() < deadline, "watchdog: not ready again");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(agent(agent_at), "up ready 50%\n");
}
