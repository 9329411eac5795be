//! The control channel side by side with Node's cluster IPC, measured the same way in one run:
//! ping-pong round trips (per-message p50/p99) and one-way streams in both directions, for
//! 64-byte and 64-KiB messages; medians over repetitions.
//!
//! ```text
//! cargo run --release -p ringleader-benches --bin ipc_compare -- [--reps 5] [--json out.json]
//! ```
//! Node's column comes from `benches/node/ipc-sizes.js`; without `node` on the PATH it is
//! skipped with a line saying so. This binary is also its own worker (see `worker_main`).

use std::process::Command;
use std::time::{Duration, Instant};

use ringleader::{Event, Primary, Role, WorkerHandle};
use ringleader_benches::{median, percentile};
use serde_json::{Value, json};

/// The control channel side by side with Node's cluster IPC.
#[derive(clap::Parser, Debug)]
struct Args {
    /// Repetitions; the table has their medians.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Also write every repetition's figures here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn main() {
    match ringleader::role().expect("role") {
        Role::Worker(worker) => worker_main(&worker),
        Role::Primary(primary) => primary_main(&primary),
    }
}

/// Echo by default; `sink` counts until an empty message and answers with the count;
/// `source:N` sends N messages of IPC_SIZE bytes then an empty one.
fn worker_main(worker: &ringleader::Worker) {
    let size: usize = std::env::var("IPC_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let body = vec![7u8; size];
    let mut sinking = false;
    let mut count = 0u64;
    while let Ok(Some(m)) = worker.recv() {
        if sinking {
            if m.data.is_empty() {
                worker.send(count.to_string().as_bytes()).expect("count");
                sinking = false;
            } else {
                count += 1;
            }
        } else if m.data == b"sink" {
            sinking = true;
            count = 0;
        } else if let Some(n) = m.data.strip_prefix(b"source:") {
            let n: u64 = String::from_utf8_lossy(n).parse().expect("n");
            for _ in 0..n {
                worker.send(&body).expect("send");
            }
            worker.send(b"").expect("end");
        } else {
            worker.send(&m.data).expect("echo");
        }
    }
}

fn message(primary: &Primary) -> Vec<u8> {
    loop {
        match primary
            .next_event(Some(Duration::from_secs(60)))
            .expect("event")
        {
            Some(Event::Message { message, .. }) => return message.data,
            Some(_) => {}
            None => panic!("no message within 60 s"),
        }
    }
}

fn measure(
    primary: &Primary,
    w: &WorkerHandle,
    size: usize,
    pingpong: usize,
    stream: u64,
) -> Value {
    let body = vec![1u8; size];
    let mut lat = Vec::with_capacity(pingpong);
    for i in 0..pingpong + 2000 {
        let t = Instant::now();
        w.send(&body).expect("send");
        let _ = message(primary);
        if i >= 2000 {
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    lat.sort_by(f64::total_cmp);
    w.send(b"sink").expect("sink");
    let t = Instant::now();
    for _ in 0..stream {
        w.send(&body).expect("send");
    }
    w.send(b"").expect("end");
    let count: u64 = String::from_utf8_lossy(&message(primary))
        .parse()
        .expect("count");
    assert_eq!(count, stream, "messages lost primary -> worker");
    let p2w = stream as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    w.send(format!("source:{stream}").as_bytes())
        .expect("source");
    let mut got = 0u64;
    while !message(primary).is_empty() {
        got += 1;
    }
    assert_eq!(got, stream, "messages lost worker -> primary");
    let w2p = stream as f64 / t.elapsed().as_secs_f64();
    json!({
        "rtt_p50_us": percentile(&lat, 0.5),
        "rtt_p99_us": percentile(&lat, 0.99),
        "p2w_msgs_per_s": p2w.round(),
        "w2p_msgs_per_s": w2p.round(),
    })
}

fn node_figures(size: usize, pingpong: usize, stream: u64, reps: usize) -> Option<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/node/ipc-sizes.js");
    let out = Command::new("node")
        .args([
            script,
            "--size",
            &size.to_string(),
            "--pingpong",
            &pingpong.to_string(),
        ])
        .args(["--stream", &stream.to_string(), "--reps", &reps.to_string()])
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            println!("Node.js column skipped: cannot run `node` ({e})");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text.lines().find_map(|l| l.strip_prefix("SUMMARY "));
    match summary.and_then(|s| serde_json::from_str(s).ok()) {
        Some(v) => Some(v),
        None => {
            println!(
                "Node.js column skipped: ipc-sizes.js printed no SUMMARY ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
    }
}

fn primary_main(primary: &Primary) {
    let args = <Args as clap::Parser>::parse();
    let reps = args.reps;
    println!(
        "ringleader {:?} backend, busy poll {} us; {reps} repetitions, medians",
        primary.backend(),
        std::env::var(ringleader::ENV_BUSY_POLL_US).unwrap_or_else(|_| "50 (default)".into())
    );
    let mut results = Vec::new();
    for (size, label, pingpong, stream) in [
        (64usize, "64 B", 20_000usize, 200_000u64),
        (64 * 1024, "64 KiB", 5_000, 5_000),
    ] {
        let size_s = size.to_string();
        let w = primary
            .fork(&[("IPC_SIZE", size_s.as_str())])
            .expect("fork");
        let mut rows = Vec::new();
        for _ in 0..reps {
            rows.push(measure(primary, &w, size, pingpong, stream));
        }
        w.disconnect().expect("disconnect");
        let ours = |k: &str| {
            median(
                rows.iter()
                    .map(|r| r[k].as_f64().unwrap_or(f64::NAN))
                    .collect(),
            )
        };
        let node = node_figures(size, pingpong, stream, reps);
        let theirs = |k: &str| node.as_ref().and_then(|n| n[k].as_f64());
        println!("\n{label} messages            ringleader        Node.js    ratio");
        for (key, name, lower_is_better) in [
            ("rtt_p50_us", "round trip p50 (us)", true),
            ("rtt_p99_us", "round trip p99 (us)", true),
            ("p2w_msgs_per_s", "primary->worker msg/s", false),
            ("w2p_msgs_per_s", "worker->primary msg/s", false),
        ] {
            let (a, b) = (ours(key), theirs(key));
            let ratio = b.map(|b| if lower_is_better { b / a } else { a / b });
            let fmt = |x: f64| {
                if x >= 1000.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x:.2}")
                }
            };
            println!(
                "  {name:<24} {:>12} {:>14} {:>8}",
                fmt(a),
                b.map(fmt).unwrap_or_else(|| "-".into()),
                ratio
                    .map(|r| format!("{r:.1}x"))
                    .unwrap_or_else(|| "-".into())
            );
        }
        results.push(json!({ "size": size, "ringleader": rows, "node": node }));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results).expect("json"))
            .expect("write json");
        println!("\nwrote {}", path.display());
    }
    // Let the workers go.
    let _ = primary.disconnect_all();
    while let Ok(Some(e)) = primary.next_event(Some(Duration::from_secs(10))) {
        if matches!(e, Event::AllDisconnected) {
            break;
        }
    }
}
