#!/usr/bin/env bash
# Build the cellvm guest kernel (L2) from Debian's linux-source-6.12:
# `make tinyconfig` + guest/kernel.config, verified, built, cached.
#
# Output: build/guest/bzImage, build/guest/vmlinux (the same kernel
#         uncompressed, symbols stripped: cellvm boots it without the
#         bzImage's self-decompression, docs/config.md)
# Cache:  $CELLVM_CACHE/guest-kernel-<key>/  (key = sha256 of the config
#         fragment, this script and the linux-source package version)
#         containing linux/ (the configured and built tree, usable with
#         `make -C .../linux M=<module dir>`), bzImage and config.
#         The newest $CELLVM_KEEP_KERNELS (default 2) entries are kept.
#         build/guest/linux-tree links to the tree in use.
#
# Usage: scripts/build-guest-kernel.sh [--print-tree]
#   --print-tree  only print the cached kernel tree's path (building it first
#                 if needed); for building out-of-tree guest modules.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

print_tree=0
case "${1:-}" in
    "") ;;
    --print-tree) print_tree=1 ;;
    -h | --help)
        print_header
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
esac

SRC_PKG=linux-source-6.12
FRAGMENT="$REPO_ROOT/guest/kernel.config"
need_file "$FRAGMENT"

apt_ensure "$SRC_PKG" bc bison flex libelf-dev libssl-dev cpio kmod xz-utils make gcc libc6-dev
need_cmd make gcc flex bison bc tar xz sha256sum flock

src_version="$(pkg_version "$SRC_PKG")"
[ -n "$src_version" ] || die "$SRC_PKG is not installed"
tarball="$(find /usr/src -maxdepth 1 -name 'linux-source-6.12.tar.*' | head -n1)"
[ -n "$tarball" ] || die "no /usr/src/linux-source-6.12.tar.* (is $SRC_PKG installed correctly?)"

key="$( { cat "$FRAGMENT" "$0"; printf '%s\n' "$src_version"; } | sha256sum | cut -c1-16)"
entry="$CELLVM_CACHE/guest-kernel-$key"
mkdir -p "$CELLVM_CACHE"

# Serialise concurrent builds of the same entry.
exec 9>"$CELLVM_CACHE/guest-kernel.lock"
flock 9

# Checks .config in $1 against the fragment: every `CONFIG_X=v` must be
# present verbatim, every `# CONFIG_X is not set` must not be enabled.
verify_config() {
    local cfg="$1" bad=() line opt
    while IFS= read -r line; do
        case "$line" in
            CONFIG_*=*)
                grep -qxF -- "$line" "$cfg" || bad+=("$line (got: $(grep -E "^(# )?${line%%=*}[= ]" "$cfg" || echo 'absent'))")
                ;;
            "# CONFIG_"*" is not set")
                opt="${line#\# }"
                opt="${opt%% *}"
                if grep -qE "^$opt=" "$cfg"; then
                    bad+=("$line (got: $(grep -E "^$opt=" "$cfg"))")
                fi
                ;;
        esac
    done <"$FRAGMENT"
    if [ "${#bad[@]}" -gt 0 ]; then
        printf '[%s] ERROR: options from guest/kernel.config not honoured (missing dependency?):\n' "$SCRIPT_NAME" >&2
        printf '  %s\n' "${bad[@]}" >&2
        return 1
    fi
}

if [ -f "$entry/.complete" ]; then
    [ "$print_tree" -eq 1 ] || log "cached: $entry (key $key, $SRC_PKG $src_version)"
else
    log "building guest kernel: $SRC_PKG $src_version, key $key"
    start="$(now)"
    # Built in place (absolute paths end up in the tree's .cmd files);
    # .complete marks a finished entry, anything else is rebuilt.
    rm -rf "$entry"
    mkdir -p "$entry"
    trap 'rm -rf "$entry"' EXIT
    log "extracting $tarball"
    tar -xf "$tarball" -C "$entry"
    srcdir="$(find "$entry" -mindepth 1 -maxdepth 1 -type d -name 'linux-source-*' | head -n1)"
    [ -n "$srcdir" ] || die "unexpected tarball layout in $tarball"
    mv "$srcdir" "$entry/linux"
    tree="$entry/linux"
    jobs="$(jobs_n)"
    log "make tinyconfig + merge guest/kernel.config"
    make -C "$tree" -s tinyconfig >/dev/null
    (cd "$tree" && ./scripts/kconfig/merge_config.sh -m .config "$FRAGMENT" >"$entry/merge.log" 2>&1) ||
        { cat "$entry/merge.log" >&2; die "merge_config.sh failed"; }
    make -C "$tree" -s olddefconfig
    verify_config "$tree/.config" || die "kernel configuration incomplete: fix guest/kernel.config (add the missing dependencies)"
    log "make -j$jobs (bzImage + modules; the tree is kept for out-of-tree modules)"
    if ! make -C "$tree" -j"$jobs" >"$entry/build.log" 2>&1; then
        tail -n 60 "$entry/build.log" >&2
        die "kernel build failed (last 60 lines above)"
    fi
    need_file "$tree/arch/x86/boot/bzImage" "$tree/Module.symvers"
    cp "$tree/arch/x86/boot/bzImage" "$entry/bzImage"
    need_cmd strip
    strip -o "$entry/vmlinux" "$tree/vmlinux"
    cp "$tree/.config" "$entry/config"
    printf '%s\n' "$src_version" >"$entry/source-version"
    touch "$entry/.complete"
    trap - EXIT
    log "built in $(elapsed_since "$start") s: $entry"
    # Each entry holds a full kernel tree (~1.8 GB): keep only the newest few.
    keep="${CELLVM_KEEP_KERNELS:-2}"
    find "$CELLVM_CACHE" -mindepth 1 -maxdepth 1 -type d -name 'guest-kernel-*' -printf '%T@ %p\n' |
        sort -rn | tail -n +"$((keep + 1))" | cut -d' ' -f2- | while read -r old; do
        log "pruning old cache entry $old"
        rm -rf "$old"
    done
fi

if [ "$print_tree" -eq 1 ]; then
    echo "$entry/linux"
    exit 0
fi

# Re-verify (cheap) so a stale or hand-edited cache entry cannot slip through.
verify_config "$entry/linux/.config" || die "cached kernel config in $entry does not match guest/kernel.config"

mkdir -p "$BUILD_DIR/guest"
cp "$entry/bzImage" "$BUILD_DIR/guest/bzImage.tmp"
mv "$BUILD_DIR/guest/bzImage.tmp" "$BUILD_DIR/guest/bzImage"
need_file "$entry/vmlinux"
cp "$entry/vmlinux" "$BUILD_DIR/guest/vmlinux.tmp"
mv "$BUILD_DIR/guest/vmlinux.tmp" "$BUILD_DIR/guest/vmlinux"
ln -sfn "$entry/linux" "$BUILD_DIR/guest/linux-tree"
log "build/guest/bzImage ($(stat -c %s "$BUILD_DIR/guest/bzImage") bytes) from $entry"
