//! A primary driven by a loop of the test's own: an epoll instance that watches
//! `Primary::as_fd` and calls `Primary::poll` only when it is readable. Forks, listens and a
//! burst of connections must all get through that way, on both backends, under round-robin
//! (accept rounds come due by timer) and steering (checks come due by timer).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ringleader::{Event, Scheduling, Settings};
use ringleader_tests::{Harness, WATCHDOG, burst, hellos};
use rustix::event::epoll;

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

/// An epoll of the test's own over the primary's fd.
struct OutsideLoop {
    epoll: std::os::fd::OwnedFd,
    events: Vec<Event>,
    polls: u64,
}

impl OutsideLoop {
    fn new(h: &Harness) -> OutsideLoop {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
        epoll::add(
            &ep,
            h.primary.as_fd(),
            epoll::EventData::new_u64(1),
            epoll::EventFlags::IN,
        )
        .expect("add");
        OutsideLoop {
            epoll: ep,
            events: Vec::new(),
            polls: 0,
        }
    }

    /// Waits up to `wait` for the fd; when it is readable, polls the primary without waiting.
    fn turn(&mut self, h: &Harness, wait: Duration) {
        let mut ready = Vec::with_capacity(4);
        let ts = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: wait.as_nanos() as i64,
        };
        match epoll::wait(&self.epoll, spare(&mut ready), Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("epoll_wait: {e}"),
        }
        if !ready.is_empty() {
            self.polls += 1;
            h.primary
                .poll(&mut self.events, Some(Duration::ZERO))
                .expect("poll");
        }
    }

    /// Turns until `done` holds, within the watchdog.
    fn until(&mut self, h: &Harness, mut done: impl FnMut(&[Event]) -> bool) {
        let deadline = Instant::now() + WATCHDOG;
        while !done(&self.events) {
            assert!(
                Instant::now() < deadline,
                "watchdog: the outside loop saw only {} polls and {:?}",
                self.polls,
                self.events
                    .iter()
                    .map(ringleader_tests::describe)
                    .collect::<Vec<_>>()
            );
            self.turn(h, Duration::from_millis(10));
        }
    }
}

fn spare(v: &mut Vec<epoll::Event>) -> rustix::buffer::SpareCapacity<'_, epoll::Event> {
    rustix::buffer::spare_capacity(v)
}

fn burst_through_an_outside_loop(scheduling: Scheduling) {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().scheduling(scheduling))
        .expect("setup");
    let mut outside = OutsideLoop::new(&h);
    for _ in 0..2 {
        h.fork("serve:127.0.0.1:0");
    }
    outside.until(&h, |seen| {
        seen.iter()
            .filter(|e| matches!(e, Event::Listening { .. }))
            .count()
            == 2
    });
    let port = outside
        .events
        .iter()
        .find_map(|e| match e {
            Event::Listening { address, .. } => Some(address.port),
            _ => None,
        })
        .expect("a port");
    // A burst: 300 clients at once, each waiting for its answer.
    let clients = std::thread::spawn(move || hellos(&burst(port, 300)));
    let deadline = Instant::now() + WATCHDOG;
    while !clients.is_finished() {
        assert!(Instant::now() < deadline, "watchdog: the burst hangs");
        outside.turn(&h, Duration::from_millis(10));
    }
    assert_eq!(clients.join().expect("clients"), 300, "{scheduling:?}");
}

#[test]
fn an_outside_epoll_drives_a_round_robin_primary_through_a_burst() {
    burst_through_an_outside_loop(Scheduling::RoundRobin);
}

#[test]
fn an_outside_epoll_drives_a_steering_primary_through_a_burst() {
    burst_through_an_outside_loop(Scheduling::Steered);
}

#[test]
fn next_timeout_says_when_timed_work_is_due() {
    let h = Harness::new(FIXTURE);
    let mut outside = OutsideLoop::new(&h);
    // The setup's event waits: poll at once.
    assert_eq!(h.primary.next_timeout(), Some(Duration::ZERO));
    outside.turn(&h, Duration::ZERO);
    assert!(matches!(outside.events[..], [Event::Setup(_)]));
    // Nothing forked, nothing timed: no deadline.
    assert_eq!(h.primary.next_timeout(), None);
    h.primary
        .setup(Settings::default().scheduling(Scheduling::Steered))
        .expect("setup");
    h.fork("serve:127.0.0.1:0");
    outside.until(&h, |seen| {
        seen.iter().any(|e| matches!(e, Event::Listening { .. }))
    });
    // A steered listener is checked at least every 16 ms.
    let next = h.primary.next_timeout().expect("a steer check is due");
    assert!(next <= Duration::from_millis(16), "{next:?}");
}

#[test]
fn an_outside_epoll_drives_a_roll_to_its_end() {
    let h = Harness::new(FIXTURE);
    let mut outside = OutsideLoop::new(&h);
    for _ in 0..2 {
        h.fork("serve:127.0.0.1:0");
    }
    outside.until(&h, |seen| {
        seen.iter()
            .filter(|e| matches!(e, Event::Listening { .. }))
            .count()
            == 2
    });
    // Each step's end (the predecessor's exit) must start the next with nothing else
    // happening: no fd shows it.
    h.primary.roll(ringleader::Roll::default()).expect("roll");
    outside.until(&h, |seen| {
        seen.iter()
            .any(|e| matches!(e, Event::RollDone { .. } | Event::RollFailed { .. }))
    });
    assert!(
        outside
            .events
            .iter()
            .any(|e| matches!(e, Event::RollDone { replaced: 2, .. })),
        "{:?}",
        outside
            .events
            .iter()
            .map(ringleader_tests::describe)
            .collect::<Vec<_>>()
    );
}
