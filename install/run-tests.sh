#!/usr/bin/env bash
# Runs every test of p2pu against the real engines. As root on Debian: tests start their own
# serf, transmission-daemon and puppet runs in temp dirs and network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
install/engines.sh --test
cargo build --locked --all-targets
cargo test --locked --all-targets -- --test-threads=2
