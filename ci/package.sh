#!/usr/bin/env bash
# The publishable crates package and build from their packaged sources (ringleader-sys is
# resolved from the workspace, as it will be from crates.io).
set -euo pipefail
cd "$(dirname "$0")/.."
# `--workspace` would package the test and benchmark crates too (publish = false).
CARGO_TARGET_DIR=target/package cargo package -p ringleader-sys -p ringleader --locked
echo "package: ok"
