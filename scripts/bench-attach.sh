#!/usr/bin/env bash
# Attach benchmark (not a test): in the nested rig, a running Linux cell with
# the guest agent gains and loses a PCI host bridge with a test device
# through the control API. Prints median and p99 attach/detach latency (API
# request to the guest's acknowledgement, which comes after the bridge's bus
# was enumerated) and cellvm's RSS before and after many cycles.
#
# Then the same attach with 1, 16 and 64 devices already attached, and the
# 64-device median against the 1-device one (target: within 1.5x).
#
# Usage: scripts/bench-attach.sh [--cycles N] [--rss-cycles M]
#                                [--scale-cycles K] [--no-build]
#                                [--busy-guest] [--guest-args "ARGS"]
# The guest idles between requests (cellvm.agent_poll=0); --busy-guest runs
# the test loop instead (every 0.2 s: kernel log to the console, device
# list; forks). --guest-args appends ARGS to the guest's command line.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

cycles=50
rss_cycles=1000
scale_cycles=20
build=1
agent_poll=0
guest_args=
while [ $# -gt 0 ]; do
    case "$1" in
        --cycles) cycles="$2"; shift 2 ;;
        --rss-cycles) rss_cycles="$2"; shift 2 ;;
        --scale-cycles) scale_cycles="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        --busy-guest) agent_poll=1; shift ;;
        --guest-args) guest_args="$2"; shift 2 ;;
        -h | --help) print_header; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case "$cycles$rss_cycles$scale_cycles" in *[!0-9]*) die "--cycles, --rss-cycles and --scale-cycles take whole numbers" ;; esac

start="$(now)"
[ "$build" = 0 ] || "$REPO_ROOT/scripts/setup.sh" || die "scripts/setup.sh failed"
need_file "$BUILD_DIR/l1/vmlinuz" "$BUILD_DIR/l1/initramfs.cpio.gz"
out_dir="$BUILD_DIR/bench"
mkdir -p "$out_dir"
run_log="$out_dir/attach-run.log"
log "== booting L1 once: scenario bench/attach, $cycles timed cycles, $rss_cycles RSS cycles (log: $run_log)"
set +e
"$REPO_ROOT/scripts/run-l1.sh" --scenarios bench/attach --timeout $((900 + rss_cycles + 6 * scale_cycles)) \
    --append "cellvm.bench_cycles=$cycles cellvm.bench_rss_cycles=$rss_cycles cellvm.bench_scale_cycles=$scale_cycles cellvm.bench_agent_poll=$agent_poll${guest_args:+ cellvm.bench_guest_args=${guest_args// /,}}" 2>&1 | tee "$run_log" >&2
l1_rc="${PIPESTATUS[0]}"
set -e
grep -q '^@@CELLVM-SCENARIO-END bench/attach rc=0' "$run_log" ||
    die "the bench/attach scenario failed (run-l1.sh status $l1_rc; log: $run_log)"

stats() { sample_stats "$run_log" "$1"; } # column -> "median p99 min max n"
read -r am ap amin amax an <<<"$(stats attach_ms)"
read -r dm dp dmin dmax dn <<<"$(stats detach_ms)"
fails="$(grep -c 'attach_ms=fail\|detach_ms=fail' "$run_log" || true)"
before="$(sed -n 's/^bench-rss before_kib=\([0-9]*\).*/\1/p' "$run_log")"
after="$(sed -n 's/^bench-rss after_kib=\([0-9]*\).*/\1/p' "$run_log")"
rss_fail="$(sed -n 's/^bench-rss after_kib=.* failures=\([0-9]*\).*/\1/p' "$run_log")"
own_before="$(sed -n 's/^bench-rss before_kib=[0-9]* own_kib=\([0-9]*\).*/\1/p' "$run_log")"
own_after="$(sed -n 's/^bench-rss after_kib=[0-9]* own_kib=\([0-9]*\).*/\1/p' "$run_log")"
anon_before="$(sed -n 's/^bench-rss before_kib=.* own_anon_kib=\([0-9]*\).*/\1/p' "$run_log")"
anon_after="$(sed -n 's/^bench-rss after_kib=.* own_anon_kib=\([0-9]*\).*/\1/p' "$run_log")"

