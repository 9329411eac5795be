#!/usr/bin/env bash
# A soak (benches/src/bin/soak.rs): `hello --workers 2` under 16 clients asking in a loop
# while, one a second in turn, a worker is SIGKILLed, a worker is SIGSTOPped for 2 s, the
# workers are rolled, 200 idle clients connect and hold, the admin endpoint is flooded, and
# the primary is upgraded. Prints the requests answered, failed and hung, and the primary's
# fds and resident set at the start and the end. Loopback only; the run stops by itself.
#   bash benches/scripts/soak.sh > benches/results/soak.txt     (10 minutes, release)
#   bash benches/scripts/soak.sh --ci                           (60 s, debug, checked: CI)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=600 profile=release check=()
if [ "${1:-}" = "--ci" ]; then
  seconds=60 profile=debug check=(--check)
fi
flag=(); [ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" -q --locked -p ringleader-benches --bin soak
cargo build "${flag[@]}" -q --locked --example hello
port=8191 admin=127.0.0.1:8192
# The lame-duck (200 ms) is shorter than the gap between events, so each one happens.
"./target/$profile/soak" --port "$port" --admin "$admin" --seconds "$seconds" "${check[@]}" -- \
  "./target/$profile/examples/hello" --workers 2 --port "$port" --admin "$admin" --drain-delay 200
