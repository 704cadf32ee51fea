#!/usr/bin/env bash
# arm64 benchmark (not a test): in ONE boot of the arm64 rig's L1
# (docs/rig.md, "The arm64 rig"), side by side:
#
# 1. boot: cellvm against QEMU's virt board (qemu-system-aarch64 -M
#    virt,gic-version=3 -accel kvm -cpu host, Debian's arm64 build inside
#    L1), the same guest kernel, initramfs and command line
#    (cells/arm64/test-boot-1cpu.toml: build/guest-arm64/Image +
#    initramfs.cpio.gz), 1 vCPU, 256 MiB: time from the VMM's start to the
#    guest's userspace marker (CELLVM-READY on its console), round-robin,
#    per VMM median [min..max], and cellvm's median over QEMU's
#    (tests/nested/bench-arm64/boot.sh, run by cellvm-bench);
# 2. attach: on a running agent cell (cells/arm64/test-agent.toml), N
#    attach/detach cycles of a PCI host bridge (ECAM, one test function) and
#    N of a virtio-mmio rng device: median and p99 of cellvm's elapsed_ms,
#    with its breakdown (plan, build, deliver, wake, guest, ack, commit) at
#    the median and the p99 attach (tests/nested/bench-arm64/attach.sh).
#
# Steps (unless --no-build): CELLVM_L1_WITH_QEMU=1 scripts/setup.sh --arch
# arm64 (guest kernel, agent and initramfs, the static aarch64 cellvm and
# cellvm-bench, the L1 image with qemu-system-aarch64 for arm64 and its
# libraries: scripts/build-l1.sh --arch arm64 --with-qemu), then one L1 boot
# (scripts/run-l1.sh --arch arm64 --scenarios bench/boot,bench/attach).
#
# Usage: scripts/bench-arm64.sh [--runs N] [--cycles M] [--try-dtb] [--no-build]
#   --runs N     boot rounds (default 10; each round boots every VMM once)
#   --cycles M   attach/detach cycles per device (default 50)
#   --try-dtb    first boot QEMU once with cellvm's device tree (-dtb); if it
#                reaches userspace, the QEMU row uses it (it does not: see
#                docs/benchmarks.md, "arm64"), else QEMU's own device tree
#   --no-build   skip setup.sh (use build/l1-arm64 as it is; it must have
#                been built with scripts/build-l1.sh --arch arm64 --with-qemu)
#
# Output: the tables on stdout; L1's console on stderr and in
# build/bench/arm64-run.log. Exit status 1 if anything is missing, a VMM
# never reached the marker, or an attach failed. See docs/benchmarks.md.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

runs=10
cycles=50
try_dtb=0
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) [ $# -ge 2 ] || die "--runs needs a number"; runs="$2"; shift 2 ;;
        --runs=*) runs="${1#*=}"; shift ;;
        --cycles) [ $# -ge 2 ] || die "--cycles needs a number"; cycles="$2"; shift 2 ;;
        --cycles=*) cycles="${1#*=}"; shift ;;
        --try-dtb) try_dtb=1; shift ;;
        --no-build) build=0; shift ;;
        -h | --help) print_header; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case "$runs" in "" | *[!0-9]* | 0) die "--runs needs a positive whole number, not '$runs'" ;; esac
case "$cycles" in "" | *[!0-9]* | 0) die "--cycles needs a positive whole number, not '$cycles'" ;; esac

start="$(now)"
if [ "$build" = 1 ]; then
    log "== setup.sh --arch arm64 with CELLVM_L1_WITH_QEMU=1"
    CELLVM_L1_WITH_QEMU=1 "$REPO_ROOT/scripts/setup.sh" --arch arm64 || die "scripts/setup.sh --arch arm64 failed"
fi
l1_dir="$BUILD_DIR/l1-arm64"
need_file "$l1_dir/vmlinuz" "$l1_dir/initramfs.cpio.gz"
out_dir="$BUILD_DIR/bench"
mkdir -p "$out_dir"
run_log="$out_dir/arm64-run.log"
append="cellvm.bench_runs=$runs cellvm.bench_cycles=$cycles"
[ "$try_dtb" = 0 ] || append="$append cellvm.bench_try_dtb=1"
# Budget: L1 boot ~10 s; a boot round ~5 s for two VMMs, an attach cycle
# ~1-2 s (two CLI calls and the guest's work, under TCG); generous.
timeout_s=$((300 + runs * 40 + cycles * 2 * 8))
log "== booting the arm64 L1 once: bench/boot ($runs rounds), bench/attach ($cycles cycles per device); log: $run_log"
run_start="$(now)"
trap - ERR
set +e
"$REPO_ROOT/scripts/run-l1.sh" --arch arm64 --scenarios bench/boot,bench/attach --timeout "$timeout_s" \
    --append "$append" 2>&1 | tee "$run_log" >&2