echo
echo "runtime attach of a PCI host bridge with one test device, nested rig (L2 on KVM inside QEMU TCG)"
echo "| operation | median | p99 | [min..max] | samples | target |"
echo "|---|---|---|---|---|---|"
echo "| attach (API request -> guest ACK, bus enumerated) | ${am} ms | ${ap} ms | [${amin}..${amax}] ms | ${an} | <= 50 ms |"
echo "| detach (API request -> guest ACK, bus removed) | ${dm} ms | ${dp} ms | [${dmin}..${dmax}] ms | ${dn} | - |"
echo
echo "where the attach time went (ms; cellvm's breakdown: plan, build the model, deliver = until the agent took the overlay, of which wake = the guest's interrupt to the agent's worker running, guest = the agent's apply and the drivers' probes, ack = the ACK back and the API thread waking, commit):"
echo "| sample | attach | plan | build | deliver | (wake) | guest | ack | commit |"
echo "|---|---|---|---|---|---|---|---|---|"
# The samples at the median and at the p99 of the attach latency, then the
# median of each step over all samples.
sed -n 's/^bench-sample attach_ms=\([0-9.]*\) .*plan_ms=\([0-9.]*\) build_ms=\([0-9.]*\) deliver_ms=\([0-9.]*\) wake_ms=\([0-9.]*\) guest_ms=\([0-9.]*\) ack_ms=\([0-9.]*\) commit_ms=\([0-9.]*\).*/\1 \2 \3 \4 \5 \6 \7 \8/p' "$run_log" |
    sort -n | awk '
        { for (i = 1; i <= 8; i++) v[NR, i] = $i }
        END {
            if (NR == 0) { print "| (no breakdown in the samples) |"; exit }
            split("median p99", name, " ")
            row[1] = int((NR + 1) / 2); row[2] = int(NR * 0.99 + 0.999); if (row[2] > NR) row[2] = NR
            for (r = 1; r <= 2; r++) {
                printf "| at the %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n", name[r],
                    v[row[r], 1], v[row[r], 2], v[row[r], 3], v[row[r], 4], v[row[r], 5], v[row[r], 6], v[row[r], 7], v[row[r], 8]
            }
            printf "| median of each step |"
            for (i = 1; i <= 8; i++) {
                # Insertion sort of column i (POSIX awk has no sort).
                for (j = 1; j <= NR; j++) {
                    x = v[j, i] + 0
                    for (k = j - 1; k >= 1 && col[k] > x; k--) col[k + 1] = col[k]
                    col[k + 1] = x
                }
                printf " %.1f |", col[int((NR + 1) / 2)]
            }
            printf "\n"
        }'
read -r afm afp _ _ _ <<<"$(stats attach_minflt)"
read -r dfm _ _ _ _ <<<"$(stats detach_minflt)"
echo "cellvm's minor page faults (all its threads, /proc/PID/stat): per attach median ${afm}, p99 ${afp}; per detach median ${dfm}"
echo
echo "attach of the same bridge with N devices already attached (virtio-mmio rng, on shared pins):"
echo "| devices attached | attach median | attach p99 | plan median | deliver median | guest median | detach median | samples |"
echo "|---|---|---|---|---|---|---|---|"
scale_median=()
for n in 1 16 64; do
    grep "^bench-scale devices=$n " "$run_log" | sed 's/^bench-scale/bench-sample/' >"$out_dir/attach-scale-$n.log" || true
    read -r sm sp _ _ sn <<<"$(sample_stats "$out_dir/attach-scale-$n.log" attach_ms)"
    read -r sdm _ _ _ _ <<<"$(sample_stats "$out_dir/attach-scale-$n.log" detach_ms)"
    read -r spl _ _ _ _ <<<"$(sample_stats "$out_dir/attach-scale-$n.log" plan_ms)"
    read -r sdl _ _ _ _ <<<"$(sample_stats "$out_dir/attach-scale-$n.log" deliver_ms)"
    read -r sgu _ _ _ _ <<<"$(sample_stats "$out_dir/attach-scale-$n.log" guest_ms)"
    echo "| $n | ${sm} ms | ${sp} ms | ${spl} ms | ${sdl} ms | ${sgu} ms | ${sdm} ms | ${sn} |"
    scale_median+=("$sm")
done
echo "64 devices / 1 device (attach median): $(awk -v a="${scale_median[2]}" -v b="${scale_median[0]}" 'BEGIN { if (b + 0 > 0) printf "%.2fx", a / b; else print "-" }') (target: <= 1.5x)"
echo
echo "failed cycles: ${fails}"
echo "cellvm VmRSS before ${rss_cycles} cycles: ${before:-?} KiB, after: ${after:-?} KiB, drift $(( ${after:-0} - ${before:-0} )) KiB (failures: ${rss_fail:-?}; target: 0)"
echo "cellvm's own memory (VmRSS - resident guest RAM) before: ${own_before:-?} KiB, after: ${own_after:-?} KiB, drift $(( ${own_after:-0} - ${own_before:-0} )) KiB (target: 0)"
echo "  of which anonymous (heap, stacks, device state): before ${anon_before:-?} KiB, after ${anon_after:-?} KiB, drift $(( ${anon_after:-0} - ${anon_before:-0} )) KiB; the rest is cellvm's code paged back in"
echo "checkpoints (cycle: own KiB / own anonymous KiB / live heap bytes held by cellvm): $(sed -n 's/^bench-rss-at cycle=\([0-9]*\) kib=[0-9]* own_kib=\([0-9]*\) own_anon_kib=\([0-9]*\) heap_bytes=\([0-9]*\).*/\1: \2 \/ \3 \/ \4;/p' "$run_log" | tr '\n' ' ')"
echo "heap bytes held by cellvm (cellvm status: heap_live_bytes) before: $(sed -n 's/^bench-rss before_kib=.*heap_bytes=\([0-9]*\).*/\1/p' "$run_log") bytes, after: $(sed -n 's/^bench-rss after_kib=.*heap_bytes=\([0-9]*\).*/\1/p' "$run_log") bytes"
log "done in $(elapsed_since "$start") s"
