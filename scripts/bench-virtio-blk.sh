#!/usr/bin/env bash
# virtio-blk benchmark (not a test): cellvm against QEMU microvm in the same
# nested L1, the same guest kernel, initramfs, command line, device tree and
# disk image (a 64 MiB raw image in L1's tmpfs), the disk a virtio-blk-pci
# function with MSI-X in both. The guest (cellvm.mode=blkbench) reads it with
# O_DIRECT at queue depth 1: sequentially in 128 KiB blocks, then 2000
# random 4 KiB reads. Prints one markdown table: sequential throughput and
# random-read IOPS per VMM (medians of round-robin rounds) and cellvm's
# ratio against QEMU for both (higher is better). Never judges the numbers.
# See docs/benchmarks.md.
#
# Steps: CELLVM_L1_WITH_QEMU=1 scripts/setup.sh (deps, guest kernel and
# initramfs with guest/tools/blkbench, static cellvm + cellvm-bench, L1
# image with QEMU), then one L1 boot running tests/nested/bench/virtio-blk.sh.
#
# Usage: scripts/bench-virtio-blk.sh [--runs N] [--no-build]
#   --runs N     rounds per VMM (default 5; each round runs every VMM once)
#   --no-build   skip setup.sh (use the L1 image in build/l1 as it is; it
#                must have been built with scripts/build-l1.sh --with-qemu)
#
# Output: the table on stdout; L1's console on stderr and in
# build/bench/virtio-blk-run.log. Exit status 1 if anything is missing or a
# VMM never produced a result.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

runs=5
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) [ $# -ge 2 ] || die "--runs needs a number"; runs="$2"; shift 2 ;;
        --runs=*) runs="${1#*=}"; shift ;;
        --no-build) build=0; shift ;;
        -h | --help) print_header; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case "$runs" in "" | *[!0-9]* | 0) die "--runs needs a positive whole number, not '$runs'" ;; esac

start="$(now)"
if [ "$build" = 1 ]; then
    log "== setup.sh with CELLVM_L1_WITH_QEMU=1"
    CELLVM_L1_WITH_QEMU=1 "$REPO_ROOT/scripts/setup.sh" || die "scripts/setup.sh failed"
fi
# Budget: L1 boot ~5 s, per round two guest boots (~3 s) and their reads.
bench_table_run virtio-blk $((120 + runs * 90)) "cellvm.bench_runs=$runs"
log "done in $(elapsed_since "$start") s"
