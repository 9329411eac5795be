#!/usr/bin/env bash
# The lock-free parts under their checkers: loom explores every interleaving of the hints
# ring's model; Miri runs the pure modules' unit tests (board layout, ring, policies, frame
# codec) looking for undefined behaviour. Miri needs nightly; it is installed if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="--cfg loom" cargo test -q --locked -p ringleader --lib --target-dir target/loom -- loom
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "miri: skipped: no nightly toolchain here"
  exit 0
fi
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  rustup component add --toolchain nightly miri rust-src
fi
cargo +nightly miri setup >/dev/null 2>&1
# Isolation off: the p2c policy seeds itself from the clock.
MIRIFLAGS="-Zmiri-disable-isolation" cargo +nightly miri test -q -p ringleader --lib --target-dir target/miri -- board:: policy:: ipc::frame
