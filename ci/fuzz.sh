#!/usr/bin/env bash
# Builds every fuzz target and runs each for FUZZ_SECONDS (default 20). Needs nightly and
# cargo-fuzz; installs cargo-fuzz if missing. Says plainly what it skips and why.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: skipped: no nightly toolchain here (cargo fuzz needs one)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked --quiet
fi
cd fuzz
for target in $(cargo +nightly fuzz list); do
  mkdir -p "corpus/$target"
  # Hand-made starting points (a valid board, for instance) live in seeds/, under git.
  if [ -d "seeds/$target" ]; then cp -n "seeds/$target"/* "corpus/$target/"; fi
  cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -max_len=4096 2>&1 | tail -n 3
  echo "fuzz: $target ran ${seconds}s without a finding"
done
