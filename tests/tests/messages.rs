//! Messages both ways: order, fds riding along (B24), the 16 MiB limit, user bytes never
//! taken for internal messages (B25), and a worker that breaks the protocol losing only its
//! own channel.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use ringleader::{ErrorKind, Event, MAX_PAYLOAD};
use ringleader_tests::{Harness, describe};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

fn same_file(a: &OwnedFd, b: &OwnedFd) -> bool {
    let (a, b) = (
        rustix::fs::fstat(a).expect("fstat"),
        rustix::fs::fstat(b).expect("fstat"),
    );
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

/// Collects `n` messages from worker `id`, in arrival order.
fn messages(h: &Harness, id: u32, n: usize) -> Vec<ringleader::Message> {
    let mut count = 0;
    h.until(|e| {
        if let Event::Message { worker, .. } = e {
            assert_eq!(*worker, id);
            count += 1;
        }
        count == n
    })
    .into_iter()
    .filter_map(|e| match e {
        Event::Message { message, .. } => Some(message),
        _ => None,
    })
    .collect()
}

#[test]
fn b24_messages_and_fds_keep_their_order_both_ways() {
    let h = Harness::new(FIXTURE);
    let id = h.fork("echo");
    let w = h.primary.worker(id).expect("worker");
    let mut kept = Vec::new();
    const N: usize = 3000;
    for i in 0..N {
        let body = (i as u64).to_le_bytes();
        if i % 7 == 0 {
            let (a, b) = UnixStream::pair().expect("pair");
            kept.push((i, OwnedFd::from(a)));
            w.send_fd(&body, OwnedFd::from(b)).expect("send fd");
        } else {
            w.send(&body).expect("send");
        }
    }
    let got = messages(&h, id, N);
    let mut kept = kept.into_iter();
    for (i, m) in got.into_iter().enumerate() {
        assert_eq!(m.data, (i as u64).to_le_bytes(), "message {i} out of order");
        if i % 7 == 0 {
            let (at, mine) = kept.next().expect("kept");
            assert_eq!(at, i);
            // The echoed fd is the peer of the one we kept: check it is a live Unix socket
            // connected to ours by writing through it.
            let theirs = m.fd.expect("fd came back");
            rustix::io::write(&theirs, b"x").expect("write through the returned fd");
            let mut buf = [0u8; 1];
            rustix::io::read(&mine, &mut buf).expect("read");
            assert_eq!(&buf, b"x");
        } else {
            assert!(m.fd.is_none(), "message {i} has a stray fd");
        }
    }
}

#[test]
fn b24_worker_messages_arrive_in_order() {
    let h = Harness::new(FIXTURE);
    let id = h.fork("flood:20000");
    let got = messages(&h, id, 20001);
    for (i, m) in got[..20000].iter().enumerate() {
        assert_eq!(m.data, (i as u64).to_le_bytes());
    }
    assert_eq!(got[20000].data, b"done");
}

#[test]
fn largest_frame_goes_through_both_ways_and_larger_is_refused() {
    let h = Harness::new(FIXTURE);
    let id = h.fork("echo");
    let w = h.primary.worker(id).expect("worker");
    let big: Vec<u8> = (0..MAX_PAYLOAD).map(|i| (i % 251) as u8).collect();
    let file = std::fs::File::open("/proc/self/exe").expect("open");
    let original = OwnedFd::from(file.try_clone().expect("dup"));
    w.send_fd(&big, OwnedFd::from(file)).expect("send 16 MiB");
    let m = messages(&h, id, 1).pop().expect("echo");
    assert!(m.data == big, "16 MiB payload changed on the way");
    assert!(same_file(&m.fd.expect("fd"), &original));

    let mut too_big = big;
    too_big.push(0);
    let mut err = w.send_fd(&too_big, original).expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(err.take_fd().is_some(), "the fd is given back");
    // The channel is still fine.
    w.send(b"still here").expect("send");
    assert_eq!(messages(&h, id, 1)[0].data, b"still here");
}

#[test]
fn b25_user_bytes_that_look_like_internal_frames_stay_user_messages() {
    let h = Harness::new(FIXTURE);
    let id = h.fork("echo");
    h.online(id);
    let w = h.primary.worker(id).expect("worker");
    // The exact bytes of an internal `Disconnecting` frame and of an `Online` frame.
    let fake = [0u8, 0, 0, 0, 2, 0, b'r', b'l', 0, 0, 0, 0, 1, 0, b'r', b'l'];
    w.send(&fake).expect("send");
    let seen = h.until(|e| matches!(e, Event::Message { .. }));
    assert_eq!(
        seen.len(),
        1,
        "{:?}",
        seen.iter().map(describe).collect::<Vec<_>>()
    );
    let Event::Message { message, .. } = &seen[0] else {
        unreachable!()
    };
    assert_eq!(message.data, fake);
    assert_eq!(w.exited_after_disconnect(), Some(false));
    assert!(w.is_connected());
}

/// A worker that breaks the protocol gets an `Error`, loses its channel (and exits 0 by Node's
/// rule), and nothing else changes: the healthy worker still answers.
fn bad_worker_is_cut_off(mode: &str, expect: &str) {
    let h = Harness::new(FIXTURE);
    let good = h.fork("echo");
    let bad = h.fork(mode);
    let seen = h.until_gone(bad);
    let errors: Vec<&String> = seen.iter().filter(|s| s.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "{seen:?}");
    assert!(errors[0].contains(expect), "{seen:?}");
    let after: Vec<&String> = seen
        .iter()
        .skip_while(|s| !s.starts_with("error"))
        .collect();
    assert!(
        after[1].starts_with(&format!("disconnect {bad} ead=false")),
        "{seen:?}"
    );
    assert!(
        seen.contains(&format!("exit {bad} code=Some(0) signal=None ead=false")),
        "{seen:?}"
    );
    let w = h.primary.worker(good).expect("good worker");
    w.send(b"ping").expect("send");
    let reply = h.until(|e| matches!(e, Event::Message { .. }));
    assert!(
        matches!(reply.last(), Some(Event::Message { worker, message }) if *worker == good && message.data == b"ping")
    );
}

#[test]
fn malformed_frame_closes_only_that_workers_channel() {
    bad_worker_is_cut_off("garbage", "bad frame magic");
}

#[test]
fn oversized_frame_header_is_refused_before_its_payload() {
    bad_worker_is_cut_off("oversized", "exceeds the limit");
}

#[test]
fn truncated_fds_are_an_error_not_a_loss() {
    bad_worker_is_cut_off("fd-flood", "MSG_CTRUNC");
}

#[test]
fn sending_more_than_the_worker_reads_holds_back_without_deadlock() {
    // 64 MiB to an echo worker without looking at events: the worker's echoes fill the
    // primary's socket, so the primary's send must keep reading while it waits.
    let h = Harness::new(FIXTURE);
    let id = h.fork("echo");
    let w = h.primary.worker(id).expect("worker");
    let chunk = vec![9u8; 1024 * 1024];
    for _ in 0..64 {
        w.send(&chunk).expect("send");
    }
    let got = messages(&h, id, 64);
    assert!(got.iter().all(|m| m.data == chunk));
}

#[test]
fn back_pressure_against_a_reader_that_never_answers() {
    // 256 MiB to a worker that only reads: the primary is held back above 4 MiB queued and
    // resumes as the worker drains its socket (no reply ever wakes the loop).
    let h = Harness::new(FIXTURE);
    let id = h.fork("sink");
    let w = h.primary.worker(id).expect("worker");
    let chunk = vec![3u8; 1024 * 1024];
    for _ in 0..256 {
        w.send(&chunk).expect("send");
    }
    w.send(b"").expect("marker");
    assert_eq!(messages(&h, id, 1)[0].data, b"count 256");
    // Small messages in a burst, then the marker: the coalesced tail is not forgotten.
    for _ in 0..10_000 {
        w.send(b"tiny").expect("send");
    }
    w.send(b"").expect("marker");
    assert_eq!(messages(&h, id, 1)[0].data, b"count 10000");
}

#[test]
fn send_to_a_gone_worker_gives_the_fd_back() {
    let h = Harness::new(FIXTURE);
    let id = h.fork("exit:0");
    let w = h.primary.worker(id).expect("worker");
    h.until_gone(id);
    let (a, _b) = UnixStream::pair().expect("pair");
    let mut err = w.send_fd(b"late", OwnedFd::from(a)).expect_err("gone");
    assert_eq!(err.kind(), ErrorKind::NoSuchWorker);
    assert!(
        err.take_fd()
            .is_some_and(|fd| fd.as_fd().try_clone_to_owned().is_ok())
    );
}
