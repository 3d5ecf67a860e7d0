#!/usr/bin/env bash
# Installs the engines, builds p2pu and runs `p2pu init` with the example config into a
# scratch root, then shows what it rendered. Touches nothing outside that scratch root.
set -euo pipefail
cd "$(dirname "$0")/.."
install/engines.sh
cargo build --locked --release
root=$(mktemp -d /tmp/p2pu-demo.XXXXXX)
echo "== p2pu init --config install/site.example.toml --root $root"
target/release/p2pu init --config install/site.example.toml --root "$root"
echo "== second run: nothing to change"
target/release/p2pu init --config install/site.example.toml --root "$root"
echo "== rendered files under $root"
find "$root" -type f | sort
