#!/usr/bin/env bash
# Boot the nested rig's L1 (build/l1/, made by scripts/build-l1.sh) under QEMU
# TCG with AMD SVM and let it run cellvm scenarios against real Linux guests.
#
# Usage: scripts/run-l1.sh [--scenarios a,b|all] [--timeout SECS]
#                          [--scenario-timeout SECS] [--append ARGS]
#   --scenarios         scenarios to run (names of tests/nested/scenarios/*.sh,
#                       without .sh); default all. Benchmarks (never in `all`):
#                       bench/NAME for tests/nested/bench/NAME.sh
#   --timeout           overall limit for the QEMU run (default 1800 s)
#   --scenario-timeout  default per-scenario limit inside L1 (default 120 s; a
#                       scenario can set its own with `# cellvm-timeout: SECS`)
#   --append            extra L1 kernel command line arguments
# Environment: CELLVM_L1_SMP (1: with 2, QEMU 7.2's multi-threaded TCG now
#   and then crashes L1 when KVM patches kernel code, see docs/rig.md),
#   CELLVM_L1_MEM (2048, MiB), CELLVM_L1_CPU (max,-xsave: SVM on, XSAVE off),
#   CELLVM_L1_ACCEL (tcg), CELLVM_QEMU (qemu-system-x86_64),
#   CELLVM_L1_ATTEMPTS (3: L1 boots at most, see below).
#
# L1's console is streamed to stdout with carriage returns removed and saved in
# build/l1/last-run.log. scripts/l1-watchdog.py watches QEMU's monitor and
# L1's heartbeat and wakes L1 when TCG loses an interrupt (docs/rig.md); what
# it did is printed on stderr at the end and kept in build/l1/watchdog.log.
# When L1 hangs for good (no heartbeat for 90 s) the watchdog quits QEMU and
# L1 boots again for the scenarios that did not end, up to CELLVM_L1_ATTEMPTS
# boots in all (default 3); the log then holds every boot, one after another. Exit status: 0 when L1 reached @@CELLVM-L1-DONE
# without reporting CELLVM-L1-ERROR; 1 otherwise (QEMU missing, image missing,
# timeout, L1 error); 2 on usage errors. Scenario results are NOT judged here:
# the Rust harness parses the @@CELLVM-SCENARIO-* sections.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

usage() {
    print_header >&2
    exit 2
}

scenarios=all
timeout_s=1800
scenario_timeout=120
extra_append=""
while [ $# -gt 0 ]; do
    case "$1" in
        --scenarios) [ $# -ge 2 ] || usage; scenarios="$2"; shift 2 ;;
        --scenarios=*) scenarios="${1#*=}"; shift ;;
        --timeout) [ $# -ge 2 ] || usage; timeout_s="$2"; shift 2 ;;
        --timeout=*) timeout_s="${1#*=}"; shift ;;
        --scenario-timeout) [ $# -ge 2 ] || usage; scenario_timeout="$2"; shift 2 ;;
        --scenario-timeout=*) scenario_timeout="${1#*=}"; shift ;;
        --append) [ $# -ge 2 ] || usage; extra_append="$2"; shift 2 ;;
        --append=*) extra_append="${1#*=}"; shift ;;
        -h | --help) print_header; exit 0 ;;
        *) printf '[%s] unknown argument: %s\n' "$SCRIPT_NAME" "$1" >&2; usage ;;
    esac
done
case "$timeout_s$scenario_timeout" in
    *[!0-9]*) printf '[%s] --timeout/--scenario-timeout need whole seconds\n' "$SCRIPT_NAME" >&2; exit 2 ;;
