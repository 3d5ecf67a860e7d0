#!/usr/bin/env bash
# Runs every test of p2pu against the real engines. As root on Debian: tests start their own
# serf, transmission-daemon and puppet runs in temp dirs and network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
# --test: also what the tests need (namespaces, coturn, lintian, chromium and chromium-driver for
# tests/dashboard.rs's browser).
install/engines.sh --test
# tests/systemd_fleet.rs boots Debian bookworm trees with their own systemd in systemd-nspawn:
# debootstrap and systemd-container, and the tree made once (about 3 min, downloads included)
# and kept in /var/cache/p2pu-test for later runs (install/systemd-fleet.sh).
install/systemd-fleet.sh packages
install/systemd-fleet.sh image >/dev/null
# tests/deb.rs packages p2pu with cargo-deb. Installing it compiles 69 crates (8.5 min measured
# on a loaded 2-core machine); ~/.cargo/bin keeps it for the next run.
if ! cargo deb --version >/dev/null 2>&1; then
    echo "p2pu: installing cargo-deb (a few minutes, once)" >&2
    cargo install cargo-deb --version 3.8.0 --locked
fi
# install/deb/copyright.sh lists the linked crates' licenses with cargo-license (about 1.5 min
# to install on a loaded 2-core machine).
if ! cargo license --help >/dev/null 2>&1; then
    echo "p2pu: installing cargo-license (a minute or two, once)" >&2
    cargo install cargo-license --version 0.7.0 --locked
fi
# The lint gate, before anything slow: formatting, then clippy on every target (tests and
# benches included) with warnings as errors. rustup installs the components where missing;
# a toolchain without rustup (Debian's cargo) needs its rustfmt and clippy packages.
if command -v rustup >/dev/null; then
    rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed | grep -q '^clippy' || rustup component add clippy
fi
cargo fmt --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo build --locked --workspace --all-targets
# fuzz/ is its own workspace: build every target and run each a few seconds on its seeds.
install/fuzz-check.sh
# Benches (benches/, `harness = false`) are built above but only run by `cargo bench`.
# A test whose prerequisite (root, cargo-deb, puppet-lint) is missing fails here instead of
# passing without testing anything (tests/support/prereq.rs).
export P2PU_TESTS_STRICT=1
# The pure formats crate first (seconds; no root, no engines), then p2pu. Every binary runs
# even after one fails, so one CI run names every failing test.
cargo test --locked -p p2pu-formats
# The tests that mostly sleep on the wall clock (a maintenance window opens at a minute
# boundary; a heartbeat goes stale after its window) run in a second lane beside the rest:
# 2 cores idle through them otherwise. Its output follows the first lane's.
sleepers=(maintenance_window heartbeat)
others=()
for file in tests/*.rs; do
    name=$(basename "$file" .rs)
    [[ " ${sleepers[*]} " == *" $name "* ]] || others+=(--test "$name")
done
# Their binaries run directly: two cargo processes would queue on the build directory's lock.
lane=$(mktemp)
trap 'rm -f "$lane"' EXIT
mapfile -t binaries < <(cargo test --locked --no-run $(printf -- '--test %s ' "${sleepers[@]}") 2>&1 |
    sed -n 's/^ *Executable .*(\(target\/[^)]*\))$/\1/p')
if [[ ${#binaries[@]} -ne ${#sleepers[@]} ]]; then
    echo "p2pu: expected ${#sleepers[@]} test binaries for ${sleepers[*]}, found: ${binaries[*]}" >&2
    exit 1
fi
(
    lane_status=0
    for binary in "${binaries[@]}"; do
        echo "     Running $binary"
        "$binary" --test-threads=2 || lane_status=$?
    done
    exit "$lane_status"
) >"$lane" 2>&1 &
sleeping=$!
status=0
cargo test --locked --no-fail-fast --lib --bins "${others[@]}" -- --test-threads=2 || status=$?
wait "$sleeping" || status=$?
echo "p2pu: the second lane (${sleepers[*]}):"
cat "$lane"
exit "$status"
