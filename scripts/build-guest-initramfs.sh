#!/usr/bin/env bash
# Build the cellvm guest (L2) initramfs: busybox-static with applet symlinks
# and guest/initramfs/init (plus any other files under guest/initramfs/).
#
# Output: build/guest/initramfs.cpio.gz (always rebuilt; takes < 1 s)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

case "${1:-}" in
    "") ;;
    -h | --help)
        print_header
        exit 0
        ;;
    *) die "unknown argument '$1'" ;;
esac

need_busybox_static
need_file "$REPO_ROOT/guest/initramfs/init"

out_dir="$BUILD_DIR/guest"
mkdir -p "$out_dir"
stage="$(mktemp -d "$out_dir/.initramfs.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

make_busybox_root "$stage"
# Everything under guest/initramfs/ goes to the root (init at /init).
cp -a "$REPO_ROOT/guest/initramfs/." "$stage/"
chmod 0755 "$stage/init"
echo "cell" >"$stage/etc/hostname"
# The guest agent module (scripts/build-guest-agent.sh), when built; /init
# loads it early.
if [ -f "$out_dir/cellvm_agent.ko" ]; then
    mkdir -p "$stage/lib/modules"
    cp "$out_dir/cellvm_agent.ko" "$stage/lib/modules/cellvm_agent.ko"
    log "including build/guest/cellvm_agent.ko as /lib/modules/cellvm_agent.ko"
fi

# The block benchmark tool (guest/tools/blkbench.c): libc-free, a few KiB.
need_cmd gcc
gcc -O2 -static -nostdlib -ffreestanding -fno-builtin -fno-stack-protector \
    -fno-pie -no-pie -Wall -Wextra -Werror \
    -o "$stage/bin/blkbench" "$REPO_ROOT/guest/tools/blkbench.c" ||
    die "building guest/tools/blkbench.c failed"

cpio_gz "$stage" "$out_dir/initramfs.cpio.gz"
log "build/guest/initramfs.cpio.gz ($(stat -c %s "$out_dir/initramfs.cpio.gz") bytes, $(busybox_version))"
