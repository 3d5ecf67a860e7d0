#!/usr/bin/env bash
# p2pu bootstrap installer. Two modes:
#
#   install.sh [options]             set up THIS machine (fresh Debian bookworm, amd64/arm64, root):
#                                    engines from Debian, p2pu, the p2pu user, the node's key, then
#                                    `p2pu init`, which starts the services.
#   install.sh --root DIR [options]  install into the root file system at DIR (a debootstrap tree
#                                    or a mounted image) for an image build: starts nothing and
#                                    touches nothing outside DIR; node-specific work (node name,
#                                    address, per-node secrets, the node key) is left to a
#                                    first-boot unit on the device.
#
# Re-running it is safe: every step checks what is already there. It stops at the first failure
# and says which step failed. Run with --help for the options.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: install/install.sh [--root DIR] [options]

  --config FILE        site config to install (default: keep the installed one, else the
                       example config install/site.example.toml)
  --deb FILE           install p2pu from this .deb (built with install/build-deb.sh)
  --binary FILE        install this already-built p2pu binary
                       (default without --deb/--binary: build it with `cargo build --release`)
  --signing-key FILE   install this node signing key (signing.key; its signing.pub is taken
                       from beside it) instead of generating one
  --trust FILE         trust this public key (the fleet operator's signing.pub); repeatable
  --no-systemd         write files only, start nothing (containers, machines without systemd)
  --root DIR           image build: install into the root file system at DIR
  --with-engines       with --root: install the engines into DIR with `chroot DIR apt-get`
                       (DIR must be a complete debootstrap tree with network access)
  --host-binary FILE   with --root: a p2pu that runs on this machine, when the one installed
                       into DIR is built for another architecture
  -h, --help           this help
EOF
}

engines=(serf transmission-daemon transmission-cli puppet)
src=$(cd "$(dirname "$0")/.." && pwd)
root=""
config=""
deb=""
binary=""
signing_key=""
trust=()
no_systemd=0
with_engines=0
host_binary=""

say() { echo "p2pu-install: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}
step_name="starting"
step() {
    step_name=$1
    say "== $1"
}
trap 'rc=$?; if ((rc != 0)); then say "failed during: $step_name (exit $rc). Fix the cause shown above and re-run: every step is safe to repeat."; fi' EXIT

need_arg() { (($# >= 2)) && [[ -n $2 ]] || die "$1 needs a value (see --help)"; }
while (($#)); do
    case $1 in
    --root) need_arg "$@"; root=$2; shift ;;
    --config) need_arg "$@"; config=$2; shift ;;
    --deb) need_arg "$@"; deb=$2; shift ;;
    --binary) need_arg "$@"; binary=$2; shift ;;
    --signing-key) need_arg "$@"; signing_key=$2; shift ;;
    --trust) need_arg "$@"; trust+=("$2"); shift ;;
    --host-binary) need_arg "$@"; host_binary=$2; shift ;;
    --no-systemd) no_systemd=1 ;;
    --with-engines) with_engines=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
    esac
    shift
done

