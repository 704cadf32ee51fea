#!/usr/bin/env bash
# Build a statically linked cellvm for the nested rig's L1 initramfs.
#
# Output: target/x86_64-unknown-linux-gnu/release/cellvm (static, glibc crt-static;
#         under $CARGO_TARGET_DIR instead of target/ when that is set)
#         target/x86_64-unknown-linux-gnu/release/cellvm-bench (the boot
#         benchmark driver, src/bin/cellvm-bench.rs; static too)
# Cargo's own incremental build makes a second run fast.
#
# Usage: scripts/build-cellvm-static.sh [--arch x86_64|arm64]
#   --arch arm64  cross-builds the static aarch64 cellvm (the arm64 rig's L1)
#                 with Debian's Rust (rustup cannot add targets here,
#                 platform-facts §9): RUSTC=/usr/bin/rustc /usr/bin/cargo
#                 build --release --locked --target aarch64-unknown-linux-gnu
#                 --bin cellvm, linker aarch64-linux-gnu-gcc, crt-static.
#                 Installs what it needs (dpkg --add-architecture arm64,
#                 rustc-web cargo-web libstd-rust-web-dev:arm64
#                 gcc-aarch64-linux-gnu libc6-dev-arm64-cross). Its own
#                 target directory, so Debian's rustc never shares one with
#                 rustup's: output
#                 target/arm64/aarch64-unknown-linux-gnu/release/cellvm
#                 ($CARGO_TARGET_DIR/arm64/... when that is set). $RUSTFLAGS
#                 is added to the aarch64 flags. No cellvm-bench unless
#                 --with-bench (or CELLVM_L1_WITH_QEMU=1, as for
#                 scripts/build-l1.sh --with-qemu) is given: then also
#                 target/arm64/aarch64-unknown-linux-gnu/release/cellvm-bench
#                 (static), for the arm64 benchmark (scripts/bench-arm64.sh).
#   --with-bench  (arm64) build cellvm-bench too; x86_64 always builds it.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

with_bench=0 # set by parse_args
parse_args --with-bench=with_bench -- "$@"
[ "${CELLVM_L1_WITH_QEMU:-0}" != 1 ] || with_bench=1

if [ "$ARCH" = arm64 ]; then
    TARGET=aarch64-unknown-linux-gnu
    ensure_arm64_multiarch libstd-rust-web-dev:arm64
    apt_ensure rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    need_file /usr/bin/rustc /usr/bin/cargo
    need_cmd aarch64-linux-gnu-gcc
    [ -d "/usr/lib/rustlib/$TARGET/lib" ] ||
        die "Debian's rustc has no $TARGET standard library (/usr/lib/rustlib/$TARGET/lib): is libstd-rust-web-dev:arm64 installed?"
    out="$TARGET_DIR/arm64"
    bins=(--bin cellvm)
    [ "$with_bench" != 1 ] || bins+=(--bin cellvm-bench)
    start="$(now)"
    log "$(/usr/bin/rustc --version): cargo build --release --locked --target $TARGET ${bins[*]} (crt-static) in ${out#"$REPO_ROOT"/}"
    # Debian's compiler explicitly (the rustup rustc first on PATH has no
    # aarch64 std: "can't find crate for core"). RUSTFLAGS would replace the
    # target's flags (cargo takes the first of CARGO_ENCODED_RUSTFLAGS,
    # RUSTFLAGS, target.<triple>.rustflags), so it is folded into them.
    (cd "$REPO_ROOT" && env -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS \
        RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc CARGO_TARGET_DIR="$out" \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
        CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static${RUSTFLAGS:+ $RUSTFLAGS}" \
        /usr/bin/cargo build --release --locked --target "$TARGET" "${bins[@]}") ||
        die "cargo build of the static aarch64 cellvm failed (Debian's $(/usr/bin/rustc --version))"
    bin="$out/$TARGET/release/cellvm"
    checked=("$bin")
    [ "$with_bench" != 1 ] || checked+=("$out/$TARGET/release/cellvm-bench")
    for b in "${checked[@]}"; do
        need_file "$b"
        [ "$(elf_machine "$b")" = aarch64 ] || die "$b is not an aarch64 ELF ($(elf_machine "$b"))"
        if is_dynamic "$b"; then
            die "$b is dynamically linked (crt-static not applied?)"
        fi
    done
    note=""
    [ "$with_bench" != 1 ] || note=", cellvm-bench $(stat -c %s "${checked[1]}") bytes"
    log "static aarch64 cellvm: $bin ($(stat -c %s "$bin") bytes$note, $(elapsed_since "$start") s)"
    exit 0
fi

TARGET=x86_64-unknown-linux-gnu
need_cmd cargo
if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
fi

start="$(now)"
bin="$TARGET_DIR/$TARGET/release/cellvm"
# The functions running cells execute, packed together by the linker (lld's
# symbol ordering file; scripts/profile-text-order.sh writes it; docs/
# benchmarks.md, "Where cellvm's memory overhead goes"). The path is
# relative to the repository root, where cargo runs rustc and rustc the
# linker, so RUSTFLAGS are the same in every clone. Cargo does not watch
# the file: a changed one cleans the package so the binaries are relinked.
order=scripts/text-order.txt
need_file "$REPO_ROOT/$order"
# --symbol-ordering-file is lld's: rustc links x86_64-unknown-linux-gnu with
# its bundled lld from 1.90 on; older ones use the system's GNU ld, which
# would stop the link with an unknown-option error.
rustc_minor="$(rustc -V | sed -n 's/^rustc 1\.\([0-9][0-9]*\)\..*/\1/p')"
if [ -z "$rustc_minor" ] || [ "$rustc_minor" -lt 90 ]; then
    die "$(rustc -V) does not link with lld by default; the static build needs rustc >= 1.90 for $order"
fi
order_stamp="$TARGET_DIR/$TARGET/release/text-order.sha256"
order_sum="$(sha256sum "$REPO_ROOT/$order" | cut -d' ' -f1)"
if [ -e "$bin" ] && [ "$(cat "$order_stamp" 2>/dev/null)" != "$order_sum" ]; then
    log "$order changed: relinking"
    (cd "$REPO_ROOT" && cargo clean --release --target "$TARGET" -p cellvm) || die "cargo clean -p cellvm failed"
fi
log "cargo build --release --target $TARGET (crt-static, symbols kept, $order)"
# Symbols kept (the release profile strips): the profile names the
# functions on resident pages with them; they are not loaded at run time.
(cd "$REPO_ROOT" && CARGO_PROFILE_RELEASE_STRIP=none \
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C link-arg=-Wl,--symbol-ordering-file=$order -C link-arg=-Wl,--no-warn-symbol-ordering" \
    cargo build --release --target "$TARGET" --bin cellvm --bin cellvm-bench) ||
    die "cargo build of the static cellvm failed"
echo "$order_sum" >"$order_stamp"

for b in "$bin" "$TARGET_DIR/$TARGET/release/cellvm-bench"; do
    need_file "$b"
    if is_dynamic "$b"; then
        die "$b is dynamically linked (RUSTFLAGS crt-static not applied?)"
    fi
done
# How much of the order the linker found: names from another rustc (symbol
# hashes differ) or removed functions no longer pack anything.
listed="$(grep -c . "$REPO_ROOT/$order" || true)"
found="$(nm --defined-only "$bin" | awk 'NR == FNR { want[$0] = 1; next } ($3 in want) { print $3 }' "$REPO_ROOT/$order" - | sort -u | wc -l)"
log "static cellvm: $bin ($(stat -c %s "$bin") bytes, $(elapsed_since "$start") s); text order: $found of $listed symbols found"
