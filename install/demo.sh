#!/usr/bin/env bash
# Installs the engines, builds p2pu, then runs the bootstrap installer (install/install.sh) in
# image mode into a scratch root: the p2pu user, the config, the rendered engine configs and
# enabled units land there, with a demo operator key trusted. Shows what it installed and that
# a second run changes nothing. Touches nothing outside the scratch root.
set -euo pipefail
cd "$(dirname "$0")/.."
install/engines.sh
cargo build --locked --release
scratch=$(mktemp -d /tmp/p2pu-demo.XXXXXX)
mkdir "$scratch/root"
target/release/p2pu keygen --out "$scratch/operator" --comment demo-operator
echo "== install/install.sh --root $scratch/root --config install/site.example.toml"
install/install.sh --root "$scratch/root" --binary target/release/p2pu \
    --config install/site.example.toml --trust "$scratch/operator/signing.pub"
echo "== second run: nothing to change"
install/install.sh --root "$scratch/root" --binary target/release/p2pu \
    --trust "$scratch/operator/signing.pub"
echo "== installed under $scratch/root"
find "$scratch/root" \( -type f -o -type l \) | sort