l1_rc="${PIPESTATUS[0]}"
set -e
trap _err_trap ERR
run_s="$(elapsed_since "$run_start")"

fail=0
if grep -q '^BENCH-ERROR' "$run_log"; then
    grep '^BENCH-ERROR' "$run_log" | sed 's/^/    /' >&2
    die "a benchmark scenario failed (see above; was L1 built with scripts/build-l1.sh --arch arm64 --with-qemu?)"
fi
for s in boot attach; do
    grep -q "^@@CELLVM-SCENARIO-BEGIN bench/$s" "$run_log" ||
        die "L1 did not run the bench/$s scenario (run-l1.sh status $l1_rc; log: $run_log)"
done

# ---- boot ----
end_line="$(grep -m1 '^@@BENCH-TABLE-END' "$run_log" || true)"
[ -n "$end_line" ] || die "no boot table in the L1 output (scenario killed? run-l1.sh status $l1_rc; log: $run_log)"
table="$(sed -n '/^@@BENCH-TABLE-BEGIN/,/^@@BENCH-TABLE-END/{/^@@BENCH-TABLE/d;p;}' "$run_log")"
versions="$(sed -n 's/^BENCH-VERSIONS: //p' "$run_log" | head -n1)"
qemu_cmd="$(sed -n 's/^BENCH-QEMU: //p' "$run_log" | head -n1)"
qemu_dt="$(sed -n 's/^BENCH-QEMU-DT: //p' "$run_log" | head -n1)"
cellvm_cmd="$(sed -n 's/^BENCH-CELLVM: //p' "$run_log" | head -n1)"
qemu_name="${qemu_cmd%% =*}"
# "| NAME | 1.234 s | [1.1 s..1.3 s] | ..." -> the median in seconds.
row_median() { awk -F'|' -v n="$1" '{ gsub(/ /, "", $2) } $2 == n { v = $3; gsub(/[ s]/, "", v); print v; exit }' <<<"$table"; }
cellvm_med="$(row_median cellvm)"
qemu_med="$(row_median "$qemu_name")"
l0_qemu="$("${CELLVM_QEMU:-qemu-system-aarch64}" --version | head -n1)"
host_cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"

echo
echo "## arm64: boot to the guest's userspace (CELLVM-READY), cellvm vs QEMU virt, $runs rounds round-robin"
echo
printf '%s\n' "$table"
echo
awk -v a="$cellvm_med" -v b="$qemu_med" -v q="$qemu_name" 'BEGIN {
    if (a + 0 > 0 && b + 0 > 0) printf "boot median ratio cellvm / %s: %.2fx (%.3f s / %.3f s)\n", q, a / b, a, b
    else printf "boot median ratio cellvm / %s: - (a VMM has no median)\n", q
}'
echo "cellvm: $cellvm_cmd"
echo "QEMU:   $qemu_cmd"
echo "QEMU's device tree: $qemu_dt"
if grep -q '^BENCH-DTB-PROBE' "$run_log"; then
    grep '^BENCH-DTB-PROBE: [a-z]' "$run_log" | sed 's/^BENCH-DTB-PROBE: /-dtb probe: /'
fi

# ---- attach ----
samples="$out_dir/arm64-attach-samples.log"
grep '^bench-sample kind=' "$run_log" >"$samples" || true
echo
echo "## arm64: runtime attach on a running agent cell (cells/arm64/test-agent.toml), $cycles cycles per device"
echo
echo "elapsed_ms = cellvm's figure from the API request to the guest agent's ACK (after the overlay was applied and the drivers probed)."
echo
echo "| device | operation | median | p99 | [min..max] | samples | failed |"
echo "|---|---|---|---|---|---|---|"
for kind in pci virtio-mmio; do
    grep "^bench-sample kind=$kind " "$samples" >"$out_dir/arm64-attach-$kind.log" || true
    for op in attach detach; do
        read -r m p mn mx n <<<"$(sample_stats "$out_dir/arm64-attach-$kind.log" "${op}_ms")"
        nf="$(grep -c " ${op}_ms=fail" "$out_dir/arm64-attach-$kind.log" || true)"
        [ "$nf" = 0 ] || fail=1
        [ "$n" -gt 0 ] || fail=1
        case "$kind" in pci) what="PCI host bridge (ECAM) + 1 test function" ;; *) what="virtio-mmio rng" ;; esac
        echo "| $what | $op | $m ms | $p ms | [$mn..$mx] ms | $n | $nf |"
    done
