#!/usr/bin/env bash
# Formatting, clippy with warnings denied, and docs with warnings denied.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
echo "lint: ok"
