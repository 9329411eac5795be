//! `ringleader run` as users run it: Node's documentation example, unmodified but for its
//! port, served by two Node workers under ringleader's primary, every worker answering, and
//! a roll (SIGHUP) under load losing nothing; a socket-activated Python server with
//! `--listen` under steer, a stopped one killed and replaced with `--kill-stalled-after`,
//! and round-robin refused for it in plain words.

use std::os::unix::process::CommandExt;

use ringleader_tests::load::{self, Load};
use ringleader_tests::{Spawned, WATCHDOG, free_port, http_get, ringleader_command, signal};

const DOCS_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node/docs-example.mjs");
const ACTIVATED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/activated/server.py");

/// `ringleader run` with two Python servers under steer on `--listen LISTEN`, and `more`
/// options, once both listen.
fn activated_pair(listen: &str, more: &[&str]) -> Spawned {
    let mut args = vec![
        "run",
        "--workers",
        "2",
        "--policy",
        "steer",
        "--listen",
        listen,
    ];
    args.extend_from_slice(more);
    args.extend_from_slice(&["--", "python3", ACTIVATED]);
    let h = Spawned::start(ringleader_command(), &args, &[]);
    h.expect_workers(2, "was given the socket on");
    h
}

/// The body of one `GET path` with `connection: close`.
fn get(port: u16, path: &str) -> String {
    let answer = http_get(port, path).expect("an answer");
    answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(answer)
}

fn docs_example(policy: &str) {
    let (port, admin) = (free_port(), free_port());
    let admin_addr = format!("127.0.0.1:{admin}");
    let h = Spawned::start(
        ringleader_command(),
        &[
            "run",
            "--workers",
            "2",
            "--policy",
            policy,
            "--admin",
            &admin_addr,
            "--",
            "node",
            DOCS_EXAMPLE,
        ],
        &[("PORT", &port.to_string())],
    );
    h.expect_listening(2);
    for _ in 0..40 {
        // Node answers in chunks: "c\r\nhello world\n\r\n0\r\n\r\n".
        let body = get(port, "/");
        assert!(body.contains("hello world\n"), "{policy}: {body:?}");
    }
    // Both workers served: the admin endpoint counts what each was handed (round-robin) or
    // lists both (shared sockets, where the kernel decides).
    let status: serde_json::Value = serde_json::from_str(&get(admin, "/status")).expect("JSON");
    let workers = status["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2, "{status}");
    if policy == "rr" {
        assert!(
            workers.iter().all(|w| w["handed"].as_u64() >= Some(10)),
            "{status}"
        );
    }
    // A roll under load loses nothing.
    let mut clients = Load::new();
    clients.clients(8, move |_| load::close(port));
    clients.wait_for(100);
    signal(h.pid(), rustix::process::Signal::HUP);
    let done = h.expect_one_of(&["Replaced ", "The roll stopped"]);
    assert_eq!(done.0, 0, "{policy}: {}", done.1);
    clients.wait_for(100);
    let tally = clients.stop();
    assert_eq!(tally.failed, 0, "{policy}: {tally:?}");
}

#[test]
fn nodes_docs_example_runs_under_ringleader_round_robin() {
    docs_example("rr");
}

#[test]
fn nodes_docs_example_runs_under_ringleader_with_shared_sockets() {
    docs_example("none");
}

/// A ringleader program (the `hello` example) as the workers of `ringleader run`: its
/// worker branch runs, and both workers answer.
#[test]
fn a_ringleader_example_runs_under_ringleader_run() {
    let port = free_port();
    let hello = ringleader_tests::example("hello");
    let port_s = port.to_string();
    let h = Spawned::start(
        ringleader_command(),
        &[
            "run",
            "--workers",
            "2",
            "--",
            hello.to_str().expect("a UTF-8 path"),
            "--port",
            &port_s,
        ],
        &[],
    );
    h.expect_listening(2);
    let mut ids = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + WATCHDOG;
    while ids.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "watchdog: {ids:?}");
        let answer = http_get(port, "/").expect("an answer");
        let id = answer
            .lines()
            .find_map(|l| l.strip_prefix("x-worker-id: "))
            .unwrap_or_else(|| panic!("{answer:?}"))
            .to_owned();
        ids.insert(id);
    }
}

