#!/usr/bin/env bash
# Writes the .deb's maintainer scripts into DIR: install/deb/{postinst,prerm,postrm} with
# @P2PU_UNITS@ replaced by every unit `p2pu init` renders, the unit templates in
# templates/systemd (src/render.rs compiles exactly those in; its test
# `every_unit_template_is_one_init_renders` keeps the two the same). Timers come first, so a
# timer cannot start its service again while prerm stops the rest.
#
#   install/deb/scripts.sh DIR        (install/build-deb.sh runs it)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: install/deb/scripts.sh DIR}
units=$(
    cd templates/systemd
    # Unit names are plain words ([a-z0-9-.]); anything else would be a shell word in the
    # scripts, so it stops the build instead.
    for unit in *.timer *.service; do
        [[ $unit =~ ^[a-z0-9][a-z0-9.-]*$ ]] || { echo "odd unit name: $unit" >&2; exit 1; }
        printf '%s ' "$unit"
    done
)
units=${units% }
[[ -n $units ]] || { echo "no unit in templates/systemd" >&2; exit 1; }
mkdir -p "$out"
for script in postinst prerm postrm; do
    sed "s/@P2PU_UNITS@/$units/g" "install/deb/$script" >"$out/$script"
    chmod 0755 "$out/$script"
done
