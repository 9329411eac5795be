//! 200 workers forked and retired with fds exchanged: afterwards the primary holds exactly the
//! fds it started with. (Alone in its binary, so no other test's fds are counted.)

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use ringleader::Event;
use ringleader_tests::{Harness, fd_count};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

#[test]
fn two_hundred_workers_and_fd_exchanges_leak_no_fd() {
    // Counts this process's fds: no other test may open any meanwhile.
    let _alone = ringleader_tests::alone();
    let h = Harness::new(FIXTURE);
    let before = fd_count();
    let mut alive = BTreeSet::new();
    for round in 0..200u32 {
        let id = h.fork("echo");
        alive.insert(id);
        let w = h.primary.worker(id).expect("worker");
        let (mine, theirs) = UnixStream::pair().expect("pair");
        w.send_fd(&round.to_le_bytes(), OwnedFd::from(theirs))
            .expect("send fd");
        // Keep about 4 workers alive at once, retiring the oldest in turns of
        // disconnect, kill and a received fd that is dropped.
        let seen = h.until(|e| matches!(e, Event::Message { worker, .. } if *worker == id));
        if let Some(Event::Message { message, .. }) = seen.last() {
            assert!(message.fd.is_some());
        }
        drop(seen);
        drop(mine);
        if alive.len() > 4 {
            let oldest = alive.pop_first().expect("oldest");
            let w = h.primary.worker(oldest).expect("worker");
            if round % 2 == 0 {
                w.disconnect().expect("disconnect")
            } else {
                w.kill(None).expect("kill")
            }
            h.until_gone(oldest);
        }
    }
    h.primary.disconnect_all().expect("disconnect all");
    h.until(|e| matches!(e, Event::AllDisconnected));
    assert_eq!(
        fd_count(),
        before,
        "the primary's fd count returns to where it started"
    );
}
