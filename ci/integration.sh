#!/usr/bin/env bash
# Unit, doc and integration tests, once per event-loop backend.
set -euo pipefail
cd "$(dirname "$0")/.."
# tests/activated/server.py, the socket-activated worker of tests/tests/activated.rs.
command -v python3 >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q python3 >/dev/null; }
# HAProxy, in front of the network-namespace hosts of tests/tests/balancer.rs (which says
# NOT RUN where it cannot have HAProxy, namespaces or root).
command -v haproxy >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q haproxy >/dev/null; } \
  || echo "== haproxy could not be installed: tests/tests/balancer.rs will not run"
# socket.io and its own client, for the sticky-session check of tests/tests/sticky.rs (which
# says NOT RUN without them), at the versions package-lock.json pins.
if command -v npm >/dev/null; then
  npm ci --prefix tests/node/socketio --no-audit --no-fund --loglevel=error >/dev/null \
    || echo "== socket.io could not be installed: the socket.io check of tests/tests/sticky.rs will not run"
else
  echo "== no npm: the socket.io check of tests/tests/sticky.rs will not run"
fi
cargo build --workspace --all-targets --locked
run() {
  if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --profile ci
  else
    # Default threads, as a contributor runs it: tests that count this process's fds take it
    # to themselves (ringleader_tests::alone).
    cargo test --workspace --locked
  fi
}
cargo test --doc --workspace --locked
# Which backend a default primary gets here, from the fixture wherever cargo puts it
# (CARGO_TARGET_DIR included). A probe that fails is a failure, not a skip.
probe_err=$(mktemp)
trap 'rm -f "$probe_err"' EXIT
if ! backend=$(cargo run -q --locked -p ringleader-tests --bin fixture -- probe 2>"$probe_err"); then
  echo "== the backend probe failed:"; cat "$probe_err"; exit 1
fi
echo "== epoll backend"
RINGLEADER_BACKEND=epoll run
case "$backend" in
  IoUring)
    echo "== io_uring backend"
    RINGLEADER_BACKEND=io_uring run
    # As a 5.15 kernel would run it (Ubuntu 22.04; RHEL 9 has 5.14): one accept per
    # connection, no accept rounds, hand-offs as plain sendmsg, no deferred task run.
    echo "== io_uring backend, with only Linux 5.15's features"
    RINGLEADER_BACKEND=io_uring RINGLEADER_URING_KERNEL=5.15 run
    ;;
  Epoll)
    # The primary fell back, and said why on stderr (io_uring missing or forbidden here:
    # ENOSYS, EPERM, kernel.io_uring_disabled, a seccomp filter).
    echo "== io_uring backend: NOT RUN: io_uring cannot be used here: $(cat "$probe_err")"
    ;;
  *)
    echo "== the backend probe said '$backend', expected IoUring or Epoll:"; cat "$probe_err"; exit 1
    ;;
esac