absolute() { [[ $1 == /* ]] && echo "$1" || echo "$PWD/$1"; }

step "checking the machine and the options"
((EUID == 0)) || die "run me as root (I install packages, a system user and files under /etc)"
[[ -z $deb || -z $binary ]] || die "--deb and --binary exclude each other"
for f in "$config" "$deb" "$binary" "$signing_key" "$host_binary" ${trust[@]+"${trust[@]}"}; do
    [[ -z $f || -f $f ]] || die "$f: no such file"
done
[[ -z $config ]] || config=$(absolute "$config")
[[ -z $deb ]] || deb=$(absolute "$deb")
[[ -z $binary ]] || binary=$(absolute "$binary")
if [[ -n $root ]]; then
    [[ -d $root ]] || die "--root $root: not a directory"
    root=$(cd "$root" && pwd)
    [[ $root != / ]] || die "--root / would be this machine: leave out --root instead"
    ((no_systemd == 0)) || die "--no-systemd is for this machine; --root never starts anything"
else
    ((with_engines == 0)) || die "--with-engines goes with --root"
    [[ -z $host_binary ]] || die "--host-binary goes with --root"
    [[ -f /etc/debian_version ]] || die "this is not Debian: install serf, transmission-daemon, transmission-cli and puppet yourself, then run p2pu init"
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    [[ $codename == bookworm ]] || say "warning: this is Debian ${codename:-(unknown)}; p2pu is tested on bookworm"
    case $(dpkg --print-architecture) in
    amd64 | arm64) ;;
    *) say "warning: $(dpkg --print-architecture) is untested; amd64 and arm64 are" ;;
    esac
fi
# $root is empty on this machine, so "$root$path" is the path on the target system.
target() { echo "$root$1"; }

# Installs $2 at $3 with mode $1 unless it is already there; reports what it did.
put() {
    local mode=$1 from=$2 to=$3
    if [[ -f $to ]] && cmp -s "$from" "$to"; then
        say "unchanged $to"
    else
        install -D -m "$mode" "$from" "$to"
        say "installed $to"
    fi
}

missing_engines() {
    local admindir=${root:+--admindir=$root/var/lib/dpkg}
    local p
    for p in "${engines[@]}"; do
        dpkg-query ${admindir:+"$admindir"} -W -f='${Status}' "$p" 2>/dev/null |
            grep -q "install ok installed" || echo "$p"
    done
}

step "installing the engines (${engines[*]})"
mapfile -t missing < <(missing_engines)
if ((${#missing[@]} == 0)); then
    say "already installed"
elif [[ -z $root ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
elif ((with_engines)); then
    [[ -x $root/usr/bin/apt-get ]] || die "$root has no apt-get: --with-engines needs a complete debootstrap tree"
    # policy-rc.d 101: the packages' maintainer scripts must not start daemons on the build host.
    policy=$root/usr/sbin/policy-rc.d
    [[ ! -e $policy ]] || die "$policy exists; remove it (or install the engines yourself)"
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    if ! chroot "$root" env DEBIAN_FRONTEND=noninteractive sh -c \
        "apt-get update -q && apt-get install -y -q --no-install-recommends ${missing[*]}"; then
        rm -f "$policy"
        die "apt-get in $root failed: does the tree have /proc, /dev and a working /etc/resolv.conf?"
    fi
    rm -f "$policy"
else
    say "warning: the image still needs these packages: ${missing[*]}"
    say "warning: install them into the image (or re-run with --with-engines on a debootstrap tree)"
fi

step "installing p2pu"
bin_dst=$(target /usr/bin/p2pu)
if [[ -n $deb ]]; then
    if [[ -z $root ]]; then
        dpkg -i "$deb"
    elif [[ -f $root/var/lib/dpkg/status ]] && ((${#missing[@]} == 0 || with_engines)); then
        dpkg --root="$root" -i "$deb"
    else
        # A bare tree has no dpkg database to register the package in.
        dpkg -x "$deb" "$root"
        say "unpacked $deb into $root (not registered with dpkg: the tree has no dpkg database or lacks the engines)"
    fi
else
    if [[ -z $binary ]]; then
        [[ -f $src/Cargo.toml ]] || die "no --deb or --binary given and $src is not p2pu's source tree"
        command -v cargo >/dev/null || die "cargo is missing: install a Rust toolchain (rustup), or pass --deb or --binary"
        say "building p2pu with cargo (a few minutes on a small machine)"
        (cd "$src" && cargo build --release --locked)
        binary=$src/target/release/p2pu
    fi
    put 0755 "$binary" "$bin_dst"
    # The same shared files the .deb ships: templates and the Puppet module.
    for d in templates puppet; do
        [[ -d $src/$d ]] || continue
        while IFS= read -r -d '' t; do
            put 0644 "$t" "$(target /usr/share/p2pu)/${t#"$src/"}"
        done < <(find "$src/$d" -type f -print0 | sort -z)
    done
    [[ ! -f $src/install/site.example.toml ]] ||
        put 0644 "$src/install/site.example.toml" "$(target /usr/share/doc/p2pu/site.example.toml)"
fi

# The p2pu that runs here: the installed one, unless it is for another architecture.
if "$bin_dst" --version >/dev/null 2>&1; then
    p2pu=$bin_dst
elif [[ -n $host_binary ]]; then
    p2pu=$host_binary
elif [[ -n $root ]] && command -v p2pu >/dev/null; then
    p2pu=$(command -v p2pu)
else
    die "$bin_dst does not run on this machine (another architecture?): pass --host-binary with a p2pu built for this machine"
fi
if [[ -z $deb ]]; then
    tmp=$(mktemp)
    "$p2pu" completions bash >"$tmp" && put 0644 "$tmp" "$(target /usr/share/bash-completion/completions/p2pu)"
    "$p2pu" completions zsh >"$tmp" && put 0644 "$tmp" "$(target /usr/share/zsh/vendor-completions/_p2pu)"
    rm -f "$tmp"
fi

step "creating the p2pu system user and group"
if [[ -n $root && ! -f $root/etc/passwd ]]; then
    # A bare tree (not debootstrap'ed): give systemd-sysusers the files it edits.
    mkdir -p "$root/etc"
    echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
    echo "root:x:0:" >"$root/etc/group"
    echo "root:*::0:99999:7:::" >"$root/etc/shadow"
    echo "root:*::" >"$root/etc/gshadow"
    chmod 0640 "$root/etc/shadow" "$root/etc/gshadow"
    say "warning: $root had no etc/passwd: created a minimal one (root only)"
fi
sysusers=$(target /usr/lib/sysusers.d/p2pu.conf)
# The .deb ships this file (and its postinst already ran systemd-sysusers); a --binary install
# gets the same file, so the user has one definition whichever way p2pu arrived.
[[ -n $deb ]] || put 0644 "$src/install/deb/p2pu.sysusers" "$sysusers"
command -v systemd-sysusers >/dev/null || die "systemd-sysusers is missing (Debian's systemd package)"
passwd_has() { grep -q "^$2:" "$(target "/etc/$1")" 2>/dev/null; }
had_group=0 had_user=0
! passwd_has group p2pu || had_group=1
! passwd_has passwd p2pu || had_user=1
systemd-sysusers ${root:+--root "$root"} "$sysusers"
passwd_has passwd p2pu || die "systemd-sysusers did not create the p2pu user from $sysusers"
((had_group)) && say "group p2pu exists" || say "created group p2pu"
((had_user)) && say "user p2pu exists" || say "created user p2pu"

step "installing the site config"
if [[ -z $config ]]; then
    for c in "$(target /etc/p2pu/site.toml)" "$src/install/site.example.toml" \
        "$(target /usr/share/doc/p2pu/site.example.toml)"; do
        if [[ -f $c ]]; then
            config=$c
            break
        fi
    done
    [[ -n $config ]] || die "no site config: pass --config FILE"
fi
"$p2pu" config-get --config "$config" node.role >/dev/null ||
    die "$config is not a valid site config (see the error above)"
get() { "$p2pu" config-get --config "$config" "$1"; }
config_dir=$(get paths.config_dir)
if [[ -z $root ]]; then
    # On this machine init reads the config where it stays; in an image init copies it.
    installed=$config_dir/site.toml
    if [[ $config != "$installed" ]]; then
        put 0600 "$config" "$installed"
        config=$installed
    else
        say "using $installed"
    fi
else
    say "using $config (init installs it as $config_dir/site.toml in the image)"
fi

step "installing the node's signing key and the trusted keys"
key=$(get agent.signing_key)
trusted=$(get agent.trusted_keys_dir)
key_dir=$(dirname "$key")
[[ $(basename "$key") == signing.key ]] ||
    die "agent.signing_key must be named signing.key (p2pu keygen writes signing.key and signing.pub), got $key"
if [[ -n $signing_key ]]; then
    put 0600 "$signing_key" "$(target "$key")"
    pub=$(dirname "$signing_key")/signing.pub
    if [[ -f $pub ]]; then
        put 0644 "$pub" "$(target "$key_dir/signing.pub")"
    else
        say "warning: no $pub beside $signing_key: only the secret key was installed"
    fi
    chmod 0700 "$(target "$key_dir")"
elif [[ -f $(target "$key") ]]; then
    say "node key $(target "$key") exists"
elif [[ -z $root ]]; then
    install -d -m 0700 "$key_dir"
    "$p2pu" keygen --out "$key_dir" >/dev/null
    say "generated node key $key"
else
    systemd_dir=$(get paths.systemd_dir)
    dropin=$(mktemp)
    cat >"$dropin" <<EOF
# Installed by p2pu's install.sh --root: each device makes its own node key on first boot,
# so no two devices made from one image share a secret key.
[Service]
ExecStartPre=/bin/sh -c 'test -e $key || exec /usr/bin/p2pu keygen --out $key_dir'
EOF
    put 0644 "$dropin" "$(target "$systemd_dir/p2pu-firstboot.service.d/keygen.conf")"
    rm -f "$dropin"
    say "the node key is generated on the device's first boot"
fi
for t in ${trust[@]+"${trust[@]}"}; do
    "$p2pu" key trust "$t" --dir "$(target "$trusted")"
done
((${#trust[@]})) || say "no --trust given: trust the operator's key later with p2pu key trust FILE --dir $trusted"

if [[ -z $root ]]; then
    step "running p2pu init --config $config"
    args=(init --config "$config")
    ((no_systemd == 0)) || args+=(--no-systemd)
    "$p2pu" "${args[@]}"
    say "done: this machine is a p2pu node. Check it with: p2pu status"
else
    step "running p2pu init --config $config --root $root"
    "$p2pu" init --config "$config" --root "$root" --binary /usr/bin/p2pu
    say "done: $root is ready; the device completes its set-up on first boot"
fi
