#!/usr/bin/env bash
# Build the cellvm guest (L2) initramfs: busybox-static with applet symlinks
# and guest/initramfs/init (plus any other files under guest/initramfs/).
#
# Output: build/guest/initramfs.cpio.gz (always rebuilt; takes < 1 s)
#
# Usage: scripts/build-guest-initramfs.sh [--arch x86_64|arm64]
#   --arch arm64  the arm64 guest's initramfs: Debian's busybox-static:arm64
#                 (cached in $CELLVM_CACHE, lib.sh need_busybox_static_arm64),
#                 the arm64 agent (build/guest-arm64/cellvm_agent.ko) and
#                 blkbench cross-built with aarch64-linux-gnu-gcc; /etc/cellvm-arch
#                 says "arm64" (guest/initramfs/init then finds its devices in
#                 the device tree). Output: build/guest-arm64/initramfs.cpio.gz
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

parse_args -- "$@"

if [ "$ARCH" = arm64 ]; then
    need_busybox_static_arm64
    apt_ensure gcc-aarch64-linux-gnu
    cc=aarch64-linux-gnu-gcc
    out_dir="$BUILD_DIR/guest-arm64"
else
    need_busybox_static
    cc=gcc
    out_dir="$BUILD_DIR/guest"
fi
need_file "$REPO_ROOT/guest/initramfs/init"
rel_out="${out_dir#"$REPO_ROOT"/}"

mkdir -p "$out_dir"
stage="$(mktemp -d "$out_dir/.initramfs.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

make_busybox_root "$stage"
# Everything under guest/initramfs/ goes to the root (init at /init).
cp -a "$REPO_ROOT/guest/initramfs/." "$stage/"
chmod 0755 "$stage/init"
echo "cell" >"$stage/etc/hostname"
# Not x86_64: /init reads the architecture here (x86_64 has no such file).
[ "$ARCH" = x86_64 ] || echo "$ARCH" >"$stage/etc/cellvm-arch"
# The guest agent module (scripts/build-guest-agent.sh), when built; /init
# loads it early.
# cellvm_msitest.ko (built with it) is loaded only by the pci mode.
for m in cellvm_agent cellvm_msitest; do
    if [ -f "$out_dir/$m.ko" ]; then
        mkdir -p "$stage/lib/modules"
        cp "$out_dir/$m.ko" "$stage/lib/modules/$m.ko"
        log "including $rel_out/$m.ko as /lib/modules/$m.ko"
    fi
done

# The block benchmark tool (guest/tools/blkbench.c): libc-free, a few KiB.
need_cmd "$cc"
"$cc" -O2 -static -nostdlib -ffreestanding -fno-builtin -fno-stack-protector \
    -fno-pie -no-pie -Wall -Wextra -Werror \
    -o "$stage/bin/blkbench" "$REPO_ROOT/guest/tools/blkbench.c" ||
    die "building guest/tools/blkbench.c failed"

cpio_gz "$stage" "$out_dir/initramfs.cpio.gz"
log "$rel_out/initramfs.cpio.gz ($(stat -c %s "$out_dir/initramfs.cpio.gz") bytes, $(busybox_version))"
