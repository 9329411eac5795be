#!/usr/bin/env bash
# A stopped worker: one of `hello --workers 2`'s workers is stopped (SIGSTOP) for 4 s under 32
# clients that each ask with `Connection: close`, and continued. A client left waiting past
# 1 s counts. Side by side in one run, for each policy (rr, lc, steer, none):
# - our client (benches/src/bin/storm.rs --stop-secs 4 --hang-secs 1): 8 s, the stop a
#   second in; "hung" is the requests that waited past 1 s;
# - wrk -c32 --timeout 1s -H 'Connection: close' for 8 s, the stop 2 s in: wrk counts a
#   request answered after more than 1 s as a timeout.
# Loopback only; every run stops by itself.
#   bash benches/scripts/stop.sh > benches/results/stop.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null 2>&1 || true; }
cargo build --release -q -p ringleader-benches --bin storm
[ -n "${HELLO:-}" ] || cargo build --release -q --example hello
hello=${HELLO:-./target/release/examples/hello}
echo "# $(date -u +%F), $(uname -r), $(nproc) CPUs: 1 of 2 workers SIGSTOPped for 4 s"
port=8170
for policy in ${POLICIES:-rr lc steer none}; do
  port=$((port + 1))
  ./target/release/storm --name "hello --policy $policy, our client" --port "$port" \
    --seconds 8 --clients 32 --hang-secs 1 --stop-secs 4 -- \
    "$hello" --workers 2 --policy "$policy" --port "$port"
  if command -v wrk >/dev/null; then
    port=$((port + 1))
    said=$(mktemp)
    "$hello" --workers 2 --policy "$policy" --port "$port" </dev/null >"$said" 2>&1 &
    for _ in $(seq 100); do
      curl -sf "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
      sleep 0.1
    done
    # The primary's pid as it says it (`$!` may be a shell in between).
    primary=$(sed -n 's/^Primary \([0-9]*\) is running$/\1/p' "$said")
    out=$(mktemp)
    wrk -t2 -c32 -d8s --timeout 1s -H 'Connection: close' "http://127.0.0.1:$port/" >"$out" 2>&1 &
    load=$!
    sleep 2
    worker=$(pgrep -P "$primary" | head -1)
    kill -STOP "$worker"
    sleep 4
    kill -CONT "$worker"
    wait "$load"
    requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$out")
    timeouts=$(sed -n 's/.*timeout \([0-9]*\).*/\1/p' "$out")
    echo "hello --policy $policy, wrk -c32 --timeout 1s | $requests requests | past 1 s ${timeouts:-0}"
    kill -TERM "$primary" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -f "$out" "$said"
  fi
done
