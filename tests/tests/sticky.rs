//! Sticky sessions ([`Sticky`](ringleader::policy::Sticky)): 200 clients, each from its own
//! loopback address (127.0.2.x, bound before the connect), each reach one worker over every
//! connection, handed over by the primary (`sticky`) and steered by the kernel
//! (`steer-sticky`); when one of 4 workers is killed only its clients move, and its
//! replacement takes them back; a stopped worker's clients wait for it up to a cap and then
//! spill, and the other clients are served all along. And socket.io's long-polling
//! sessions, with its own client, all complete under `ringleader run --policy sticky` with
//! Node workers.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use ringleader::policy::SharedPolicy;
use ringleader::{Event, Respawn, Scheduling, Settings, WorkerId};
use ringleader_tests::Harness;

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

/// Clients 127.0.2.1 to 127.0.2.200.
const CLIENTS: u8 = 200;

/// Four fixture workers under the sticky policy with `scheduling`; the port they serve.
fn cluster(scheduling: Scheduling, respawn: bool) -> (Harness, u16) {
    let h = Harness::new(FIXTURE);
    let name = if scheduling == Scheduling::Steered {
        "steer-sticky"
    } else {
        "sticky"
    };
    h.primary
        .setup(
            Settings::default()
                .scheduling(scheduling)
                .policy(SharedPolicy::named(name).expect("a built-in policy"))
                .respawn(respawn.then(Respawn::default)),
        )
        .expect("setup");
    for _ in 0..4 {
        h.fork("serve:127.0.0.1:0");
    }
    let port = h.listening(4)[0].port;
    (h, port)
}

/// The worker that answers a client from 127.0.2.`client`.
fn worker_for(client: u8, port: u16) -> Result<WorkerId, String> {
    let mut s = ringleader_tests::connect_from([127, 0, 2, client], port)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    answer
        .trim()
        .strip_prefix("hello from ")
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| format!("answer {answer:?}"))
}

/// Every client's worker, over `rounds` connections each (the same every time, or a panic
/// naming the client).
fn owners(h: &Harness, port: u16, rounds: usize) -> BTreeMap<u8, WorkerId> {
    h.drive(move || {
        let mut owners = BTreeMap::new();
        for round in 0..rounds {
            for client in 1..=CLIENTS {
                let w = worker_for(client, port).unwrap_or_else(|e| panic!("client {client}: {e}"));
                let first = *owners.entry(client).or_insert(w);
                assert_eq!(w, first, "client {client} moved in round {round}");
            }
        }
        owners
    })
}

fn only_the_killed_workers_clients_move(scheduling: Scheduling) {
    let (h, port) = cluster(scheduling, false);
    let before = owners(&h, port, 3);
    let used: BTreeSet<WorkerId> = before.values().copied().collect();
    assert_eq!(used.len(), 4, "every worker has clients: {before:?}");
    let victim = before[&1];
    let pid = h.primary.worker(victim).expect("the victim").pid();
    ringleader_tests::signal(pid, rustix::process::Signal::KILL);
    h.until_gone(victim);
    let after = owners(&h, port, 2);
    let mut moved = 0;
    for (client, was) in &before {
        let now = after[client];
        if *was == victim {
            assert_ne!(now, victim);
            moved += 1;
        } else {
            assert_eq!(now, *was, "client {client} moved, and its worker lives");
        }
    }
    assert!(moved > 0);
}

fn a_replacement_takes_its_predecessors_clients_back(scheduling: Scheduling) {
    let (h, port) = cluster(scheduling, true);
    let before = owners(&h, port, 2);
    let victim = before[&1];
    let pid = h.primary.worker(victim).expect("the victim").pid();
    ringleader_tests::signal(pid, rustix::process::Signal::KILL);
    let mut replacement = None;
    h.until(|e| {
        if let Event::Respawned {
            worker, replaces, ..
        } = e
        {
            if *replaces == victim {
                replacement = Some(*worker);
            }
        }
        matches!(e, Event::Listening { worker, .. } if Some(*worker) == replacement)
    });
    let replacement = replacement.expect("a replacement");
    let after = owners(&h, port, 2);
    for (client, was) in &before {
        let expected = if *was == victim { replacement } else { *was };
        assert_eq!(after[client], expected, "client {client}");
    }
}

#[test]
fn handed_over_each_client_stays_and_only_a_killed_workers_clients_move() {
    only_the_killed_workers_clients_move(Scheduling::RoundRobin);
}

#[test]
fn steered_each_client_stays_and_only_a_killed_workers_clients_move() {
    only_the_killed_workers_clients_move(Scheduling::Steered);
}

