//! `Primary::supervise`, the supervisor an application adopts in one call: gunicorn's and
//! nginx's signals, crash loops given up on with a failing status.

use ringleader_tests::Spawned;

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

fn signal(s: &Spawned, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(s.pid() as i32).expect("pid");
    rustix::process::kill_process(pid, sig).expect("signal");
}

#[test]
fn ttin_ttou_hup_and_term_add_retire_roll_and_stop() {
    use rustix::process::Signal;
    let mut s = Spawned::start(FIXTURE, &["supervised", "2", "serve:127.0.0.1:0"], &[]);
    s.expect_line("LISTENING");
    s.expect_line("LISTENING");
    signal(&s, Signal::TTIN);
    s.expect_line("LISTENING");
    signal(&s, Signal::TTOU);
    s.expect_line("EXIT");
    signal(&s, Signal::HUP);
    s.expect_line("ROLLED");
    signal(&s, Signal::TERM);
    assert_eq!(s.expect_line("ENDING"), "Stopped");
    assert_eq!(s.wait(), Some(0));
}

#[test]
fn quit_stops_at_once() {
    let mut s = Spawned::start(FIXTURE, &["supervised", "2", "serve:127.0.0.1:0"], &[]);
    s.expect_line("LISTENING");
    s.expect_line("LISTENING");
    signal(&s, rustix::process::Signal::QUIT);
    assert_eq!(s.expect_line("ENDING"), "Quit");
    assert_eq!(s.wait(), Some(0));
}

#[test]
fn workers_that_keep_dying_at_start_are_given_up_on_and_the_status_says_so() {
    let mut s = Spawned::start(FIXTURE, &["supervised", "2", "exit:3"], &[]);
    s.expect_line("GAVEUP");
    assert_eq!(s.expect_line("ENDING"), "GaveUp");
    assert_eq!(s.wait(), Some(1));
}
