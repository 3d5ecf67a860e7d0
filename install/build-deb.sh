#!/usr/bin/env bash
# Builds target/debian/p2pu_<version>_<arch>.deb with cargo-deb: the binary, the templates, the
# Puppet module, the example config, the man pages and bash/zsh/fish completions.
#
#   install/build-deb.sh                      for this machine's architecture
#   install/build-deb.sh --target aarch64-unknown-linux-gnu
#                                             arm64 from amd64: needs `rustup target add
#                                             aarch64-unknown-linux-gnu` and Debian's
#                                             gcc-aarch64-linux-gnu (the linker and strip)
# --no-build packages what is already built (target/<profile>/p2pu). Other arguments
# (--profile P, --fast, -o DIR, ...) are passed to cargo deb.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "p2pu-build-deb: $*" >&2; }
target=""
profile=release
build=1
pass=()
while (($#)); do
    case $1 in
    --target) target=$2; pass+=("$1" "$2"); shift ;;
    --profile) profile=$2; pass+=("$1" "$2"); shift ;;
    --no-build) build=0 ;;
    *) pass+=("$1") ;;
    esac
    shift
done
if ! cargo deb --version >/dev/null 2>&1; then
    say "cargo-deb is missing: cargo install cargo-deb --locked (a few minutes)"
    exit 1
fi
if [[ $target == aarch64-unknown-linux-gnu ]]; then
    command -v aarch64-linux-gnu-gcc >/dev/null ||
        { say "the arm64 linker is missing: apt-get install gcc-aarch64-linux-gnu"; exit 1; }
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}
fi

if ((build)); then
    say "building p2pu (${target:-native}, profile $profile)"
    cargo build --locked --profile "$profile" ${target:+--target "$target"}
fi
# The man page and completions come from the binary's own clap definition; a cross-built binary
# cannot run here, so they come from a host build of the same source then.
dir=$([[ $profile == dev ]] && echo debug || echo "$profile")
if [[ -z $target ]]; then
    p2pu=(target/$dir/p2pu)
else
    ((build == 0)) || cargo build --locked
    p2pu=(target/debug/p2pu)
fi
assets=target/deb-assets
mkdir -p "$assets"
# p2pu(1), a page per command (p2pu-submit(1), p2pu-fleet-status(1), ...) and site.toml(5).
rm -rf "$assets/man"
"${p2pu[@]}" man --out-dir "$assets/man" >/dev/null
gzip -9n "$assets/man"/*
"${p2pu[@]}" completions bash >"$assets/p2pu.bash"
"${p2pu[@]}" completions zsh >"$assets/_p2pu"
"${p2pu[@]}" completions fish >"$assets/p2pu.fish"
gzip -9n <install/deb/changelog >"$assets/changelog.gz"
rm -rf "$assets/scripts"
install/deb/scripts.sh "$assets/scripts"
install/deb/copyright.sh ${target:+--target "$target"} >"$assets/copyright"

say "packaging"
deb=$(cargo deb --no-build --locked ${pass[@]+"${pass[@]}"} | tail -n 1)
[[ -f $deb ]] || { say "cargo deb named no package ($deb)"; exit 1; }

# DEBIAN/md5sums, as dh_md5sums writes it: every regular file of the data part but conffiles
# (p2pu ships none), `<md5>  <path>` sorted by path. The package is unpacked and packed again
# by dpkg-deb, owned by root as cargo-deb made it.
say "adding md5sums"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb --raw-extract "$deb" "$work/p"
(cd "$work/p" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0r md5sum) >"$work/p/DEBIAN/md5sums"
chmod 0644 "$work/p/DEBIAN/md5sums"
level=()
for arg in ${pass[@]+"${pass[@]}"}; do [[ $arg == --fast ]] && level=(-z1); done
dpkg-deb --root-owner-group -Zxz ${level[@]+"${level[@]}"} --build "$work/p" "$deb" >/dev/null
echo "$deb"
