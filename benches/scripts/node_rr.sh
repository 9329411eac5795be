#!/usr/bin/env bash
# Node.js workers behind Node's own primary and behind ringleader's, side by side in one run:
# Node's documentation example (tests/node/docs-example.mjs) with 2 workers under round-robin,
# driven by wrk (32 connections, `Connection: close`, then keep-alive, 5 s each). Prints
# requests per second, p99 and any socket error of each, and the primary's own CPU time per
# request on `Connection: close` (each request a new connection the primary hands over),
# and how often per request its main thread slept: what the primary costs, whoever the
# bottleneck is. Loopback only; every run stops by
# itself. A third row runs ringleader's own hello example under the same command, for scale.
#   bash benches/scripts/node_rr.sh > benches/results/node/node_rr.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
command -v node >/dev/null || { echo "node_rr: node is not installed"; exit 0; }
cargo build --release -q -p ringleader-cli -p ringleader --example hello
app=tests/node/docs-example.mjs
base=8141
measure() {
  port=$((base++))
  local name=$1; shift
  # PORTNUM in the command is the port too (for programs that take it as an argument).
  PORT=$port NODE_CLUSTER_SCHED_POLICY=rr "${@//PORTNUM/$port}" >/dev/null 2>&1 &
  local pid=$!
  # Wait until it answers.
  for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  pick() { grep -E 'Requests/sec|99%|Socket errors|Non-2xx' | tr -s ' ' | tr '\n' ' '; }
  # utime + stime of the primary, in clock ticks.
  cpu() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
  # The times its main thread slept (and was woken).
  sleeps() { awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$pid/status"; }
  local close keep before after requests slept
  before=$(cpu)
  slept=$(sleeps)
  close=$(wrk -t2 -c32 -d5s --latency --timeout 2s -H "Connection: close" "http://127.0.0.1:$port/" | pick)
  after=$(cpu)
  slept=$(($(sleeps) - slept))
  requests=$(echo "$close" | sed -E 's/.*Requests\/sec: ([0-9.]+).*/\1/')
  local per wakes
  per=$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v r="$requests" \
    'BEGIN { printf "%.1f", t / hz * 1e6 / (r * 5) }')
  wakes=$(awk -v w="$slept" -v r="$requests" 'BEGIN { printf "%.2f", w / (r * 5) }')
  keep=$(wrk -t2 -c32 -d5s --latency --timeout 2s "http://127.0.0.1:$port/" | pick)
  echo "$name | Connection: close: $close| primary CPU per request: $per us, sleeps per request: $wakes | keep-alive: $keep"
  kill -INT $pid 2>/dev/null || true
  wait $pid 2>/dev/null || true
  pkill -f "$app" 2>/dev/null || true
  sleep 1
}
# Node's docs example forks one worker per CPU: 2 here, as ringleader's --workers 2.
measure "node primary, rr" node "$app"
measure "ringleader run --policy rr" ./target/release/ringleader run --workers 2 --policy rr -- node "$app"
# For scale: the same command with ringleader workers (the hello example, which answers
# the same way), what the primary costs when workers need no translation.
measure "ringleader run --policy rr, hello workers" ./target/release/ringleader run --workers 2 \
  --policy rr -- target/release/examples/hello --port PORTNUM