#[test]
fn handed_over_a_replacement_takes_its_predecessors_clients_back() {
    a_replacement_takes_its_predecessors_clients_back(Scheduling::RoundRobin);
}

#[test]
fn steered_a_replacement_takes_its_predecessors_clients_back() {
    a_replacement_takes_its_predecessors_clients_back(Scheduling::Steered);
}

const SOCKETIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node/socketio");

#[test]
fn a_stopped_workers_clients_wait_for_it_up_to_a_cap_and_never_stop_the_others() {
    let (h, port) = cluster(Scheduling::RoundRobin, false);
    let owners = owners(&h, port, 1);
    let victim = owners[&1];
    let pid = h.primary.worker(victim).expect("the victim").pid();
    let theirs: Vec<u8> = owners
        .iter()
        .filter(|(_, w)| **w == victim)
        .map(|(c, _)| *c)
        .collect();
    let others: Vec<u8> = owners
        .iter()
        .filter(|(_, w)| **w != victim)
        .map(|(c, _)| *c)
        .collect();
    ringleader_tests::signal(pid, rustix::process::Signal::STOP);
    // More of its clients' connections than the primary's whole queue (256) holds.
    let waiting: Vec<std::net::TcpStream> = h.drive(move || {
        (0..400)
            .map(|i| {
                ringleader_tests::connect_from([127, 0, 2, theirs[i % theirs.len()]], port)
                    .expect("connect")
            })
            .collect()
    });
    // The others are served as ever: accepting did not stop.
    let others_ok = h.drive(move || {
        others
            .iter()
            .map(|c| worker_for(*c, port).map_err(|e| format!("client {c}: {e}")))
            .collect::<Result<Vec<_>, _>>()
    });
    others_ok.expect("the other clients are served");
    ringleader_tests::signal(pid, rustix::process::Signal::CONT);
    let answers: Vec<WorkerId> = h.drive(move || {
        waiting
            .into_iter()
            .map(|mut s| {
                let mut answer = String::new();
                s.read_to_string(&mut answer).expect("read");
                answer
                    .trim()
                    .strip_prefix("hello from ")
                    .and_then(|id| id.parse().ok())
                    .unwrap_or_else(|| panic!("answer {answer:?}"))
            })
            .collect()
    });
    // Each was answered: by its own worker once it ran again (16 in its channel, 64 in the
    // primary), or at its next place.
    let own = answers.iter().filter(|w| **w == victim).count();
    let spilled = h.primary.handoff_stats().spilled;
    assert_eq!(answers.len(), 400);
    assert!(own >= 16 + 64, "{own} waited for their own worker");
    assert_eq!(spilled as usize, 400 - own, "{own} own, {spilled} spilled");
}

/// socket.io's own client, over long-polling only (every poll a new connection), `clients`
/// sessions from 127.0.1.x against a socket.io app on `port`: its `completed C of N` line.
fn socketio_sessions(port: u16, clients: u32) -> String {
    let out = std::process::Command::new("node")
        .arg(format!("{SOCKETIO}/clients.js"))
        .env("PORT", port.to_string())
        .env("CLIENTS", clients.to_string())
        .env("MESSAGES", "8")
        .output()
        .expect("node clients.js");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// An unmodified socket.io app written for Node's cluster under `ringleader run --policy
/// POLICY`, two workers: every session of 100 completes under `sticky` and `steer-sticky`,
/// where under round-robin almost none does (as under Node's own primary).
#[test]
fn socketio_long_polling_sessions_complete_under_ringleader_run_sticky() {
    if !std::path::Path::new(SOCKETIO)
        .join("node_modules/socket.io")
        .exists()
    {
        eprintln!("NOT RUN: socket.io is not installed (npm ci --prefix tests/node/socketio)");
        return;
    }
    for (policy, all) in [("sticky", true), ("steer-sticky", true), ("rr", false)] {
        let port = ringleader_tests::free_port();
        let h = ringleader_tests::Spawned::start(
            ringleader_tests::ringleader_command(),
            &[
                "run",
                "--workers",
                "2",
                "--policy",
                policy,
                "--",
                "node",
                &format!("{SOCKETIO}/app.js"),
            ],
            &[("PORT", &port.to_string())],
        );
        h.expect_listening(2);
        let line = socketio_sessions(port, 100);
        let completed: u32 = line
            .strip_prefix("completed ")
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{policy}: {line:?}"));
        if all {
            assert_eq!(completed, 100, "{policy}: {line}");
        } else {
            assert!(
                completed < 50,
                "{policy} completed sessions by chance: {line}"
            );
        }
    }
}
