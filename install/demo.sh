#!/usr/bin/env bash
# The README's first command: installs the engines from Debian, builds p2pu, and runs the demo
# fleet: `p2pu lab` starts 3 nodes in a private network namespace (each with Serf,
# Transmission and the p2pu agent), node 1 signs and submits install/example.pp, every node
# applies it with Puppet, and everything is torn down. Touches nothing outside its temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
install/engines.sh
cargo build --locked --release
exec target/release/p2pu lab --nodes "${NODES:-3}"
