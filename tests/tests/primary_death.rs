//! No orphans (B19): a worker ends when its primary dies, even stuck in a busy loop, and a
//! worker whose channel closes without a disconnect exits with code 0, as Node's do.
//!
//! The fixture runs as a primary in its own process group; this test process makes itself a
//! child subreaper, so the orphaned worker is reparented here and its exit status can be read.

use std::os::fd::AsFd;
use std::time::Duration;

use ringleader_tests::{Spawned, WATCHDOG, wait_gone};
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

/// Starts a fixture primary for `scenario` and returns it with its worker's pid.
fn primary_with_worker(scenario: &str) -> (Spawned, u32) {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).expect("subreaper");
    let primary = Spawned::start(FIXTURE, &[scenario], &[]);
    let pid: u32 = primary.expect_line("WORKER").parse().expect("pid");
    (primary, pid)
}

/// Reaps the reparented worker: (exit code, signal).
fn reap(pid: u32) -> (Option<i32>, Option<i32>) {
    let fd =
        rustix::process::pidfd_open(Pid::from_raw(pid as i32).expect("pid"), PidfdFlags::empty())
            .expect("pidfd");
    let status = rustix::process::waitid(WaitId::PidFd(fd.as_fd()), WaitIdOptions::EXITED)
        .expect("waitid")
        .expect("status");
    (status.exit_status(), status.terminating_signal())
}

#[test]
fn b19_busy_worker_dies_with_a_sigkilled_primary() {
    let (mut primary, worker) = primary_with_worker("hold-busy");
    primary.kill();
    let took = wait_gone(worker, WATCHDOG).expect("the worker outlived its primary");
    eprintln!("busy worker gone {took:?} after its primary was SIGKILLed (PR_SET_PDEATHSIG)");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // The death signal and the watcher's exit(0) race; either way nothing is left running.
    let status = reap(worker);
    assert!(
        status == (None, Some(9)) || status == (Some(0), None),
        "{status:?}"
    );
}

#[test]
fn b19_busy_worker_without_death_signal_exits_through_its_watcher() {
    let (mut primary, worker) = primary_with_worker("hold-busy-no-deathsig");
    primary.kill();
    let took = wait_gone(worker, WATCHDOG).expect("the worker outlived its primary");
    eprintln!("busy worker gone {took:?} after its primary was SIGKILLed (channel watcher)");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // The main thread was spinning; the watcher thread saw the hang-up and exited with 0.
    assert_eq!(reap(worker), (Some(0), None));
}

#[test]
fn b19_worker_exits_zero_when_its_channel_closes_without_disconnect() {
    let (mut primary, worker) = primary_with_worker("exit-early");
    // The primary exits 0 right after the worker is online, without disconnecting.
    let took = wait_gone(worker, WATCHDOG).expect("the worker outlived its primary");
    eprintln!("idle worker gone {took:?} after its primary exited");
    // The worker may exit while its primary is still inside exit(); once the primary is reaped
    // the kernel has handed the worker to us (the subreaper) and it can be reaped here.
    assert_eq!(primary.wait(), Some(0));
    assert_eq!(reap(worker), (Some(0), None));
}
