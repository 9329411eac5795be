#!/usr/bin/env bash
# Behind a real HAProxy (tests/tests/balancer.rs): two network-namespace hosts running
# hello, POSTs over keep-alive through HAProxy, host 1 stopped, rolled, upgraded and
# retired. Run twice each in one go: without a lame-duck (--drain-delay 0, what every stop
# was before) and with the one the test uses (1.5 s), under HAProxy's safe retries and
# with none; prints failed POSTs per event and how long host 1 took. Needs root; installs HAProxy if missing. Its traffic stays in the
# namespaces and veth pairs the test makes.
#   bash benches/scripts/balancer.sh > benches/results/balancer.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v haproxy >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q haproxy >/dev/null; }
cargo build -q -p ringleader-tests --tests && cargo build -q -p ringleader --example hello
# HAProxy's safe retries (3, conn-failure only: a POST that was sent is never sent again),
# then none at all.
for retries in 3 0; do
  for drain in 0 1500; do
    for run in 1 2; do
      RINGLEADER_BALANCER_RETRIES=$retries RINGLEADER_BALANCER_DRAIN_MS=$drain \
        cargo test -q -p ringleader-tests --test balancer -- --nocapture 2>&1 \
        | grep '^balancer:' | sed "s/^balancer:/retries $retries, run $run,/"
    done
  done
done
