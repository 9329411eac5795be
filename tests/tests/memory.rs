//! Workers over their memory limit (`Settings::max_memory`) are replaced gracefully: the
//! successor is ready before the worker leaves, and no request fails.

use std::time::Duration;

use ringleader::{Event, Settings};
use ringleader_tests::load::Load;
use ringleader_tests::{Harness, fetch_hello, free_port};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

#[test]
fn a_worker_over_its_memory_limit_is_replaced_gracefully_and_no_request_fails() {
    let h = Harness::new(FIXTURE);
    let limit = 48 << 20;
    h.primary
        .setup(Settings::default().max_memory(Some(limit)))
        .expect("setup");
    let port = free_port();
    // 64 KiB kept per request, at about 400 requests a second: 25 MiB a second.
    let first = h.fork(&format!("leak:127.0.0.1:{port}:64"));
    h.listening(1);
    let mut load = Load::new();
    load.clients(4, move |_| {
        std::thread::sleep(Duration::from_millis(10));
        fetch_hello(port).map(|_| 1)
    });
    let seen = h.until(|e| matches!(e, Event::Exit { worker, .. } if *worker == first));
    // The primary serves while the clients finish.
    let tally = h.drive(move || load.stop());
    let over = seen.iter().find_map(|e| match e {
        Event::MemoryExceeded { worker, rss, limit } => Some((*worker, *rss, *limit)),
        _ => None,
    });
    let Some((worker, rss, told)) = over else {
        panic!(
            "no MemoryExceeded: {:?}",
            seen.iter()
                .map(ringleader_tests::describe)
                .collect::<Vec<_>>()
        );
    };
    assert_eq!((worker, told), (first, limit));
    assert!(rss > limit, "{rss}");
    // Its successor was ready before it was asked to go, and it went gracefully.
    let step = seen.iter().find_map(|e| match e {
        Event::RollStep { old, new } if *old == first => Some(*new),
        _ => None,
    });
    assert!(step.is_some(), "no step");
    assert!(seen.iter().any(|e| matches!(
        e,
        Event::Exit {
            worker,
            exited_after_disconnect: true,
            ..
        } if *worker == first
    )));
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, Event::RollStarted { .. } | Event::RollDone { .. })),
        "a replacement is no roll the application asked for"
    );
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert!(tally.ok > 0);
    assert!(h.primary.metrics().cluster.memory_exceeded >= 1);
}
