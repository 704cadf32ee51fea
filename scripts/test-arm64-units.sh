#!/usr/bin/env bash
# The aarch64 unit tests: the library's tests built for
# aarch64-unknown-linux-gnu with Debian's rustc (as the static aarch64
# cellvm is, scripts/build-cellvm-static.sh --arch arm64) and run on this
# host under qemu-aarch64 (Debian's qemu-user). Only the tests whose path
# names aarch64 run (platform::aarch64, fdt::aarch64, vmm::arch::aarch64):
# the others check the x86_64 platform and run natively in scripts/test.sh.
#
# Usage: scripts/test-arm64-units.sh [extra test filter args]
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

case "${1:-}" in
    -h | --help)
        print_header
        exit 0
        ;;
esac

TARGET=aarch64-unknown-linux-gnu
ensure_arm64_multiarch libstd-rust-web-dev:arm64
apt_ensure rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user device-tree-compiler
need_file /usr/bin/rustc /usr/bin/cargo
need_cmd aarch64-linux-gnu-gcc qemu-aarch64 dtc
start="$(now)"
log "$(/usr/bin/rustc --version): cargo test --lib --target $TARGET -- aarch64 (under qemu-aarch64)"
# Static, so qemu-aarch64 needs no arm64 dynamic loader.
(cd "$REPO_ROOT" && env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
    RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR="$TARGET_DIR/arm64" \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64 \
    /usr/bin/cargo test --locked --lib --target "$TARGET" -- aarch64 "$@") ||
    die "aarch64 unit tests failed"
log "aarch64 unit tests passed in $(elapsed_since "$start") s"
