#!/usr/bin/env bash
# Rolling restarts under load: hello with 4 workers driven by wrk (32 connections, 4 s),
# steady, then with a SIGHUP (a roll of every worker) every 300 ms; keep-alive and
# `Connection: close`, under rr, none, reuseport and steer. Prints throughput, p99 and any socket
# error or non-2xx answer of each run. Loopback only; every run stops by itself.
#   bash benches/scripts/roll.sh > benches/results/roll/roll.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
cargo build --release --example hello -q
port=8126
one() {
  local pol=$1 hdr=$2 log
  log=$(mktemp)
  ./target/release/examples/hello --workers 4 --port $port --policy "$pol" >"$log" 2>&1 &
  local hp=$!
  sleep 1
  run() {
    if [ -n "$hdr" ]; then wrk -t2 -c32 -d4s --latency --timeout 2s -H "$hdr" "http://127.0.0.1:$port/"
    else wrk -t2 -c32 -d4s --latency --timeout 2s "http://127.0.0.1:$port/"; fi
  }
  local steady rolling
  steady=$(run)
  ( for _ in $(seq 1 12); do sleep 0.3; kill -HUP $hp; done ) &
  rolling=$(run)
  wait $! 2>/dev/null || true
  kill -INT $hp; wait $hp 2>/dev/null || true
  local rolls took
  rolls=$(grep -c '^Replaced' "$log" || true)
  took=$(grep '^Replaced' "$log" | sed -E 's/.* in ([0-9.]+)(ms|s|µs).*/\1\2/' | tr '\n' ' ')
  pick() { echo "$1" | grep -E 'Requests/sec|99%|Socket errors|Non-2xx' | tr -s ' ' | tr '\n' ' '; }
  echo "$pol ${hdr:-keep-alive} | steady: $(pick "$steady")| rolling ($rolls rolls; each took $took): $(pick "$rolling")"
  rm -f "$log"
}
for pol in rr none reuseport steer; do
  one "$pol" ""
  one "$pol" "Connection: close"
done
