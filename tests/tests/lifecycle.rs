//! Worker lifecycle: event order and states (B1), ids (B2), worker-initiated disconnect (B17),
//! kill (B18), and the `workers()` removal rules with `disconnect_all` (B21).

use ringleader::{Event, Signal, WorkerState};
use ringleader_tests::{Harness, describe};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

#[test]
fn b1_events_in_order_and_states_follow() {
    let h = Harness::new(FIXTURE);
    let w = h.primary.fork(&[("FIXTURE_MODE", "echo")]).expect("fork");
    assert_eq!(w.state(), WorkerState::Started);
    let seen: Vec<String> = h
        .until(|e| matches!(e, Event::Online { .. }))
        .iter()
        .map(describe)
        .collect();
    // setup from the harness, setup from fork, then fork and online.
    assert_eq!(seen, ["setup", "setup", "fork 1", "online 1"]);
    assert_eq!(w.state(), WorkerState::Online);
    assert!(w.is_connected() && !w.is_dead());
    assert_eq!(w.exited_after_disconnect(), Some(false));

    w.disconnect().expect("disconnect");
    let seen = h.until_gone(1);
    assert_eq!(
        seen,
        [
            "disconnect 1 ead=true",
            "exit 1 code=Some(0) signal=None ead=true"
        ]
    );
    assert_eq!(w.state(), WorkerState::Dead);
    assert!(!w.is_connected() && w.is_dead());
    assert!(h.primary.workers().is_empty());
}

#[test]
fn b1_exit_code_of_a_worker_that_exits_by_itself() {
    let h = Harness::new(FIXTURE);
    let id = h.fork("exit:42");
    let seen = h.until_gone(id);
    let tail: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|s| !s.starts_with("online"))
        .collect();
    assert!(
        tail.ends_with(&[
            "disconnect 1 ead=false",
            "exit 1 code=Some(42) signal=None ead=false"
        ]),
        "{seen:?}"
    );
}

#[test]
fn b2_ids_count_from_one_and_the_environment_is_cleaned() {
    let h = Harness::new(FIXTURE);
    let ids: Vec<u32> = (0..3).map(|_| h.fork("env")).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(h.primary.workers(), [1, 2, 3]);
    let mut reports = Vec::new();
    h.until(|e| {
        if let Event::Message { worker, message } = e {
            reports.push((*worker, message.json::<serde_json::Value>().expect("json")));
        }
        reports.len() == 3
    });
    for (worker, report) in reports {
        assert_eq!(report["id"], worker, "the worker knows its id");
        assert!(
            report["worker_id_env"].is_null(),
            "RINGLEADER_WORKER_ID removed: {report}"
        );
        assert!(
            report["channel_fd_env"].is_null(),
            "RINGLEADER_CHANNEL_FD removed: {report}"
        );
        // 0, 1, 2 and the channel at 3 are inherited; everything else is the worker's own
        // (its eventfds, the directory being listed), never something of the primary's.
        let fds: Vec<String> = report["fds"]
            .as_array()
            .expect("fds")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        assert!(fds.iter().any(|f| f.starts_with("3 -> socket:")), "{fds:?}");
        for fd in &fds {
            let (num, target) = fd.split_once(" -> ").expect("fd line");
            let num: u32 = num.parse().expect("fd number");
            let own = target == "anon_inode:[eventfd]" || target.starts_with("/proc/");
            assert!(num <= 3 || own, "unexpected inherited fd {fd} in {fds:?}");
        }
    }
    h.primary.disconnect_all().expect("disconnect all");
    h.until(|e| matches!(e, Event::AllDisconnected));
}

#[test]
fn b17_worker_disconnect_waits_for_the_ack_and_is_voluntary() {
    let h = Harness::new(FIXTURE);
    let id = h.fork("disconnect");
    let mut present_at_disconnect = None;
    let seen: Vec<String> = h
        .until(|e| {
            if let Event::Disconnect { .. } = e {
                present_at_disconnect = Some(h.primary.workers().contains(&id));
            }
            matches!(e, Event::Exit { .. })
        })
        .iter()
        .map(describe)
        .collect();
    let tail: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|s| !s.starts_with("setup") && !s.starts_with("fork") && !s.starts_with("online"))
        .collect();
    // Exit code 0 means the worker saw exited_after_disconnect and a closed channel.
    assert_eq!(
        tail,
        [
            "disconnect 1 ead=true",
            "exit 1 code=Some(0) signal=None ead=true"
        ]
    );
    // Node: a worker that disconnects itself is still listed at 'disconnect', removed at 'exit'.
    assert_eq!(present_at_disconnect, Some(true));
    assert!(h.primary.workers().is_empty());
}

#[test]
fn b17_worker_kill_is_voluntary_too() {
    let h = Harness::new(FIXTURE);
    let id = h.fork("kill-self");
    let seen = h.until_gone(id);
    assert!(
        seen.contains(&"disconnect 1 ead=true".to_owned()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"exit 1 code=Some(0) signal=None ead=true".to_owned()),
        "{seen:?}"
    );
}