#[test]
fn socket_activated_servers_run_under_ringleader_with_listen() {
    let port = free_port();
    let listen = format!("web=127.0.0.1:{port}");
    let _cluster = activated_pair(&listen, &[]);
    // Both processes answer, each on the socket named `web`.
    let mut pids = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + WATCHDOG;
    while pids.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "watchdog: {pids:?}");
        for body in ringleader_tests::at_once(4, move || get(port, "/")) {
            let pid = body
                .strip_prefix("hello from ")
                .and_then(|rest| rest.strip_suffix(" on web\n"))
                .unwrap_or_else(|| panic!("{body:?}"));
            pids.insert(pid.to_owned());
        }
    }
}

/// `ringleader run --listen` under steer, upgraded (SIGUSR2) under 8 looping clients: the
/// new primary takes the socket group over, and no request fails.
#[test]
fn socket_activated_servers_keep_serving_through_an_upgrade_of_ringleader_command() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut h = activated_pair(&listen, &[]);
    let mut clients = Load::new();
    clients.clients(8, move |_| load::close(port));
    clients.wait_for(100);
    let old = h.pid();
    signal(old, rustix::process::Signal::USR2);
    let ready = h.expect_one_of(&["The new primary ", "The upgrade stopped"]);
    assert_eq!(ready.0, 0, "{}", ready.1);
    assert_eq!(h.wait(), Some(0), "the old primary retires");
    clients.wait_for(100);
    let tally = clients.stop();
    assert_eq!(tally.failed, 0, "{tally:?}");
    // The new primary is in the old one's process group: Spawned's drop kills it.
}

/// `--kill-stalled-after`: a server stopped (SIGSTOP) with connections queued at its steered
/// socket is killed, and its replacement serves every one of them.
#[test]
fn a_stopped_socket_activated_server_is_killed_and_replaced_with_kill_stalled_after() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _cluster = activated_pair(
        &listen,
        &["--kill-stalled-after", "300", "--start-within", "3000"],
    );
    let pid_of = |body: &str| -> u32 {
        body.strip_prefix("hello from ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("{body:?}"))
    };
    let stopped = pid_of(&get(port, "/"));
    ringleader_tests::stop(stopped);
    let answers = ringleader_tests::at_once(40, move || get(port, "/"));
    for body in &answers {
        assert_ne!(pid_of(body), stopped, "{body:?}");
    }
    assert!(
        ringleader_tests::wait_gone(stopped, WATCHDOG).is_some(),
        "the stopped server is still there"
    );
}

#[test]
fn round_robin_is_refused_for_socket_activated_servers_in_plain_words() {
    let child = std::process::Command::new(ringleader_command())
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            "rr",
            "--",
            "python3",
            ACTIVATED,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let Ok(output) = rx.recv_timeout(WATCHDOG) else {
        let group = rustix::process::Pid::from_raw(pid as i32).expect("pid");
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        panic!("watchdog: ringleader run did not refuse");
    };
    let output = output.expect("wait");
    let (status, stderr) = (output.status, String::from_utf8_lossy(&output.stderr));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("socket-activated server only accepts from its own socket")
            && stderr.contains("--policy none, reuseport or steer"),
        "{stderr}"
    );
}

/// `ringleader run --admin --agent` in front of Node workers: ready and at full weight once
/// both listen, and a stop begins with a lame-duck in which it says so.
#[test]
fn ringleader_run_serves_readiness_and_the_agent_for_node_workers() {
    let (port, admin, agent) = (free_port(), free_port(), free_port());
    let (admin_addr, agent_addr) = (format!("127.0.0.1:{admin}"), format!("127.0.0.1:{agent}"));
    let mut h = Spawned::start(
        ringleader_command(),
        &[
            "run",
            "--workers",
            "2",
            "--admin",
            &admin_addr,
            "--agent",
            &agent_addr,
            "--drain-delay",
            "2000",
            "--",
            "node",
            DOCS_EXAMPLE,
        ],
        &[("PORT", &port.to_string())],
    );
    h.expect_listening(2);
    let agent_line = || {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", agent)).expect("agent");
        s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
        let mut line = String::new();
        s.read_to_string(&mut line).expect("read");
        line
    };
    assert_eq!(agent_line(), "up ready 100%\n");
    assert!(
        http_get(admin, "/readyz")
            .expect("readyz")
            .starts_with("HTTP/1.1 200")
    );
    signal(h.pid(), rustix::process::Signal::TERM);
    h.expect_line("Draining for 2s");
    assert_eq!(agent_line(), "drain\n");
    assert!(get(port, "/").contains("hello world"));
    assert_eq!(h.wait(), Some(0));
}