done
echo
echo "where the attach time went (ms; cellvm's breakdown of the sample at the median and at the p99 of elapsed_ms, and the median of each step):"
echo
echo "| device | sample | attach (elapsed) | plan | build | deliver | (wake) | guest | ack | commit |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for kind in pci virtio-mmio; do
    sed -n 's/^bench-sample kind=[^ ]* attach_ms=\([0-9.]*\) .*plan_ms=\([0-9.]*\) build_ms=\([0-9.]*\) deliver_ms=\([0-9.]*\) wake_ms=\([0-9.]*\) guest_ms=\([0-9.]*\) ack_ms=\([0-9.]*\) commit_ms=\([0-9.]*\).*/\1 \2 \3 \4 \5 \6 \7 \8/p' \
        "$out_dir/arm64-attach-$kind.log" | sort -n | awk -v kind="$kind" '
        { for (i = 1; i <= 8; i++) v[NR, i] = $i }
        END {
            if (NR == 0) { printf "| %s | (no breakdown in the samples) |\n", kind; exit }
            split("median p99", name, " ")
            row[1] = int((NR + 1) / 2); row[2] = int(NR * 0.99 + 0.999); if (row[2] > NR) row[2] = NR
            for (r = 1; r <= 2; r++) {
                printf "| %s | at the %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n", kind, name[r],
                    v[row[r], 1], v[row[r], 2], v[row[r], 3], v[row[r], 4], v[row[r], 5], v[row[r], 6], v[row[r], 7], v[row[r], 8]
            }
            printf "| %s | median of each step |", kind
            for (i = 1; i <= 8; i++) {
                for (j = 1; j <= NR; j++) {
                    x = v[j, i] + 0
                    for (k = j - 1; k >= 1 && col[k] > x; k--) col[k + 1] = col[k]
                    col[k + 1] = x
                }
                printf " %.1f |", col[int((NR + 1) / 2)]
            }
            printf "\n"
        }'
done
if grep -q '^bench-error' "$run_log"; then
    fail=1
    echo
    echo "errors:"
    grep '^bench-error' "$run_log" | head -n 10 | sed 's/^/    /'
fi

echo
echo "L1/L2: $versions"
echo "host: $(uname -r), ${host_cpu:-unknown CPU}, $(nproc) CPUs; arm64 L1 under $l0_qemu, -M virt,virtualization=on,gic-version=3 -accel ${CELLVM_L1_ACCEL:-tcg} -cpu ${CELLVM_L1_CPU:-max,pauth-impdef=on} -smp ${CELLVM_L1_SMP:-1}; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "the L1 run took $run_s s (boot $(sed -n 's/^CELLVM-L1: scenario bench\/boot took \(.*\)/\1/p' "$run_log"), attach $(sed -n 's/^CELLVM-L1: scenario bench\/attach took \(.*\)/\1/p' "$run_log")); the whole benchmark $(elapsed_since "$start") s"

case "$end_line" in
    *rc=0) ;;
    *) die "cellvm-bench reported a VMM without results (${end_line#@@BENCH-TABLE-END }); its errors are in $run_log" ;;
esac
grep -q '^@@CELLVM-SCENARIO-END bench/attach rc=0' "$run_log" ||
    die "the bench/attach scenario failed ($(grep '^@@CELLVM-SCENARIO-END bench/attach' "$run_log" || echo 'no end line'); log: $run_log)"
[ "$fail" = 0 ] || die "some attach/detach cycles failed or gave no figure (log: $run_log)"
[ "$l1_rc" -eq 0 ] || die "run-l1.sh failed (status $l1_rc) although both scenarios ended; log: $run_log"
log "done in $(elapsed_since "$start") s"
