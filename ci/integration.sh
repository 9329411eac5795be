#!/usr/bin/env bash
# Unit, doc and integration tests, once per event-loop backend.
set -euo pipefail
cd "$(dirname "$0")/.."
# tests/activated/server.py, the socket-activated worker of tests/tests/activated.rs.
command -v python3 >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q python3 >/dev/null; }
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
backend=$(target/debug/fixture probe || true)
echo "== epoll backend"
RINGLEADER_BACKEND=epoll run
if [ "$backend" = "IoUring" ]; then
  echo "== io_uring backend"
  RINGLEADER_BACKEND=io_uring run
  # As a 5.15 kernel would run it (Ubuntu 22.04; RHEL 9 has 5.14): one accept per
  # connection, no accept rounds, hand-offs as plain sendmsg, no deferred task run.
  echo "== io_uring backend, with only Linux 5.15's features"
  RINGLEADER_BACKEND=io_uring RINGLEADER_URING_KERNEL=5.15 run
else
  echo "== io_uring backend: NOT RUN: a default primary here gets '$backend' (io_uring missing or forbidden)"
fi
