#!/usr/bin/env bash
# Build a statically linked cellvm for the nested rig's L1 initramfs.
#
# Output: target/x86_64-unknown-linux-gnu/release/cellvm (static, glibc crt-static;
#         under $CARGO_TARGET_DIR instead of target/ when that is set)
#         target/x86_64-unknown-linux-gnu/release/cellvm-bench (the boot
#         benchmark driver, src/bin/cellvm-bench.rs; static too)
# Cargo's own incremental build makes a second run fast.
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

TARGET=x86_64-unknown-linux-gnu
need_cmd cargo
if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
fi

start="$(now)"
log "cargo build --release --target $TARGET (crt-static)"
(cd "$REPO_ROOT" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --target "$TARGET" --bin cellvm --bin cellvm-bench) ||
    die "cargo build of the static cellvm failed"

bin="$TARGET_DIR/$TARGET/release/cellvm"
for b in "$bin" "$TARGET_DIR/$TARGET/release/cellvm-bench"; do
    need_file "$b"
    if is_dynamic "$b"; then
        die "$b is dynamically linked (RUSTFLAGS crt-static not applied?)"
    fi
done
log "static cellvm: $bin ($(stat -c %s "$bin") bytes, $(elapsed_since "$start") s)"
