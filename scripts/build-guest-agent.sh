#!/usr/bin/env bash
# Build the cellvm guest agent kernel module (guest/agent/) against the cached
# guest kernel tree (scripts/build-guest-kernel.sh builds it if missing), and
# beside it cellvm_msitest.ko, the test-only MSI-X check of the PCI test
# device (the nested pci scenario loads it; docs/pci.md).
#
# Output: build/guest/cellvm_agent.ko, build/guest/cellvm_msitest.ko
# Cache:  skipped when build/guest/cellvm_agent.ko.key matches
#         sha256(guest/agent/* + this script + the kernel tree's path and
#         .config); the module is built in build/guest/agent-build/ (a copy of
#         the sources), never in the source directory.
#
# Usage: scripts/build-guest-agent.sh [--force] [--arch x86_64|arm64]
#   --arch arm64  against the arm64 guest kernel tree
#                 (scripts/build-guest-kernel.sh --arch arm64), cross-built
#                 with ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-; output
#                 build/guest-arm64/cellvm_agent.ko (built in
#                 build/guest-arm64/agent-build/)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

force=0 # set by parse_args
parse_args --force=force -- "$@"

if [ "$ARCH" = arm64 ]; then
    kernel_args=(--arch arm64)
    make_arch=(ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-)
    out_dir="$BUILD_DIR/guest-arm64"
    apt_ensure gcc-aarch64-linux-gnu
    need_cmd aarch64-linux-gnu-gcc
else
    kernel_args=()
    make_arch=()
    out_dir="$BUILD_DIR/guest"
fi
rel_ko="${out_dir#"$REPO_ROOT"/}/cellvm_agent.ko"

SRC="$REPO_ROOT/guest/agent"
modules=(cellvm_agent cellvm_msitest)
sources=()
for m in "${modules[@]}"; do sources+=("$SRC/$m.c"); done
need_file "${sources[@]}" "$SRC/Makefile"
need_cmd make gcc sha256sum

tree="$("$REPO_ROOT/scripts/build-guest-kernel.sh" "${kernel_args[@]}" --print-tree)" ||
    die "no guest kernel tree (scripts/build-guest-kernel.sh ${kernel_args[*]}${kernel_args[*]:+ }--print-tree failed)"
[ -n "$tree" ] || die "scripts/build-guest-kernel.sh ${kernel_args[*]}${kernel_args[*]:+ }--print-tree printed nothing"
need_file "$tree/.config" "$tree/Module.symvers" "$tree/Makefile"
grep -qx 'CONFIG_MODULES=y' "$tree/.config" || die "guest kernel $tree has no CONFIG_MODULES"
grep -qx 'CONFIG_OF_OVERLAY=y' "$tree/.config" || die "guest kernel $tree has no CONFIG_OF_OVERLAY"

ko="$out_dir/cellvm_agent.ko"
key="$( { cat "${sources[@]}" "$SRC/Makefile" "$0" "$tree/.config"; printf '%s\n' "$tree"; } | sha256sum | cut -c1-16)"
if [ "$force" -eq 0 ] && [ -f "$ko" ] && [ -f "$out_dir/cellvm_msitest.ko" ] && [ "$(cat "$ko.key" 2>/dev/null)" = "$key" ]; then
    log "cached: $rel_ko (key $key)"
    exit 0
fi

mkdir -p "$out_dir"
work="$out_dir/agent-build"
rm -rf "$work"
mkdir -p "$work"
cp "${sources[@]}" "$SRC/Makefile" "$work/"
start="$(now)"
log "building ${modules[*]/%/.ko} against $tree"
if ! make -C "$tree" "${make_arch[@]}" M="$work" W=1 modules >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    die "guest module build failed (log above, also in $work/build.log)"
fi
for m in "${modules[@]}"; do need_file "$work/$m.ko"; done
# Warnings are errors here: the module must build cleanly.
if grep -E 'warning:' "$work/build.log" >&2; then
    die "guest modules built with warnings (above); fix them"
fi
for m in "${modules[@]}"; do
    cp "$work/$m.ko" "$out_dir/$m.ko.tmp"
    mv "$out_dir/$m.ko.tmp" "$out_dir/$m.ko"
done
printf '%s\n' "$key" >"$ko.key"
log "$rel_ko ($(stat -c %s "$ko") bytes) and cellvm_msitest.ko, $(elapsed_since "$start") s"
