//! The control channel, primary <-> one worker: round-trip time and one-way messages per
//! second, for 64-byte and 64-KiB messages.
//!
//! ```text
//! cargo bench -p ringleader-benches --bench ipc
//! ```
//! This binary is also the worker: the primary forks it with `BENCH_MODE` set to `echo`
//! (send every message back), `sink` (read; answer the empty message with an empty one), or
//! `source` (on `N:SIZE`, send N messages of SIZE bytes, then an empty one).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use ringleader::{Event, Primary, Role, WorkerHandle};

const SIZES: [(usize, &str); 2] = [(64, "64B"), (64 * 1024, "64KiB")];

fn main() {
    match ringleader::role().expect("role") {
        Role::Worker(worker) => {
            let mode = std::env::var("BENCH_MODE").unwrap_or_default();
            while let Ok(Some(m)) = worker.recv() {
                match mode.as_str() {
                    "echo" => worker.send(&m.data).expect("echo"),
                    "sink" if m.data.is_empty() => worker.send(b"").expect("ack"),
                    "source" => {
                        let text = String::from_utf8_lossy(&m.data).into_owned();
                        let (n, size) = text.split_once(':').expect("N:SIZE");
                        let body = vec![7u8; size.parse().expect("size")];
                        for _ in 0..n.parse::<u64>().expect("n") {
                            worker.send(&body).expect("send");
                        }
                        worker.send(b"").expect("end");
                    }
                    _ => {}
                }
            }
        }
        Role::Primary(primary) => {
            let mut c = Criterion::default().configure_from_args();
            bench(&mut c, &primary);
            c.final_summary();
            primary.disconnect_all().expect("disconnect");
            for e in primary.events() {
                if matches!(e, Ok(Event::AllDisconnected)) {
                    break;
                }
            }
        }
    }
}

/// The next message from the worker (other events are skipped).
fn message(primary: &Primary) -> Vec<u8> {
    loop {
        match primary
            .next_event(Some(Duration::from_secs(30)))
            .expect("event")
        {
            Some(Event::Message { message, .. }) => return message.data,
            Some(_) => {}
            None => panic!("no message within 30 s"),
        }
    }
}

fn worker(primary: &Primary, mode: &str) -> WorkerHandle {
    let w = primary.fork(&[("BENCH_MODE", mode)]).expect("fork");
    loop {
        if let Some(Event::Online { worker }) = primary
            .next_event(Some(Duration::from_secs(30)))
            .expect("event")
        {
            if worker == w.id() {
                return w;
            }
        }
    }
}

fn bench(c: &mut Criterion, primary: &Primary) {
    let echo = worker(primary, "echo");
    let sink = worker(primary, "sink");
    let source = worker(primary, "source");

    let mut g = c.benchmark_group("round_trip");
    for (size, name) in SIZES {
        let body = vec![1u8; size];
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                echo.send(&body).expect("send");
                message(primary)
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("primary_to_worker");
    for (size, name) in SIZES {
        let body = vec![2u8; size];
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    sink.send(&body).expect("send");
                }
                sink.send(b"").expect("marker");
                let ack = message(primary);
                assert!(ack.is_empty());
                start.elapsed()
            });
        });
    }
    g.finish();

    let mut g = c.benchmark_group("worker_to_primary");
    for (size, name) in SIZES {
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                source
                    .send(format!("{iters}:{size}").as_bytes())
                    .expect("request");
                let mut got = 0u64;
                while !message(primary).is_empty() {
                    got += 1;
                }
                assert_eq!(got, iters);
                start.elapsed()
            });
        });
    }
    g.finish();
}
