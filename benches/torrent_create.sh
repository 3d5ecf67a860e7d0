#!/usr/bin/env bash
# Times `p2pu torrent create` against mktorrent (all threads) and transmission-create on one
# 1 GiB file in the page cache, best of 3 each, and compares p2pu with the machine's SHA-1
# ceiling (cores x single-core OpenSSL SHA-1). Also reports p2pu's peak RSS.
# Usage: benches/torrent_create.sh [SIZE_MIB]   (CPU heavy: run it on an idle machine)
# Note: on a cached file every tool also pays the kernel's page-cache cost (~0.15-0.2 s of CPU
# per GiB here, for read() and for mmap with MAP_POPULATE alike), so the SHA-1 ceiling below is
# an upper bound that reading cached data cannot reach.
set -euo pipefail

size_mib=${1:-1024}
root=$(cd "$(dirname "$0")/.." && pwd)
cores=$(nproc)
work=$(mktemp -d "${TMPDIR:-/tmp}/p2pu-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

for tool in mktorrent transmission-create openssl /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

echo "building p2pu (release)..." >&2
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin p2pu
p2pu="$root/target/release/p2pu"

echo "creating a ${size_mib} MiB file and warming the page cache..." >&2
head -c "$((size_mib << 20))" /dev/urandom >"$work/big.bin"
cat "$work/big.bin" >/dev/null

# The piece size p2pu picks automatically, so all three hash the same pieces.
piece_kib=$("$p2pu" torrent create "$work/big.bin" -o "$work/probe.torrent" --reproducible -f |
    awk '/^pieces:/ { n = $4; u = $5; print (u == "MiB" ? n * 1024 : n) }')
piece_kib=${piece_kib%.*}
log2=$(awk -v k="$piece_kib" 'BEGIN { printf "%d", log(k * 1024) / log(2) + 0.5 }')

# best_of_3 CMD...: prints the best wall time of three runs, in seconds.
best_of_3() {
    local best="" start end t
    for _ in 1 2 3; do
        rm -f "$work"/[pmt].torrent
        start=$(date +%s%N)
        "$@" >/dev/null 2>&1
        end=$(date +%s%N)
        t=$(( (end - start) / 1000 ))
        if [[ -z $best || $t -lt $best ]]; then best=$t; fi
    done
    awk -v us="$best" 'BEGIN { printf "%.3f", us / 1e6 }'
}

p2pu_s=$(best_of_3 "$p2pu" torrent create "$work/big.bin" -o "$work/p.torrent" --reproducible -f)
mk_s=$(best_of_3 mktorrent -t "$cores" -l "$log2" -o "$work/m.torrent" "$work/big.bin")
tc_s=$(best_of_3 transmission-create -s "$piece_kib" -o "$work/t.torrent" "$work/big.bin")
rss_kib=$( { /usr/bin/time -v "$p2pu" torrent create "$work/big.bin" -o "$work/p.torrent" \
    --reproducible -f >/dev/null; } 2>&1 | awk -F': ' '/Maximum resident set size/ { print $2 }')
sha1_kbps=$(openssl speed -evp sha1 -seconds 3 -bytes 1048576 2>/dev/null | awk '$1 == "sha1" { print $2 }')
sha1_kbps=${sha1_kbps%k}

awk -v size="$size_mib" -v cores="$cores" -v piece="$piece_kib" -v p="$p2pu_s" -v mk="$mk_s" \
    -v tc="$tc_s" -v rss="$rss_kib" -v sha="$sha1_kbps" 'BEGIN {
    bytes = size * 1048576
    ceiling = cores * sha * 1000 / 1e6
    printf "input: %d MiB in the page cache, piece size %d KiB, %d cores\n", size, piece, cores
    printf "%-34s %8s %10s\n", "", "seconds", "MB/s"
    printf "%-34s %8.2f %10.0f\n", "p2pu torrent create", p, bytes / p / 1e6
    printf "%-34s %8.2f %10.0f\n", "mktorrent -t " cores, mk, bytes / mk / 1e6
    printf "%-34s %8.2f %10.0f\n", "transmission-create", tc, bytes / tc / 1e6
    printf "%-34s %8s %10.0f\n", "SHA-1 ceiling (cores x openssl)", "", ceiling
    printf "p2pu vs mktorrent:        %.2fx  (target >= 1.10x)\n", mk / p
    printf "p2pu vs transmission:     %.2fx\n", tc / p
    printf "p2pu vs SHA-1 ceiling:    %.0f%%  (target >= 90%%)\n", 100 * bytes / p / 1e6 / ceiling
    printf "p2pu peak RSS:            %.1f MiB  (target < 64 MiB)\n", rss / 1024
}'
