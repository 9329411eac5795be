//! `Settings::cpu_affinity`: each worker runs on one CPU, the workers taking the primary's
//! CPUs in turn, and a replacement its predecessor's.

use std::time::Duration;

use ringleader::{Event, Respawn, Settings};
use ringleader_tests::Harness;

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

/// The CPUs process `pid` may run on, as `/proc/PID/status` lists them (`0-1,3`).
fn cpus_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn workers_are_pinned_to_the_cpus_in_turn_and_a_replacement_takes_its_predecessors() {
    let allowed: Vec<usize> = {
        let set = rustix::thread::sched_getaffinity(None).expect("affinity");
        (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect()
    };
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().cpu_affinity(true).respawn(Some(
            Respawn::default().first_delay(Duration::from_millis(10)),
        )))
        .expect("setup");
    let workers: Vec<_> = (0..3).map(|_| h.fork("echo")).collect();
    let mut online = 0;
    h.until(|e| {
        online += usize::from(matches!(e, Event::Online { .. }));
        online == 3
    });
    let pid = |w| h.primary.worker(w).expect("worker").pid();
    for (i, w) in workers.iter().enumerate() {
        assert_eq!(
            cpus_of(pid(*w)),
            allowed[i % allowed.len()].to_string(),
            "worker {w}"
        );
    }
    // The first dies; its replacement runs where it ran.
    ringleader_tests::signal(pid(workers[0]), rustix::process::Signal::KILL);
    let seen = h.until(|e| matches!(e, Event::Respawned { .. }));
    let Some(Event::Respawned { worker, .. }) = seen.last() else {
        panic!("no replacement");
    };
    let replacement = *worker;
    h.until(|e| matches!(e, Event::Online { worker } if *worker == replacement));
    assert_eq!(cpus_of(pid(replacement)), allowed[0].to_string());
    // Without the setting, a worker may run anywhere the primary may.
    h.primary
        .setup(Settings::default().cpu_affinity(false))
        .expect("setup");
    let free = h.fork("echo");
    h.until(|e| matches!(e, Event::Online { worker } if *worker == free));
    assert_eq!(cpus_of(pid(free)), cpus_of(std::process::id()));
}
