#!/usr/bin/env bash
# Upgrading the primary under load: hello with 4 workers driven by wrk (32 connections, 4 s),
# steady, then with a SIGUSR2 one second in (a new primary takes the sockets over; the old one
# retires); keep-alive and `Connection: close`, under rr, none, reuseport and steer. Prints
# throughput, p99, any socket error or non-2xx answer, and the new primary's pid. Loopback
# only; every run stops by itself.
#   bash benches/scripts/upgrade.sh > benches/results/upgrade/upgrade.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
cargo build --release --example hello -q
port=8127
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
  local steady upgrading
  steady=$(run)
  ( sleep 1; kill -USR2 $hp ) &
  upgrading=$(run)
  wait $! 2>/dev/null || true
  local served
  served=$(grep -m1 -o 'The new primary [0-9]*' "$log" | awk '{print $4}')
  # The new primary serves until it is stopped; the old one exited by itself.
  [ -n "$served" ] && kill -INT "$served" 2>/dev/null
  sleep 1.5
  pkill -f "hello --workers 4 --port $port" 2>/dev/null || true
  pick() { echo "$1" | grep -E 'Requests/sec|99%|Socket errors|Non-2xx' | tr -s ' ' | tr '\n' ' '; }
  echo "$pol ${hdr:-keep-alive} | steady: $(pick "$steady")| upgrading (new primary ${served:-none}): $(pick "$upgrading")"
  rm -f "$log"
}
for pol in rr none reuseport steer; do
  one "$pol" ""
  one "$pol" "Connection: close"
done
