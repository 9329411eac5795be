#!/usr/bin/env bash
# The publishable crates package and build from their packaged sources (ringleader-sys is
# resolved from the workspace, as it will be from crates.io).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo package --workspace --locked --no-verify --list >/dev/null
CARGO_TARGET_DIR=target/package cargo package --workspace --locked
echo "package: ok"
