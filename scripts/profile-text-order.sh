#!/usr/bin/env bash
# Text-order profile (not a test): finds the functions of cellvm that
# running cells execute and writes scripts/text-order.txt, the symbol
# ordering file with which scripts/build-cellvm-static.sh links them next to
# each other, so a running cell's resident code is a few dense 64 KiB
# fault-around windows instead of many sparse ones (docs/benchmarks.md,
# "Where cellvm's memory overhead goes").
#
# Steps: CELLVM_L1_WITH_QEMU=1 scripts/setup.sh (the static cellvm with its
# symbol table, linked with the current order, and cellvm-bench in L1); one
# L1 boot running tests/nested/bench/text-profile.sh, which sets L1's
# fault-around to one page and lists the resident code pages of cellvm at
# the boot benchmark's marker, on the CI-runner path, after attaches and
# detaches, and after moves;
# then `cellvm-bench text-order` names the symbols on those pages (nm of
# the same binary), boot's first. Run it again after the new order is
# built: each round packs the hot code tighter, so its pages carry fewer
# cold neighbours.
#
# Regenerate when a rustc upgrade or new hot code leaves the build's "text
# order: N of M symbols found" line low; a stale order costs memory, never
# correctness.
#
# Usage: scripts/profile-text-order.sh [--no-build]
#   --no-build   skip setup.sh (build/l1 must be a --with-qemu image of the
#                static build in target/)
# Output: scripts/text-order.txt (replaced only when the profile succeeded),
# per-run page and symbol counts on stderr, L1's console in
# build/bench/text-profile-run.log.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0; shift ;;
        -h | --help) print_header; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

start="$(now)"
if [ "$build" = 1 ]; then
    log "== setup.sh with CELLVM_L1_WITH_QEMU=1"
    CELLVM_L1_WITH_QEMU=1 "$REPO_ROOT/scripts/setup.sh" || die "scripts/setup.sh failed"
fi
bin="$TARGET_DIR/x86_64-unknown-linux-gnu/release/cellvm"
need_file "$bin" "$BUILD_DIR/l1/initramfs.cpio.gz"
[ "$(readelf -S "$bin" | grep -c "\.symtab")" -gt 0 ] || die "$bin has no symbol table (built by scripts/build-cellvm-static.sh?)"
out_dir="$BUILD_DIR/bench"
mkdir -p "$out_dir"
run_log="$out_dir/text-profile-run.log"
log "== booting L1 once: scenario bench/text-profile (log: $run_log)"
"$REPO_ROOT/scripts/run-l1.sh" --scenarios bench/text-profile --timeout 900 >"$run_log" 2>&1 ||
    die "run-l1.sh failed (log: $run_log)"
if grep -q '^PROFILE-ERROR' "$run_log"; then
    grep '^PROFILE-ERROR' "$run_log" >&2
    die "the profile scenario failed (log: $run_log)"
fi
grep -q '^PROFILE-DONE' "$run_log" || die "the profile scenario did not finish (log: $run_log)"

grep -E '^[a-z-]+ PAGE ' "$run_log" >"$out_dir/text-profile.pages"
nm --defined-only -S "$bin" >"$out_dir/text-profile.nm"
order="$REPO_ROOT/scripts/text-order.txt"
(cd "$REPO_ROOT" && cargo run --quiet --release --bin cellvm-bench -- \
    text-order "$out_dir/text-profile.pages" "$out_dir/text-profile.nm") >"$order.new" ||
    die "cellvm-bench text-order failed"
[ -s "$order.new" ] || die "the profile named no symbols"
mv "$order.new" "$order"
log "wrote $order ($(wc -l <"$order") symbols) in $(elapsed_since "$start") s; rebuild with scripts/setup.sh"
