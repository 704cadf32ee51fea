#!/usr/bin/env bash
# Handover benchmark (not a test): the seeds' shared flash (cells/host.toml,
# cells/bmc.toml) moved back and forth between two running Linux cells in
# the nested rig with `cellvm move`, N times; prints the move latency
# (median, p99, min..max) and each step's (claim, the giver's disable, the
# taker's enable: request -> guest acknowledgement). Never judges the
# numbers. See docs/benchmarks.md.
#
# Usage: scripts/bench-handover.sh [--moves N] [--no-build] [--busy-guest]
#                                  [--guest-args "ARGS"]
#   --moves N            moves (default 50; they alternate direction)
#   --no-build           skip setup.sh (use build/l1 as it is)
#   --busy-guest         the guests run the test loop (every 0.2 s: kernel
#                        log to the console, device list; forks) instead of
#                        idling between requests (cellvm.agent_poll=0)
#   --guest-args "ARGS"  append ARGS to both guests' kernel command line
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

moves=50
build=1
agent_poll=0
guest_args=
while [ $# -gt 0 ]; do
    case "$1" in
        --moves) [ $# -ge 2 ] || die "--moves needs a number"; moves="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        --busy-guest) agent_poll=1; shift ;;
        --guest-args) guest_args="$2"; shift 2 ;;
        -h | --help) print_header; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
case "$moves" in "" | *[!0-9]* | 0) die "--moves needs a positive whole number, not '$moves'" ;; esac

start="$(now)"
[ "$build" = 0 ] || "$REPO_ROOT/scripts/setup.sh" || die "scripts/setup.sh failed"
need_file "$BUILD_DIR/l1/vmlinuz" "$BUILD_DIR/l1/initramfs.cpio.gz"
out_dir="$BUILD_DIR/bench"
mkdir -p "$out_dir"
run_log="$out_dir/handover-run.log"
log "== booting L1 once: scenario bench/handover, $moves moves (log: $run_log)"
set +e
"$REPO_ROOT/scripts/run-l1.sh" --scenarios bench/handover --timeout $((300 + moves * 5)) \
    --append "cellvm.bench_moves=$moves cellvm.bench_agent_poll=$agent_poll${guest_args:+ cellvm.bench_guest_args=${guest_args// /,}}" 2>&1 | tee "$run_log" >&2
l1_rc="${PIPESTATUS[0]}"
set -e
grep -q '^@@CELLVM-SCENARIO-END bench/handover rc=0' "$run_log" ||
    die "the bench/handover scenario failed (run-l1.sh status $l1_rc; log: $run_log)"

row() { # row LABEL COLUMN TARGET
    local m p lo hi n
    read -r m p lo hi n <<<"$(sample_stats "$run_log" "$2")"
    echo "| $1 | ${m} ms | ${p} ms | [${lo}..${hi}] ms | ${n} | $3 |"
}
echo
echo "cellvm move of a virtio-blk disk between two running Linux cells, nested rig (L2 on KVM inside QEMU TCG)"
echo "| step | median | p99 | [min..max] | samples | target |"
echo "|---|---|---|---|---|---|"
row "whole move (cellvm move, request -> the taker's ACK)" move_ms "<= 50 ms"
row "claim (taker locks the image)" claim_ms "-"
row "disable (giver's guest unbinds, ACK)" disable_ms "-"
row "enable (taker's guest probes, ACK)" enable_ms "-"
echo
echo "failed moves: $(grep -c 'move_ms=fail' "$run_log" || true)"
echo "host: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), $(nproc) CPUs; $(date -u '+%Y-%m-%d %H:%M UTC')"
log "done in $(elapsed_since "$start") s"
