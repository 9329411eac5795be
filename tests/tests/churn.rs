//! Churn: disconnect and kill storms while messages fly (B22).

use std::collections::BTreeMap;

use ringleader::{Event, Signal};
use ringleader_tests::{Harness, describe};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

#[test]
fn b22_disconnect_and_kill_storm_gives_one_disconnect_and_one_exit_each() {
    let h = Harness::new(FIXTURE);
    let ids: Vec<u32> = (0..8).map(|_| h.fork("echo")).collect();
    for id in &ids {
        h.online(*id);
    }
    let mut counts: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
    for round in 0..20u32 {
        for id in &ids {
            if let Some(w) = h.primary.worker(*id) {
                let _ = w.send(&round.to_le_bytes());
            }
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let w = h.primary.worker(*id).expect("worker");
        match i % 4 {
            0 => w.disconnect().expect("disconnect"),
            1 => w.kill(None).expect("kill"),
            2 => w.kill(Some(Signal::KILL)).expect("kill"),
            _ => {
                // Both, in the worst order.
                w.disconnect().expect("disconnect");
                w.kill(Some(Signal::KILL)).expect("kill");
            }
        }
        let _ = w.send(b"after");
    }
    let seen = h.until(|e| {
        match e {
            Event::Disconnect { worker, .. } => counts.entry(*worker).or_default().0 += 1,
            Event::Exit { worker, .. } => counts.entry(*worker).or_default().1 += 1,
            _ => {}
        }
        counts.len() == ids.len() && counts.values().all(|(d, x)| *d >= 1 && *x >= 1)
    });
    assert!(counts.values().all(|c| *c == (1, 1)), "{counts:?}");
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Error { .. })),
        "{:?}",
        seen.iter().map(describe).collect::<Vec<_>>()
    );
    for e in &seen {
        if let Event::Exit {
            exited_after_disconnect,
            ..
        }
        | Event::Disconnect {
            exited_after_disconnect,
            ..
        } = e
        {
            assert!(
                *exited_after_disconnect,
                "every end here was asked for: {}",
                describe(e)
            );
        }
    }
    assert!(h.primary.workers().is_empty());
    // Nothing more is pending: the iterator ends.
    assert_eq!(h.primary.events().count(), 0);
}
