#!/usr/bin/env bash
# Checks every device tree cellvm generates against the Linux kernel's own
# binding schemas, as `make dtbs_check` does: the base tree of every cell in
# cells/, and the tree after each device in cells/devices/ is attached
# (`cellvm dtb --with`, planned exactly as a runtime attach), and the base
# tree of every arm64 cell in cells/arm64/ (the static aarch64 cellvm under
# qemu-aarch64). Uses dtschema
# from PyPI (a venv in the cache) and the bindings of the guest kernel tree
# the build already has. Any warning not listed in
# scripts/dt-schema-exceptions.txt fails the run.
#
# Usage: scripts/check-dt-schema.sh [DTB...]   (default: the trees above)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

DTSCHEMA_VERSION=2026.9
apt_ensure python3-venv device-tree-compiler
venv="$CELLVM_CACHE/dtschema-$DTSCHEMA_VERSION"
# A venv cannot be moved (its scripts name its path): build it in place and
# mark it complete.
if [ ! -e "$venv/.complete" ]; then
    log "installing dtschema $DTSCHEMA_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "dtschema==$DTSCHEMA_VERSION" || die "pip install dtschema failed"
    touch "$venv/.complete"
fi

tree="$("$REPO_ROOT/scripts/build-guest-kernel.sh" --print-tree)"
bindings="$tree/Documentation/devicetree/bindings"
need_file "$bindings"
schema="$CELLVM_CACHE/dt-schema-$(printf '%s %s' "$DTSCHEMA_VERSION" "$tree" | sha256sum | cut -c1-16).json"
if [ ! -s "$schema" ]; then
    log "building the binding schema from $bindings (about a minute, cached)"
    "$venv/bin/dt-mk-schema" -j "$bindings" >"$schema.tmp" 2>"$schema.log" ||
        die "dt-mk-schema failed: see $schema.log"
    mv "$schema.tmp" "$schema"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
dtbs=("$@")
if [ "${#dtbs[@]}" -eq 0 ]; then
    cargo build --quiet --locked --bin cellvm
    cellvm="$REPO_ROOT/target/debug/cellvm"
    for cell in cells/*.toml; do
        name="$(basename "$cell" .toml)"
        "$cellvm" dtb "$cell" -o "$work/$name.dtb"
        dtbs+=("$work/$name.dtb")
    done
    for dev in cells/devices/*.toml; do
        name="linux-demo+$(basename "$dev" .toml)"
        "$cellvm" dtb cells/linux-demo.toml --with "$dev" -o "$work/$name.dtb"
        dtbs+=("$work/$name.dtb")
    done
    # The arm64 cells' trees, from the static aarch64 cellvm run here under
    # qemu-aarch64 (scripts/setup.sh --arch arm64 builds both).
    arm64_cellvm="$TARGET_DIR/arm64/aarch64-unknown-linux-gnu/release/cellvm"
    [ -x "$arm64_cellvm" ] ||
        die "no $arm64_cellvm for the arm64 cells' trees: run scripts/build-cellvm-static.sh --arch arm64"
    apt_ensure qemu-user
    for cell in cells/arm64/*.toml; do
        name="arm64-$(basename "$cell" .toml)"
        qemu-aarch64 "$arm64_cellvm" dtb "$cell" -o "$work/$name.dtb" ||
            die "cellvm dtb $cell (aarch64, under qemu-aarch64) failed"
        dtbs+=("$work/$name.dtb")
    done
fi

log "dt-validate: ${#dtbs[@]} trees"
"$venv/bin/dt-validate" -s "$schema" "${dtbs[@]}" >"$work/out" 2>&1 || true
# Warning lines name the tree and the node; "from schema" lines follow them.
grep -v '^[[:space:]]*from schema' "$work/out" | sed "s|^$work/||" >"$work/warnings" || true
grep -v '^#' scripts/dt-schema-exceptions.txt | grep -v '^$' >"$work/allowed"
if grep -v -E -f "$work/allowed" "$work/warnings" >"$work/unexpected"; then
    cat "$work/unexpected" >&2
    die "$(wc -l <"$work/unexpected") binding schema warning(s) above are not in scripts/dt-schema-exceptions.txt"
fi
log "clean: $(wc -l <"$work/warnings") warning(s), all listed exceptions, in ${#dtbs[@]} trees"
