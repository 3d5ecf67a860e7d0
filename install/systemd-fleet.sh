#!/usr/bin/env bash
# The systemd test fleet's base image: a Debian bookworm tree made with debootstrap (minbase,
# systemd as init, dbus, iproute2 and the engines p2pu drives), built once and cached. Each node
# of tests/systemd_fleet.rs is a copy of it, booted with its own systemd as PID 1 in
# systemd-nspawn inside a network namespace of the test's own.
#
#   install/systemd-fleet.sh image     prints the cached tree's path, building it first if needed
#   install/systemd-fleet.sh packages  installs debootstrap and systemd-container on this machine
#
# The cache lives under $P2PU_TEST_CACHE (default /var/cache/p2pu-test), keyed by the package
# list and this script, so CI on the same machine kind reuses it; the .debs debootstrap fetched
# stay in $P2PU_TEST_CACHE/archives, so a rebuild downloads nothing. Building needs the
# Debian archive (the host's, not the containers': they stay on their private network).
set -euo pipefail
say() { echo "p2pu-systemd-fleet: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

suite=bookworm
mirror=${P2PU_TEST_MIRROR:-http://deb.debian.org/debian}
cache=${P2PU_TEST_CACHE:-/var/cache/p2pu-test}
# systemd-sysv: /sbin/init for nspawn -b; the engines are those install.sh would install.
include=systemd,systemd-sysv,dbus,iproute2,serf,transmission-daemon,transmission-cli,puppet

packages() {
    local p missing=()
    for p in debootstrap systemd-container; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        say "installing ${missing[*]} from Debian"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

# The tree, once debootstrap made it, made fit to be copied into many containers.
finish_tree() {
    local tree=$1
    # Empty: each boot of each copy gets its own machine id, as a flashed device would.
    : >"$tree/etc/machine-id"
    # The build host's name: each container gets its machine name instead (nspawn --machine).
    rm -f "$tree/etc/hostname"
    rm -f "$tree/var/lib/dbus/machine-id"
    # The .debs are kept in the archives cache, not in every copy.
    rm -f "$tree"/var/cache/apt/archives/*.deb "$tree"/var/cache/apt/*.bin
    # Debian's engine packages enable their services; on a node `p2pu init` decides, and before
    # it ran the stock transmission-daemon and serf have nothing to do.
    chroot "$tree" systemctl disable serf.service transmission-daemon.service >/dev/null 2>&1 || true
    # The container console: a getty there would only wait for a terminal nobody attaches.
    chroot "$tree" systemctl mask console-getty.service >/dev/null 2>&1 || true
}

image() {
    packages
    command -v debootstrap >/dev/null || die "debootstrap is missing"
    local key
    key=$( (echo "$suite $include"; declare -f finish_tree) | sha256sum | cut -c1-16)
    local tree=$cache/$suite-$key
    mkdir -p "$cache/archives"
    exec 9>"$cache/lock"
    flock 9
    if [[ -f $tree/.p2pu-complete ]]; then
        echo "$tree"
        return
    fi
    local work=$tree.partial
    rm -rf "$work"
    say "building $tree with debootstrap (about a minute; the .debs are cached in $cache/archives)"
    local start=$SECONDS
    debootstrap --variant=minbase --cache-dir="$cache/archives" --include="$include" \
        "$suite" "$work" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $cache/debootstrap.log"
    finish_tree "$work"
    touch "$work/.p2pu-complete"
    mv "$work" "$tree"
    # Older trees of other package lists are of no further use.
    find "$cache" -maxdepth 1 -name "$suite-*" ! -name "$suite-$key" -exec rm -rf {} +
    say "built $tree in $((SECONDS - start)) s ($(du -sm "$tree" | cut -f1) MiB)"
    echo "$tree"
}

case ${1:-} in
image) image ;;
packages) packages ;;
*) die "usage: $0 image|packages" ;;
esac
