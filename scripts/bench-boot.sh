#!/usr/bin/env bash
# Boot benchmark (not a test): cellvm against QEMU (-M microvm and -M pc) in
# the same nested L1, the same guest kernel, initramfs, command line and
# device tree (cellvm's, passed to QEMU with -dtb). Prints one markdown table:
# time from VMM start to the guest's userspace marker (CELLVM-READY on the
# console; cellvm's own boot-timer figure beside it), VMM memory overhead
# (VmRSS minus the resident guest RAM mapping), and cellvm's boot-time ratio
# against each peer. Never judges the numbers. See docs/benchmarks.md.
#
# Steps: CELLVM_L1_WITH_QEMU=1 scripts/setup.sh (deps, guest kernel and
# initramfs, static cellvm + cellvm-bench, L1 image with QEMU, its libraries
# and firmware), then one L1 boot running tests/nested/bench/boot.sh.
#
# Usage: scripts/bench-boot.sh [--runs N] [--scrub-mib M] [--no-build]
#   --runs N     rounds per VMM (default 8; each round boots every VMM once)
#   --scrub-mib M  before each boot (untimed), fault in and free M MiB in L1
#                so that every VMM starts on freshly zeroed pages (default
#                256; 0: off, the method of the results before 2026-12-07
#                16:00; docs/benchmarks.md, "The rig's memory state")
#   --no-build   skip setup.sh (use the L1 image in build/l1 as it is; it
#                must have been built with scripts/build-l1.sh --with-qemu)
#
# Output: the table on stdout; L1's console on stderr and in
# build/bench/boot-run.log. Exit status 1 if anything is missing or any VMM
# never reached the marker.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

runs=8
scrub=256
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) [ $# -ge 2 ] || die "--runs needs a number"; runs="$2"; shift 2 ;;
        --runs=*) runs="${1#*=}"; shift ;;
        --scrub-mib) [ $# -ge 2 ] || die "--scrub-mib needs a number"; scrub="$2"; shift 2 ;;
        --scrub-mib=*) scrub="${1#*=}"; shift ;;
        --no-build) build=0; shift ;;
        -h | --help) print_header; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case "$runs" in "" | *[!0-9]* | 0) die "--runs needs a positive whole number, not '$runs'" ;; esac
case "$scrub" in "" | *[!0-9]*) die "--scrub-mib needs a whole number of MiB, not '$scrub'" ;; esac

start="$(now)"
if [ "$build" = 1 ]; then
    log "== setup.sh with CELLVM_L1_WITH_QEMU=1"
    CELLVM_L1_WITH_QEMU=1 "$REPO_ROOT/scripts/setup.sh" || die "scripts/setup.sh failed"
fi
# Budget: L1 boot ~5 s, then per round and each of 6 VMMs up to ~10 s of
# boot and ~8 s of scrub (256 MiB took 3.6-5.8 s on 2026-12-07), generous.
bench_table_run boot $((120 + runs * 110)) "cellvm.bench_runs=$runs cellvm.bench_scrub_mib=$scrub"
log "done in $(elapsed_since "$start") s"
