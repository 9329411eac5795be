#!/usr/bin/env bash
# The publishable crates package and build from their packaged sources (ringleader-sys is
# resolved from the workspace, as it will be from crates.io).
set -euo pipefail
cd "$(dirname "$0")/.."
# Cargo unpacks the just-packaged ringleader-sys into CARGO_HOME and builds ringleader
# against it as if it came from a registry, whose crates never change: an earlier run's
# unpacking and build of the same name and version would be used as they are. Remove both,
# lest a stale ringleader-sys 0.1.0 build (and fail) instead.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/ringleader-sys-[0-9]* \
  "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/ringleader-[0-9]*
CARGO_TARGET_DIR=target/package cargo clean -q -p ringleader-sys -p ringleader
# `--workspace` would package the test and benchmark crates too (publish = false).
CARGO_TARGET_DIR=target/package cargo package -p ringleader-sys -p ringleader --locked
echo "package: ok"
