//! Each worker leads a process group of its own, and when it exits, whatever it started
//! that stayed in its group goes with it: killed or leaving gracefully, it leaves no child
//! behind (PM2's treekill, systemd's `KillMode=control-group`).

use std::time::Duration;

use ringleader::{Event, Signal};
use ringleader_tests::{Harness, alive, wait_gone};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

/// A worker that started `sleep 60`: the worker and the sleep's pid.
fn worker_with_a_child(h: &Harness) -> (ringleader::WorkerId, u32) {
    let w = h.fork("spawn-child");
    let mut pid = None;
    h.until(|e| match e {
        Event::Message { worker, message } if *worker == w => {
            pid = message.text().parse().ok();
            true
        }
        _ => false,
    });
    let pid = pid.expect("the child's pid");
    assert!(alive(pid));
    (w, pid)
}

#[test]
fn a_killed_workers_children_go_with_it() {
    let h = Harness::new(FIXTURE);
    let (w, child) = worker_with_a_child(&h);
    let worker = h.primary.worker(w).expect("worker");
    assert_eq!(
        rustix::process::getpgid(rustix::process::Pid::from_raw(worker.pid() as i32))
            .map(|p| p.as_raw_nonzero().get() as u32)
            .ok(),
        Some(worker.pid()),
        "the worker leads its own group"
    );
    worker.kill(Some(Signal::KILL)).expect("kill");
    h.until(|e| matches!(e, Event::Exit { worker, .. } if *worker == w));
    assert!(
        wait_gone(child, Duration::from_secs(5)).is_some(),
        "the worker's child outlived it"
    );
}

#[test]
fn a_worker_that_leaves_gracefully_takes_its_children() {
    let h = Harness::new(FIXTURE);
    let (w, child) = worker_with_a_child(&h);
    h.primary
        .worker(w)
        .expect("worker")
        .disconnect()
        .expect("disconnect");
    h.until(|e| matches!(e, Event::Exit { worker, code: Some(0), .. } if *worker == w));
    assert!(
        wait_gone(child, Duration::from_secs(5)).is_some(),
        "the worker's child outlived it"
    );
}