esac
case "$scenarios" in
    "" | *[!A-Za-z0-9_.,/-]* | */../* | ../* | /*) printf '[%s] bad --scenarios value %q\n' "$SCRIPT_NAME" "$scenarios" >&2; exit 2 ;;
esac

QEMU="${CELLVM_QEMU:-qemu-system-x86_64}"
if ! command -v "$QEMU" >/dev/null 2>&1 && [ -z "${CELLVM_QEMU:-}" ]; then
    apt_ensure qemu-system-x86
fi
command -v "$QEMU" >/dev/null 2>&1 ||
    die "QEMU not found ('$QEMU'): install Debian's qemu-system-x86 (scripts/install-deps.sh)"
need_cmd timeout sed tee grep
vmlinuz="$BUILD_DIR/l1/vmlinuz"
initrd="$BUILD_DIR/l1/initramfs.cpio.gz"
if [ ! -f "$vmlinuz" ] || [ ! -f "$initrd" ]; then
    die "no L1 image in build/l1/ (run scripts/setup.sh, or scripts/build-l1.sh)"
fi

log_file="$BUILD_DIR/l1/last-run.log"
attempts="${CELLVM_L1_ATTEMPTS:-3}"
case "$attempts" in "" | *[!0-9]* | 0) die "CELLVM_L1_ATTEMPTS must be a positive whole number" ;; esac
# QEMU's human monitor, for scripts/l1-watchdog.py: it wakes L1 when TCG
# loses an interrupt (L1 halted with a vector pending; docs/rig.md), and
# quits QEMU when L1's heartbeat (its second serial port) stops for good.
need_cmd python3
monitor="$(mktemp -u "${TMPDIR:-/tmp}/cellvm-l1-monitor.XXXXXX")"
heartbeat="$BUILD_DIR/l1/heartbeat.log"
watchdog_log="$BUILD_DIR/l1/watchdog.log"
attempt_log="$BUILD_DIR/l1/attempt.log"
: >"$log_file"
: >"$watchdog_log"

# run_attempt SCENARIOS: one L1 boot running SCENARIOS; its console goes to
# stdout and is appended to $log_file. Sets qemu_rc and hung (1 when the
# watchdog quit a hung L1).
run_attempt() {
    # loglevel=1: L1's kernel messages stay off the console (they could land
    # in the middle of a scenario's line); guest/l1/init prints them per
    # scenario as "L1-kmsg:" lines instead.
    local append="console=ttyS0 panic=-1 mitigations=off quiet loglevel=1 cellvm.scenarios=$1 cellvm.timeout=$scenario_timeout${extra_append:+ $extra_append}"
    log "qemu (-accel ${CELLVM_L1_ACCEL:-tcg}, -cpu ${CELLVM_L1_CPU:-max,-xsave}, smp ${CELLVM_L1_SMP:-1}, ${CELLVM_L1_MEM:-2048} MiB), scenarios=$1, timeout ${timeout_s}s"
    log "append: $append"
    rm -f "$monitor" "$heartbeat"
    local wd_log="$watchdog_log.attempt"
    # It waits (up to 60 s) for QEMU to create the socket, and ends with QEMU.
    python3 "$REPO_ROOT/scripts/l1-watchdog.py" "$monitor" --heartbeat "$heartbeat" >"$wd_log" 2>&1 &
    local watchdog=$!
    timeout -k 10 "$timeout_s" "$QEMU" \
        -accel "${CELLVM_L1_ACCEL:-tcg}" -cpu "${CELLVM_L1_CPU:-max,-xsave}" -smp "${CELLVM_L1_SMP:-1}" -m "${CELLVM_L1_MEM:-2048}" -M pc \
        -nographic -no-reboot -nodefaults -serial stdio -serial "file:$heartbeat" \
        -monitor "unix:$monitor,server=on,wait=off" \
        -kernel "$vmlinuz" -initrd "$initrd" -append "$append" </dev/null 2>&1 |
        sed -u 's/\r//g' | tee "$attempt_log"
    local statuses=("${PIPESTATUS[@]}")
    qemu_rc="${statuses[0]}"
    kill "$watchdog" 2>/dev/null
    wait "$watchdog" 2>/dev/null
    rm -f "$monitor"
    cat "$attempt_log" >>"$log_file"
    cat "$wd_log" >>"$watchdog_log"
    hung=0
    grep -q 'L1 HUNG' "$wd_log" && hung=1
    rm -f "$wd_log"
}

# unfinished_scenarios: the scenarios the last attempt listed but did not
# end, comma-separated (empty when all ended).
unfinished_scenarios() {
    local listed name rest=""
    listed="$(sed -n 's/^CELLVM-L1: scenarios: //p' "$attempt_log" | head -n1 | tr ',' ' ')"
    for name in $listed; do
        name="${name%.sh}"
        grep -q "^@@CELLVM-SCENARIO-END $name rc=" "$attempt_log" || rest="$rest$name,"
    done
    printf '%s' "${rest%,}"
}

start="$(now)"
trap - ERR # failures are handled below
set +e
todo="$scenarios"
attempt=1
while :; do
    run_attempt "$todo"
    if [ "$hung" -eq 0 ] || [ "$attempt" -ge "$attempts" ]; then
        break
    fi
    todo="$(unfinished_scenarios)"
    if [ -z "$todo" ]; then
        log "L1 hung after its last scenario; not booting it again"
        break
    fi
    attempt=$((attempt + 1))
    log "L1 hung (QEMU TCG, docs/rig.md); booting it again (attempt $attempt of $attempts) for: $todo"
done
if [ -s "$watchdog_log" ]; then
    sed 's/^/    /' "$watchdog_log" >&2
    log "the L1 watchdog woke L1 $(grep -c 'woke it\|poked it' "$watchdog_log") time(s) and found it hung $(grep -c 'L1 HUNG' "$watchdog_log") time(s) (QEMU TCG lost wake-ups; docs/rig.md)"
fi
set -e
trap _err_trap ERR
elapsed="$(elapsed_since "$start")"

fail=0
if [ "$hung" -eq 1 ]; then
    log "L1 hung in all $attempts attempt(s)"
    fail=1
elif [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
    log "L1 did not finish within ${timeout_s} s (killed)"
    fail=1
elif [ "$qemu_rc" -ne 0 ]; then
    log "QEMU exited with status $qemu_rc"
    fail=1
fi
if grep -q 'CELLVM-L1-ERROR' "$log_file"; then
    log "L1 reported errors:"
    grep 'CELLVM-L1-ERROR' "$log_file" | sed 's/^/    /' >&2
    fail=1
fi
if ! grep -q '^@@CELLVM-L1-DONE' "$attempt_log"; then
    log "L1 never printed @@CELLVM-L1-DONE"
    fail=1
fi
# Informational only: the Rust harness judges the scenarios.
grep '^@@CELLVM-SCENARIO-END' "$log_file" | sed 's/^@@CELLVM-SCENARIO-END /    scenario /' >&2 || true
log "L1 run took $elapsed s; log: $log_file"
exit "$fail"
