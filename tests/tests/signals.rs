//! Signals watched by the primary arrive as events through its loop (signalfd), and the
//! workers it spawns do not inherit the blocked mask; a process whose other threads would
//! die of those signals (`#[tokio::main]`) is refused with a reason.

use ringleader_tests::Spawned;

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(pid, sig).expect("kill");
}

#[test]
fn watched_signals_become_events_and_sigterm_can_end_the_cluster_gracefully() {
    for backend in ["epoll", "io_uring"] {
        let primary = Spawned::start(FIXTURE, &["signals"], &[("RINGLEADER_BACKEND", backend)]);
        let worker: u32 = primary.expect_line("READY").parse().expect("worker pid");
        // The primary blocks what it watches; its worker starts with nothing blocked, so
        // SIGTERM ends it as it ends any program. (What it ignores is its own runtime's
        // choice: Rust's ignores SIGPIPE.) Its main thread may block every signal for a
        // moment while it starts a thread (glibc's pthread_create does), so the mask is read
        // until it is clear: an inherited mask never clears.
        let blocked = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .expect("status")
                .lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .map(|m| m.trim().to_owned())
                .expect("a mask")
        };
        let mut mask = blocked(worker);
        for _ in 0..100 {
            if mask == "0000000000000000" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            mask = blocked(worker);
        }
        assert_eq!(mask, "0000000000000000", "{backend}");
        signal(primary.pid(), rustix::process::Signal::USR1);
        assert_eq!(primary.expect_line("SIGNAL"), "SIGUSR1", "{backend}");
        signal(primary.pid(), rustix::process::Signal::TERM);
        assert_eq!(primary.expect_line("SIGNAL"), "SIGTERM", "{backend}");
        // The worker left by a graceful disconnect, not by a signal it inherited blocked.
        assert_eq!(primary.expect_line("EXIT"), "Some(0) None", "{backend}");
        primary.expect_line("DONE");
    }
}

#[test]
fn role_in_a_running_tokio_runtime_is_refused_with_what_to_do() {
    let p = Spawned::start(FIXTURE, &["role-in-a-runtime"], &[]);
    let refused = p.expect_line("REFUSED");
    assert!(
        refused.contains("before any other thread starts"),
        "{refused}"
    );
    assert!(refused.contains("#[tokio::main]"), "{refused}");
}

#[test]
fn watching_signals_after_starting_a_thread_is_refused() {
    // Without the check, SIGHUP would kill the process in the thread that does not block it.
    let p = Spawned::start(FIXTURE, &["signals-after-a-thread"], &[]);
    let refused = p.expect_line("REFUSED");
    assert!(refused.contains("1 other thread(s)"), "{refused}");
}
