//! Upgrading the primary in place (`Primary::upgrade`): under load, a new primary takes over
//! the listening sockets and no request fails; a new primary that fails is killed and the old
//! one keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringleader_tests::{Spawned, alive, fetch_hello};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a port")
}

fn usr2(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::USR2).expect("signal");
}

#[test]
fn an_upgrade_under_load_hands_the_sockets_over_and_fails_no_request() {
    let port = free_port();
    let mut old = Spawned::start(FIXTURE, &["upgradable", &port.to_string()], &[]);
    let old_pid: u32 = old.expect_line("LISTENING").parse().expect("pid");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_error = Arc::new(std::sync::Mutex::new(None));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (stop, ok, failed, first) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                first_error.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match fetch_hello(port) {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            first.lock().expect("lock").get_or_insert(e);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    usr2(old_pid);
    // The new primary runs the same scenario and says when its workers listen; the old one
    // says when the new one told it so, and when its own workers are gone. The lines of the
    // two processes may come in any order.
    let (mut new_pid, mut ready, mut done) = (None, None, false);
    while new_pid.is_none() || ready.is_none() || !done {
        match old.expect_one_of(&["LISTENING", "UPGRADE READY", "OLD DONE"]) {
            (0, pid) => new_pid = Some(pid),
            (1, pid) => ready = Some(pid),
            _ => done = true,
        }
    }
    assert_eq!(new_pid, ready);
    let new_pid: u32 = new_pid.expect("pid").parse().expect("pid");
    assert_ne!(new_pid, old_pid);
    assert_eq!(
        old.wait(),
        Some(0),
        "the old primary exits once its workers are gone"
    );
    let served_before_stop = ok.load(Ordering::Relaxed);
    // The new generation serves alone now.
    for _ in 0..20 {
        assert!(fetch_hello(port).is_ok());
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} answered; first failure: {:?}",
        ok.load(Ordering::Relaxed),
        first_error.lock().expect("lock")
    );
    assert!(served_before_stop > 0);
    assert!(alive(new_pid) && !alive(old_pid));
    // The new primary and its workers are in the old one's process group: Spawned's drop
    // kills them all.
}

#[test]
fn a_new_primary_that_fails_is_killed_and_the_old_one_keeps_serving() {
    let port = free_port();
    let old = Spawned::start(
        FIXTURE,
        &["upgradable", &port.to_string(), "/bin/false"],
        &[],
    );
    let old_pid: u32 = old.expect_line("LISTENING").parse().expect("pid");
    usr2(old_pid);
    let reason = old.expect_line("UPGRADE FAILED");
    assert!(
        ["exited", "closed", "channel", "take the sockets"]
            .iter()
            .any(|w| reason.contains(w)),
        "{reason}"
    );
    for _ in 0..20 {
        assert!(fetch_hello(port).is_ok());
    }
    assert!(alive(old_pid));
}
