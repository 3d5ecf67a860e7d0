#!/usr/bin/env bash
# Installs the engines p2pu drives (and, with --test, what the test suite also needs) from
# Debian's archive. Safe to re-run.
set -euo pipefail
packages=(serf transmission-daemon transmission-cli puppet)
if [[ "${1:-}" == "--test" ]]; then
    packages+=(iproute2 iptables mktorrent puppet-lint time coturn lintian faketime)
    # tests/dashboard.rs drives `p2pu fleet serve` in headless Chromium over WebDriver.
    packages+=(chromium chromium-driver)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "p2pu: installing ${missing[*]} from Debian" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    # The NAT tests run coturn's binaries inside network namespaces; the packaged service
    # would only hold port 3478 on the host.
    if [[ " ${missing[*]} " == *" coturn "* ]] && command -v systemctl >/dev/null; then
        systemctl disable --now coturn 2>/dev/null || true
    fi
fi
if ! command -v cargo >/dev/null; then
    echo "p2pu: cargo is missing: install a Rust toolchain (rustup, or Debian's cargo on trixie)" >&2
    exit 1
fi
