#!/usr/bin/env bash
# Build the cellvm guest kernel (L2) from Debian's linux-source-6.12:
# `make tinyconfig` + the architecture's config fragment, verified, built,
# cached.
#
# x86_64 (default): fragment guest/kernel.config
#   Output: build/guest/bzImage, build/guest/vmlinux (the same kernel
#           uncompressed, symbols stripped: cellvm boots it without the
#           bzImage's self-decompression, docs/config.md)
# arm64: fragment guest/kernel-arm64.config, cross-built with
#   aarch64-linux-gnu-gcc (Debian's gcc-aarch64-linux-gnu)
#   Output: build/guest-arm64/Image (the raw arm64 Image cellvm loads)
# Cache:  $CELLVM_CACHE/guest-kernel-<key>/  (key = sha256 of the config
#         fragment, the architecture, this script and the linux-source
#         package version) containing linux/ (the configured and built
#         tree, usable with `make -C .../linux M=<module dir>`), the image
#         and config. The newest $CELLVM_KEEP_KERNELS (default 3) entries
#         are kept. build/guest[-arm64]/linux-tree links to the tree in use.
#
# Usage: scripts/build-guest-kernel.sh [--arch x86_64|arm64] [--print-tree]
#   --arch        the guest architecture (default x86_64)
#   --print-tree  only print the cached kernel tree's path (building it first
#                 if needed); for building out-of-tree guest modules.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

print_tree=0
arch=x86_64
while [ $# -gt 0 ]; do
    case "$1" in
        --print-tree) print_tree=1 ;;
        --arch)
            [ $# -ge 2 ] || die "--arch needs a value (x86_64 or arm64)"
            arch="$2"
            shift
            ;;
        -h | --help)
            print_header
            exit 0
            ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

SRC_PKG=linux-source-6.12
case "$arch" in
    x86_64)
        FRAGMENT="$REPO_ROOT/guest/kernel.config"
        make_arch=(ARCH=x86_64)
        image_target=bzImage
        image_path=arch/x86/boot/bzImage
        out_dir="$BUILD_DIR/guest"
        ;;
    arm64 | aarch64)
        arch=arm64
        FRAGMENT="$REPO_ROOT/guest/kernel-arm64.config"
        make_arch=(ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-)
        image_target=Image
        image_path=arch/arm64/boot/Image
        out_dir="$BUILD_DIR/guest-arm64"
        apt_ensure gcc-aarch64-linux-gnu
        need_cmd aarch64-linux-gnu-gcc
        ;;
    *) die "unknown --arch '$arch' (x86_64 or arm64)" ;;
esac
need_file "$FRAGMENT"

apt_ensure "$SRC_PKG" bc bison flex libelf-dev libssl-dev cpio kmod xz-utils make gcc libc6-dev
need_cmd make gcc flex bison bc tar xz sha256sum flock

src_version="$(pkg_version "$SRC_PKG")"
[ -n "$src_version" ] || die "$SRC_PKG is not installed"
tarball="$(find /usr/src -maxdepth 1 -name 'linux-source-6.12.tar.*' | head -n1)"
[ -n "$tarball" ] || die "no /usr/src/linux-source-6.12.tar.* (is $SRC_PKG installed correctly?)"

key="$( { cat "$FRAGMENT" "$0"; printf '%s\n%s\n' "$arch" "$src_version"; } | sha256sum | cut -c1-16)"
entry="$CELLVM_CACHE/guest-kernel-$key"
mkdir -p "$CELLVM_CACHE"

# Serialise concurrent builds of the same entry.
exec 9>"$CELLVM_CACHE/guest-kernel-$arch.lock"
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
        printf '[%s] ERROR: options from %s not honoured (missing dependency?):\n' "$SCRIPT_NAME" "${FRAGMENT#"$REPO_ROOT"/}" >&2
        printf '  %s\n' "${bad[@]}" >&2
        return 1
    fi
}

if [ -f "$entry/.complete" ]; then
    [ "$print_tree" -eq 1 ] || log "cached: $entry (key $key, $SRC_PKG $src_version)"
else
    log "building $arch guest kernel: $SRC_PKG $src_version, key $key"
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
    log "make tinyconfig + merge ${FRAGMENT#"$REPO_ROOT"/}"
    make -C "$tree" "${make_arch[@]}" -s tinyconfig >/dev/null
    (cd "$tree" && env "${make_arch[@]}" ./scripts/kconfig/merge_config.sh -m .config "$FRAGMENT" >"$entry/merge.log" 2>&1) ||
        { cat "$entry/merge.log" >&2; die "merge_config.sh failed"; }
    make -C "$tree" "${make_arch[@]}" -s olddefconfig
    verify_config "$tree/.config" || die "kernel configuration incomplete: fix guest/kernel.config (add the missing dependencies)"
    log "make -j$jobs ($image_target + modules; the tree is kept for out-of-tree modules)"
    if ! make -C "$tree" "${make_arch[@]}" -j"$jobs" "$image_target" modules >"$entry/build.log" 2>&1; then
        tail -n 60 "$entry/build.log" >&2
        die "kernel build failed (last 60 lines above)"
    fi
    need_file "$tree/$image_path" "$tree/Module.symvers"
    cp "$tree/$image_path" "$entry/$image_target"
    if [ "$arch" = x86_64 ]; then
        need_cmd strip
        strip -o "$entry/vmlinux" "$tree/vmlinux"
    fi
    cp "$tree/.config" "$entry/config"
    printf '%s\n' "$src_version" >"$entry/source-version"
    touch "$entry/.complete"
    trap - EXIT
    log "built in $(elapsed_since "$start") s: $entry"
    # Each entry holds a full kernel tree (~1.8 GB): keep only the newest few.
    keep="${CELLVM_KEEP_KERNELS:-3}"
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

mkdir -p "$out_dir"
cp "$entry/$image_target" "$out_dir/$image_target.tmp"
mv "$out_dir/$image_target.tmp" "$out_dir/$image_target"
if [ "$arch" = x86_64 ]; then
    need_file "$entry/vmlinux"
    cp "$entry/vmlinux" "$out_dir/vmlinux.tmp"
    mv "$out_dir/vmlinux.tmp" "$out_dir/vmlinux"
fi
ln -sfn "$entry/linux" "$out_dir/linux-tree"
log "${out_dir#"$REPO_ROOT"/}/$image_target ($(stat -c %s "$out_dir/$image_target") bytes) from $entry"
