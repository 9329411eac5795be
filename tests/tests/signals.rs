//! Signals watched by the primary arrive as events through its loop (signalfd), and the
//! workers it spawns do not inherit the blocked mask.

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
        primary.expect_line("READY");
        signal(primary.pid(), rustix::process::Signal::USR1);
        assert_eq!(primary.expect_line("SIGNAL"), "SIGUSR1", "{backend}");
        signal(primary.pid(), rustix::process::Signal::TERM);
        assert_eq!(primary.expect_line("SIGNAL"), "SIGTERM", "{backend}");
        // The worker left by a graceful disconnect, not by a signal it inherited blocked.
        assert_eq!(primary.expect_line("EXIT"), "Some(0) None", "{backend}");
        primary.expect_line("DONE");
    }
}
