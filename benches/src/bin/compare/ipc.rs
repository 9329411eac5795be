//! The control channel, through `ipc_compare`.

use std::process::{Command, Stdio};

use ringleader_benches::median;
use serde_json::Value;

use crate::Config;
use crate::report::{Better, Row};

/// Runs `ipc_compare` and adds its figures (round trip, one-way rates) as rows.
pub(crate) fn ipc_rows(cfg: &Config, rows: &mut Vec<Row>) {
    let path = cfg.out.join("ipc.json");
    let status = Command::new(cfg.bin_dir.join("ipc_compare"))
        .args(["--reps", &cfg.reps.to_string(), "--json"])
        .arg(&path)
        .stdout(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        println!("ipc_compare failed: control-channel rows skipped");
        return;
    }
    let v: Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    // ipc_compare writes, per size, every rep of ours and the medians of Node's.
    for entry in v.as_array().into_iter().flatten() {
        let size = entry["size"].as_u64().unwrap_or(0);
        let name = if size == 64 { "64 B" } else { "64 KiB" };
        let ours = |key: &str| {
            median(
                entry["ringleader"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r[key].as_f64())
                    .collect(),
            )
        };
        let node = |key: &str| entry["node"][key].as_f64();
        let small = (size == 64).then_some(10.0);
        rows.push(Row::new(
            &format!("IPC round trip p50 us, {name}"),
            ours("rtt_p50_us"),
            node("rtt_p50_us"),
            Better::Lower,
            small,
        ));
        for (key, what) in [
            ("p2w_msgs_per_s", "primary->worker"),
            ("w2p_msgs_per_s", "worker->primary"),
        ] {
            rows.push(Row::new(
                &format!("IPC msg/s {what}, {name}"),
                ours(key),
                node(key),
                Better::Higher,
                small,
            ));
        }
    }
}