#[test]
fn b18_primary_kill_sends_the_signal_and_counts_as_voluntary() {
    let h = Harness::new(FIXTURE);
    let term = h.fork("echo");
    let busy = h.fork("busy");
    h.online(term);
    h.online(busy);
    h.primary
        .worker(term)
        .expect("worker")
        .kill(None)
        .expect("kill");
    let seen = h.until_gone(term);
    assert!(
        seen.contains(&"exit 1 code=None signal=Some(SIGTERM) ead=true".to_owned()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"disconnect 1 ead=true".to_owned()),
        "{seen:?}"
    );
    // A worker spinning in a loop goes too.
    h.primary
        .worker(busy)
        .expect("worker")
        .kill(Some(Signal::KILL))
        .expect("kill");
    let seen = h.until_gone(busy);
    assert!(
        seen.contains(&"exit 2 code=None signal=Some(SIGKILL) ead=true".to_owned()),
        "{seen:?}"
    );
    assert!(h.primary.workers().is_empty());
}

#[test]
fn b21_primary_disconnect_removes_the_worker_at_once() {
    let h = Harness::new(FIXTURE);
    let id = h.fork("await-disconnect");
    h.online(id);
    let w = h.primary.worker(id).expect("worker");
    w.disconnect().expect("disconnect");
    assert!(
        h.primary.workers().is_empty(),
        "removed inside disconnect()"
    );
    // Still reachable through the handle until both events are out.
    assert!(w.is_connected());
    let seen = h.until_gone(id);
    // The worker's recv() returned None with exited_after_disconnect set: exit code 0.
    assert_eq!(
        seen,
        [
            "disconnect 1 ead=true",
            "exit 1 code=Some(0) signal=None ead=true"
        ]
    );
    // A second disconnect of a gone worker is an error, not a panic.
    assert!(w.disconnect().is_err());
}

#[test]
fn b21_crashed_worker_leaves_the_map_before_the_later_event() {
    let h = Harness::new(FIXTURE);
    let id = h.fork("exit:1");
    let mut listed_at = Vec::new();
    h.until(|e| {
        match e {
            Event::Disconnect { .. } => {
                listed_at.push(("disconnect", h.primary.workers().contains(&id)))
            }
            Event::Exit { .. } => listed_at.push(("exit", h.primary.workers().contains(&id))),
            _ => {}
        }
        listed_at.len() == 2
    });
    // Whichever comes second finds the worker already removed; the first still sees it.
    assert!(listed_at[0].1, "{listed_at:?}");
    assert!(!listed_at[1].1, "{listed_at:?}");
}

#[test]
fn b21_disconnect_all_reports_after_the_last_exit() {
    let h = Harness::new(FIXTURE);
    let ids: Vec<u32> = (0..3).map(|_| h.fork("echo")).collect();
    for id in &ids {
        h.online(*id);
    }
    // One worker has already left by itself (Node: disconnect-before-exit must not throw).
    let early = h.fork("disconnect");
    h.until(|e| matches!(e, Event::Disconnect { worker, .. } if *worker == early));
    h.primary.disconnect_all().expect("disconnect all");
    assert!(h.primary.workers().is_empty());
    let mut exits = 0;
    let mut disconnects = 0;
    let seen = h.until(|e| {
        match e {
            Event::Exit { .. } => exits += 1,
            Event::Disconnect { .. } => disconnects += 1,
            _ => {}
        }
        matches!(e, Event::AllDisconnected)
    });
    assert_eq!(
        (exits, disconnects),
        (4, 3),
        "{:?}",
        seen.iter().map(describe).collect::<Vec<_>>()
    );
    // With no workers the event comes at once.
    h.primary.disconnect_all().expect("disconnect all");
    assert!(matches!(h.next(), Event::AllDisconnected));
}

#[test]
fn events_iterator_ends_when_nothing_is_left() {
    let h = Harness::new(FIXTURE);
    h.fork("exit:0");
    let names: Vec<String> = h
        .primary
        .events()
        .map(|e| describe(&e.expect("event")))
        .collect();
    assert_eq!(
        names.last().map(String::as_str),
        Some("exit 1 code=Some(0) signal=None ead=false"),
        "{names:?}"
    );
}

#[test]
fn b3_online_comes_before_anything_the_workers_code_sends() {
    let h = Harness::new(FIXTURE);
    // This worker's first act is to send a message and exit.
    let id = h.fork("send-exit:0");
    let seen: Vec<String> = h.until_gone(id);
    let online = seen.iter().position(|e| e == "online 1").expect("online");
    let message = seen
        .iter()
        .position(|e| e == "message 1 bye")
        .expect("message");
    assert!(online < message, "{seen:?}");
}
