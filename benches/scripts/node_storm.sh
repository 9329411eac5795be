#!/usr/bin/env bash
# A SIGKILL storm: one worker of 2 SIGKILLed every 100 ms for 10 s while 32 clients ask in a
# loop (benches/src/bin/storm.rs); a request with no answer and no error within 5 s is hung.
# Side by side in one run:
# - Node.js workers (benches/node/storm-app.mjs, Node's documentation example whose primary
#   forks a replacement at once when a worker exits) behind Node's own primary, round-robin;
# - the same app under `ringleader run` with its defaults, and with --restart-delay 0;
# - ringleader's `hello` example with its defaults.
# Killed workers had booted, so the defaults replace every one (Respawn: only boot failures
# end a line). Loopback only; every run stops by itself.
#   bash benches/scripts/node_storm.sh > benches/results/node/node_storm.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v node >/dev/null || { echo "node_storm: node is not installed"; exit 0; }
cargo build --release -q -p ringleader-cli -p ringleader-benches --bin storm --bin ringleader
cargo build --release -q --example hello
app=benches/node/storm-app.mjs
storm() { ./target/release/storm --seconds 10 --every-ms 100 --clients 32 --hang-secs 5 "$@"; }
WORKERS=2 NODE_CLUSTER_SCHED_POLICY=rr storm --name "node primary, rr" --port 8161 -- node "$app"
storm --name "ringleader run --policy rr" --port 8162 -- \
  ./target/release/ringleader run --workers 2 --policy rr -- node "$app"
storm --name "ringleader run --policy rr --restart-delay 0" --port 8163 -- \
  ./target/release/ringleader run --workers 2 --policy rr --restart-delay 0 -- node "$app"
storm --name "hello --workers 2" --port 8164 -- \
  ./target/release/examples/hello --workers 2 --port 8164
