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
# Usage: scripts/bench-boot.sh [--runs N] [--no-build]
#   --runs N     rounds per VMM (default 8; each round boots every VMM once)
#   --no-build   skip setup.sh (use the L1 image in build/l1 as it is; it
#                must have been built with scripts/build-l1.sh --with-qemu)
#
# Output: the table on stdout; L1's console on stderr and in
# build/bench/boot-run.log. Exit status 1 if anything is missing or any VMM
# never reached the marker.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

runs=8
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
need_file "$BUILD_DIR/l1/vmlinuz" "$BUILD_DIR/l1/initramfs.cpio.gz"

out_dir="$BUILD_DIR/bench"
mkdir -p "$out_dir"
run_log="$out_dir/boot-run.log"
# Budget: L1 boot ~5 s, then per round ~2.5 s for each of 3 VMMs, generous.
timeout_s=$((120 + runs * 30))
log "== booting L1 once: scenario bench/boot, $runs rounds (log: $run_log)"
trap - ERR
set +e
"$REPO_ROOT/scripts/run-l1.sh" --scenarios bench/boot --timeout "$timeout_s" \
    --append "cellvm.bench_runs=$runs" 2>&1 | tee "$run_log" >&2
l1_rc="${PIPESTATUS[0]}"
set -e
trap _err_trap ERR

if grep -q '^BENCH-ERROR' "$run_log"; then
    grep '^BENCH-ERROR' "$run_log" | sed 's/^/    /' >&2
    die "the benchmark scenario failed (see above; was L1 built with --with-qemu?)"
fi
grep -q '^@@CELLVM-SCENARIO-BEGIN bench/boot' "$run_log" ||
    die "L1 did not run the bench/boot scenario (run-l1.sh status $l1_rc; log: $run_log)"
end_line="$(grep -m1 '^@@BENCH-TABLE-END' "$run_log" || true)"
[ -n "$end_line" ] || die "no table in the L1 output (scenario killed? run-l1.sh status $l1_rc; log: $run_log)"
table="$(sed -n '/^@@BENCH-TABLE-BEGIN/,/^@@BENCH-TABLE-END/{/^@@BENCH-TABLE/d;p;}' "$run_log")"
versions="$(sed -n 's/^BENCH-VERSIONS: //p' "$run_log" | head -n1)"
host_cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
l0_qemu="$("${CELLVM_QEMU:-qemu-system-x86_64}" --version | head -n1)"

printf '%s\n' "$table"
echo
echo "L1/L2: $versions"
echo "host: $(uname -r), ${host_cpu:-unknown CPU}, $(nproc) CPUs; L1 under $l0_qemu, -accel ${CELLVM_L1_ACCEL:-tcg} -cpu ${CELLVM_L1_CPU:-max,-xsave} -smp ${CELLVM_L1_SMP:-1}; $(date -u '+%Y-%m-%d %H:%M UTC')"
log "done in $(elapsed_since "$start") s"

case "$end_line" in
    *rc=0) ;;
    *) die "cellvm-bench reported a VMM that never booted (${end_line#@@BENCH-TABLE-END }); its errors are in $run_log" ;;
esac
[ "$l1_rc" -eq 0 ] || die "run-l1.sh failed (status $l1_rc) although the table is complete; log: $run_log"
