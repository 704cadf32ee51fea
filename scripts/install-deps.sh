#!/usr/bin/env bash
# Install the Debian packages the guest builds and the nested rig need
# (idempotent: only missing packages are installed). Rust comes from rustup,
# which is expected to be present; the crt-static target is the host's own.
#
# Usage: scripts/install-deps.sh [--check]
#   --check  only report missing packages (exit 1 if any)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

PACKAGES=(
    # guest kernel build (scripts/build-guest-kernel.sh)
    linux-source-6.12 make gcc libc6-dev bc bison flex libelf-dev libssl-dev cpio kmod xz-utils
    # initramfs images (build-guest-initramfs.sh, build-l1.sh)
    busybox-static gzip
    # nested rig (run-l1.sh; python3 for its watchdog, scripts/l1-watchdog.py)
    # and device tree tools for tests
    qemu-system-x86 python3 device-tree-compiler
    # script lint
    shellcheck
)

case "${1:-}" in
    "")
        apt_ensure "${PACKAGES[@]}"
        ;;
    --check)
        missing=()
        for p in "${PACKAGES[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
        done
        if [ "${#missing[@]}" -gt 0 ]; then
            log "missing: ${missing[*]}"
            exit 1
        fi
        ;;
    -h | --help)
        print_header
        exit 0
        ;;
    *) die "unknown argument '$1'" ;;
esac

need_cmd cargo qemu-system-x86_64 dtc busybox make
log "all dependencies present (qemu $(qemu-system-x86_64 --version | sed -n '1s/.*version \([^ ]*\).*/\1/p'), $(cargo --version))"
