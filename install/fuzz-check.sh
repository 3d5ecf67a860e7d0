#!/usr/bin/env bash
# Builds every fuzz target (fuzz/ is its own workspace, which no other build compiles) and runs
# each for a few seconds on its seeds: a target that no longer builds, or that crashes at once
# on its own seeds, fails here. The long runs are manual (docs/SECURITY.md, "Fuzzing").
#
# With cargo-fuzz and a nightly toolchain, the targets are built as `cargo fuzz` builds them
# (AddressSanitizer). Without them (a fresh Debian machine with stable rustup only) they are
# built on stable with the same coverage instrumentation but no sanitizer, and this says so.
#
# P2PU_FUZZ_SECS: seconds per target (default 4: 20 targets in about 100 s).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${P2PU_FUZZ_SECS:-4}"
# The fuzz workspace's release build takes minutes on 2 cores; as root (CI) it is kept in
# /var/cache/p2pu-test, beside the booted fleet's tree, for the next clone's run.
cache="${P2PU_FUZZ_TARGET_DIR:-}"
if [[ -z "$cache" && $(id -u) == 0 ]]; then
    cache=/var/cache/p2pu-test/fuzz-target
fi
target_dir="${cache:-target}"
mkdir -p "$target_dir"
host="$(rustc -vV | sed -n 's/^host: //p')"
mapfile -t targets < <(sed -n '/^\[\[bin\]\]/{n;s/^name = "\(.*\)"$/\1/p}' Cargo.toml)
if ((${#targets[@]} == 0)); then
    echo "p2pu: no fuzz targets found in fuzz/Cargo.toml" >&2
    exit 1
fi

if cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly fuzz build --release --target-dir "$target_dir"
    bin="$target_dir/$host/release"
else
    cat >&2 <<'WARN'

*** p2pu: cargo-fuzz or a nightly toolchain is missing: building the fuzz targets on STABLE,
*** with coverage instrumentation but WITHOUT AddressSanitizer. For the sanitized build:
***     rustup toolchain install nightly && cargo install cargo-fuzz

WARN
    # What cargo-fuzz passes for `--sanitizer none`; all of it is stable. `--target` keeps
    # the flags off build scripts and proc macros.
    export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
    cargo build --locked --release --bins --target "$host" --target-dir "$target_dir/stable"
    bin="$target_dir/stable/$host/release"
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
    corpus="$scratch/$target"
    mkdir "$corpus"
    dirs=("$corpus")
    [[ -d "seeds/$target" ]] && dirs+=("seeds/$target")
    echo "p2pu: fuzzing $target for ${secs} s" >&2
    mkdir -p "artifacts/$target"
    if ! "$bin/$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$target/" "${dirs[@]}" >"$scratch/$target.log" 2>&1; then
        tail -n 40 "$scratch/$target.log" >&2
        echo "p2pu: fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^(#[0-9]+\s+DONE|Done [0-9]+ runs)' "$scratch/$target.log" | tail -n 1 >&2 || true
done
