//! Fork to online and fork to listening, ours and Node's.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ringleader::{Event, Primary};
use ringleader_benches::median;
use serde_json::Value;

/// Ours: fork a worker, time `Online` and `Listening`, retire it; 20 times.
pub(crate) fn startup_ours(primary: &Primary, count: usize) -> (f64, f64) {
    let (mut online, mut listening) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let start = Instant::now();
        let w = primary.fork(&[]).expect("fork");
        let mut seen_online = false;
        loop {
            match primary
                .next_event(Some(Duration::from_secs(10)))
                .expect("event")
            {
                Some(Event::Online { worker }) if worker == w.id() => {
                    online.push(start.elapsed().as_secs_f64() * 1000.0);
                    seen_online = true;
                }
                Some(Event::Listening { worker, .. }) if worker == w.id() && seen_online => {
                    listening.push(start.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                Some(_) => {}
                None => panic!("worker {} never listened", w.id()),
            }
        }
        w.disconnect().expect("disconnect");
        loop {
            if let Some(Event::Exit { worker, .. }) = primary
                .next_event(Some(Duration::from_secs(10)))
                .expect("event")
            {
                if worker == w.id() {
                    break;
                }
            }
        }
    }
    (median(online), median(listening))
}

/// Node's: `benches/node/startup.js`, 20 forks.
pub(crate) fn startup_node(node: &Path, repo: &Path, count: usize) -> (f64, f64) {
    let out = Command::new(node)
        .arg(repo.join("benches/node/startup.js"))
        .args(["--count", &count.to_string()])
        .output()
        .expect("node startup.js");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let list = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    (median(list("online_ms")), median(list("listening_ms")))
}
