#!/usr/bin/env bash
# Node.js workers under a SIGKILL storm, behind Node's own primary and behind ringleader's,
# side by side in one run: benches/node/storm-app.mjs (Node's documentation example whose
# primary forks a replacement at once when a worker exits) with 2 workers under round-robin;
# one worker SIGKILLed every 100 ms for 10 s while 32 clients ask in a loop
# (benches/src/bin/storm.rs). A request with no answer and no error within 5 s is hung.
# ringleader replaces workers at once here too (--restart-delay 0, and no crash-loop limit:
# by default it would stop replacing a worker after 5 quick exits in 30 s).
# Loopback only; every run stops by itself.
#   bash benches/scripts/node_storm.sh > benches/results/node/node_storm.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v node >/dev/null || { echo "node_storm: node is not installed"; exit 0; }
cargo build --release -q -p ringleader-cli -p ringleader-benches --bin storm --bin ringleader
app=benches/node/storm-app.mjs
storm() { ./target/release/storm --seconds 10 --every-ms 100 --clients 32 --hang-secs 5 "$@"; }
WORKERS=2 NODE_CLUSTER_SCHED_POLICY=rr storm --name "node primary, rr" --port 8161 -- node "$app"
storm --name "ringleader run --policy rr" --port 8162 -- \
  ./target/release/ringleader run --workers 2 --policy rr --restart-delay 0 \
  --max-restarts 1000000 -- node "$app"