/// A tokio worker written as `ringleader::tokio`'s docs show (`while let Some(..) =
/// listener.accept().await?`), under `ringleader run`: a roll (HUP) and a stop (TERM) end
/// every old worker with status 0, not as a crash.
#[test]
fn tokio_workers_end_with_status_0_on_a_roll_and_a_stop() {
    let fixture = env!("CARGO_BIN_EXE_fixture");
    let mut h = Spawned::start(
        ringleader_command(),
        &["run", "--workers", "2", "--", fixture],
        &[("FIXTURE_MODE", "tokio-serve:127.0.0.1:0")],
    );
    h.expect_listening(2);
    signal(h.pid(), rustix::process::Signal::HUP);
    // `worker N died (…)` lines until the roll is done.
    let mut died = Vec::new();
    loop {
        match h.expect_one_of(&["worker ", "Replaced "]) {
            (0, line) if line.contains(" died (") => died.push(line),
            (0, _) => {}
            _ => break,
        }
    }
    signal(h.pid(), rustix::process::Signal::TERM);
    let (code, rest) = h.lines_until_exit();
    assert_eq!(code, Some(0), "{rest:?}");
    died.extend(rest.into_iter().filter(|l| l.contains(" died (")));
    assert_eq!(died.len(), 4, "{died:?}");
    assert!(
        died.iter().all(|l| l.ends_with("died (code 0)")),
        "{died:?}"
    );
}

/// Node workers that each start a child of their own: after TERM, none of the children is
/// left (each worker's process group goes with it). The children keep Node's event loop
/// alive, so the workers do not leave by themselves: `--stop-within` kills them.
#[test]
fn node_workers_children_are_gone_after_a_stop() {
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/node/with-child.mjs");
    let port = free_port();
    let mut h = Spawned::start(
        ringleader_command(),
        &[
            "run",
            "--workers",
            "2",
            "--stop-within",
            "1000",
            "--",
            "node",
            app,
        ],
        &[("PORT", &port.to_string())],
    );
    let (mut children, mut listening) = (Vec::<u32>::new(), 0);
    while children.len() < 2 || listening < 2 {
        // The app's `CHILD pid` lines come tagged: `[worker 1] CHILD 4242`.
        match h.expect_one_of(&["[worker ", "Worker "]) {
            (0, line) => {
                if let Some((_, pid)) = line.split_once("] CHILD ") {
                    children.push(pid.parse().expect("a pid"));
                }
            }
            (_, line) => listening += usize::from(line.contains("listening on")),
        }
    }
    assert!(children.iter().all(|pid| ringleader_tests::alive(*pid)));
    signal(h.pid(), rustix::process::Signal::TERM);
    let (code, lines) = h.lines_until_exit();
    assert_eq!(code, Some(0), "{lines:?}");
    for pid in children {
        assert!(
            ringleader_tests::wait_gone(pid, std::time::Duration::from_secs(4)).is_some(),
            "a worker's child {pid} outlived the stop"
        );
    }
}

/// Node workers that keep 1 MiB per request, under `--max-memory 100M` at about 100 requests
/// a second: each is replaced before it grows much past the limit (read once a second, so
/// by about 100 MiB more at most), and no request fails.
#[test]
fn leaking_node_workers_are_replaced_under_max_memory_and_no_request_fails() {
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/node/leak.mjs");
    let port = free_port();
    let h = Spawned::start(
        ringleader_command(),
        &[
            "run",
            "--workers",
            "2",
            "--max-memory",
            "100M",
            "--",
            "node",
            app,
        ],
        &[("PORT", &port.to_string())],
    );
    let mut listening = 0;
    while listening < 2 {
        listening += usize::from(h.expect_line("Worker ").contains("listening on"));
    }
    let mut load = Load::new();
    load.clients(2, move |_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        http_get(port, "/").map(|_| 1)
    });
    // Both workers, then their successors, pass the limit: four replacements.
    let (mut replaced, mut most) = (0, 0u64);
    while replaced < 4 {
        let (_, line) = h.expect_one_of(&["Worker "]);
        replaced += usize::from(line.contains("over its limit of 100 MiB"));
        for pid in ringleader_tests::children_of(h.pid()) {
            let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
            let pages: u64 = statm
                .split(' ')
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            most = most.max(pages * 4096);
        }
    }
    let tally = load.stop();
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert!(most < 250 << 20, "a worker reached {} MiB", most >> 20);
}
