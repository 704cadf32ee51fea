#!/usr/bin/env bash
# Boot the nested rig's L1 (build/l1/, made by scripts/build-l1.sh) under QEMU
# TCG with AMD SVM and let it run cellvm scenarios against real Linux guests.
#
# Usage: scripts/run-l1.sh [--scenarios a,b|all] [--timeout SECS]
#                          [--scenario-timeout SECS] [--append ARGS]
#                          [--arch x86_64|arm64] [--run-dir DIR]
#   --scenarios         scenarios to run (names of tests/nested/scenarios/*.sh,
#                       without .sh); default all. Benchmarks (never in `all`):
#                       bench/NAME for tests/nested/bench/NAME.sh
#   --timeout           overall limit for one QEMU run (default 3600 s)
#   --scenario-timeout  default per-scenario limit inside L1 (default 120 s; a
#                       scenario can set its own with `# cellvm-timeout: SECS`)
#   --append            extra L1 kernel command line arguments
#   --run-dir DIR       where this run's logs go (last-run.log, attempt.log,
#                       heartbeat.log, watchdog.log; default the L1 image's
#                       directory): runs of the same image at the same time
#                       (the test harness's shards, tests/common/rig.rs) each
#                       need their own
#   --arch arm64        the arm64 rig (docs/rig.md, "The arm64 rig"): boots
#                       build/l1-arm64/ (scripts/build-l1.sh --arch arm64)
#                       under qemu-system-aarch64 -M virt,virtualization=on,
#                       gic-version=3 -cpu max,pauth-impdef=on (TCG; L1's
#                       KVM gets EL2; pauth-impdef: TCG computes pointer
#                       authentication codes with a cheap IMPLEMENTATION
#                       DEFINED algorithm instead of QARMA, L1 boots 3x
#                       faster, docs/rig.md),
#                       console ttyAMA0; scenarios from
#                       tests/nested/scenarios-arm64/; log in
#                       build/l1-arm64/last-run.log. Same markers, timeouts and
#                       exit status; no L1 watchdog (see run_attempt), so a
#                       single boot. CELLVM_QEMU defaults to
#                       qemu-system-aarch64, CELLVM_L1_CPU to
#                       max,pauth-impdef=on.
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
timeout_s=3600
scenario_timeout=120
extra_append=""
arch_arg=""
run_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) [ $# -ge 2 ] || usage; arch_arg="$2"; shift 2 ;;
        --arch=*) arch_arg="${1#*=}"; shift ;;
        --scenarios) [ $# -ge 2 ] || usage; scenarios="$2"; shift 2 ;;
        --scenarios=*) scenarios="${1#*=}"; shift ;;
        --timeout) [ $# -ge 2 ] || usage; timeout_s="$2"; shift 2 ;;
        --timeout=*) timeout_s="${1#*=}"; shift ;;
        --scenario-timeout) [ $# -ge 2 ] || usage; scenario_timeout="$2"; shift 2 ;;
        --scenario-timeout=*) scenario_timeout="${1#*=}"; shift ;;
        --append) [ $# -ge 2 ] || usage; extra_append="$2"; shift 2 ;;
        --append=*) extra_append="${1#*=}"; shift ;;
        --run-dir) [ $# -ge 2 ] || usage; run_dir="$2"; shift 2 ;;
        --run-dir=*) run_dir="${1#*=}"; shift ;;
        -h | --help) print_header; exit 0 ;;
        *) printf '[%s] unknown argument: %s\n' "$SCRIPT_NAME" "$1" >&2; usage ;;
    esac
done
case "${arch_arg:-x86_64}" in
    x86_64 | amd64 | arm64 | aarch64) set_arch "${arch_arg:-x86_64}" ;;
    *) printf '[%s] unknown --arch %q (x86_64 or arm64)\n' "$SCRIPT_NAME" "$arch_arg" >&2; exit 2 ;;
esac
case "$timeout_s$scenario_timeout" in
    *[!0-9]*) printf '[%s] --timeout/--scenario-timeout need whole seconds\n' "$SCRIPT_NAME" >&2; exit 2 ;;
esac
case "$scenarios" in
    "" | *[!A-Za-z0-9_.,/-]* | */../* | ../* | /*) printf '[%s] bad --scenarios value %q\n' "$SCRIPT_NAME" "$scenarios" >&2; exit 2 ;;
esac

if [ "$ARCH" = arm64 ]; then
    QEMU="${CELLVM_QEMU:-qemu-system-aarch64}"
    if ! command -v "$QEMU" >/dev/null 2>&1 && [ -z "${CELLVM_QEMU:-}" ]; then
        apt_ensure qemu-system-arm
    fi
    command -v "$QEMU" >/dev/null 2>&1 ||
        die "QEMU not found ('$QEMU'): install Debian's qemu-system-arm"
    l1_dir="$BUILD_DIR/l1-arm64"
    build_hint="scripts/build-l1.sh --arch arm64"
else
    QEMU="${CELLVM_QEMU:-qemu-system-x86_64}"
    if ! command -v "$QEMU" >/dev/null 2>&1 && [ -z "${CELLVM_QEMU:-}" ]; then
        apt_ensure qemu-system-x86
    fi
    command -v "$QEMU" >/dev/null 2>&1 ||
        die "QEMU not found ('$QEMU'): install Debian's qemu-system-x86 (scripts/install-deps.sh)"
    l1_dir="$BUILD_DIR/l1"
    build_hint="scripts/setup.sh, or scripts/build-l1.sh"
fi
need_cmd timeout sed tee grep
vmlinuz="$l1_dir/vmlinuz"
initrd="$l1_dir/initramfs.cpio.gz"
if [ ! -f "$vmlinuz" ] || [ ! -f "$initrd" ]; then
    die "no L1 image in ${l1_dir#"$REPO_ROOT"/}/ (run $build_hint)"
fi

run_dir="${run_dir:-$l1_dir}"
mkdir -p "$run_dir" || die "cannot create the run directory $run_dir"
log_file="$run_dir/last-run.log"
attempts="${CELLVM_L1_ATTEMPTS:-3}"
case "$attempts" in "" | *[!0-9]* | 0) die "CELLVM_L1_ATTEMPTS must be a positive whole number" ;; esac
# QEMU's human monitor, for scripts/l1-watchdog.py: it wakes L1 when TCG
# loses an interrupt (L1 halted with a vector pending; docs/rig.md), and
# quits QEMU when L1's heartbeat (its second serial port) stops for good.
# (x86_64 only, see run_attempt.)
[ "$ARCH" = arm64 ] || need_cmd python3
monitor="$(mktemp -u "${TMPDIR:-/tmp}/cellvm-l1-monitor.XXXXXX")"
heartbeat="$run_dir/heartbeat.log"
watchdog_log="$run_dir/watchdog.log"
attempt_log="$run_dir/attempt.log"
: >"$log_file"
: >"$watchdog_log"

# run_attempt SCENARIOS: one L1 boot running SCENARIOS; its console goes to
# stdout and is appended to $log_file. Sets qemu_rc and hung (1 when the
# watchdog quit a hung L1).
run_attempt() {
    if [ "$ARCH" = arm64 ]; then
        run_attempt_arm64 "$@"
        return
    fi
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

# run_attempt_arm64 SCENARIOS: run_attempt for the arm64 rig, without the L1
# watchdog: scripts/l1-watchdog.py recognises the lost wake-up by x86 state
# (`info registers` HLT=1 and RFLAGS.IF, `info lapic` IRR/ISR) and wakes L1
# with a PC keyboard's key press (`sendkey`); QEMU's virt board has neither,
# and QEMU 7.2's virt board has one non-secure UART, so L1 has no second
# serial port for the heartbeat either (guest/l1/init skips it). The lost
# wake-up was seen under x86 SVM only. A hung arm64 L1 therefore runs into
# --timeout (one boot, hung=0).
run_attempt_arm64() {
    local append="console=ttyAMA0 panic=-1 mitigations=off quiet loglevel=1 cellvm.scenarios=$1 cellvm.timeout=$scenario_timeout${extra_append:+ $extra_append}"
    log "qemu (-accel ${CELLVM_L1_ACCEL:-tcg}, -M virt,virtualization=on,gic-version=3, -cpu ${CELLVM_L1_CPU:-max,pauth-impdef=on}, smp ${CELLVM_L1_SMP:-1}, ${CELLVM_L1_MEM:-2048} MiB), scenarios=$1, timeout ${timeout_s}s"
    log "append: $append"
    timeout -k 10 "$timeout_s" "$QEMU" \
        -M virt,virtualization=on,gic-version=3 -accel "${CELLVM_L1_ACCEL:-tcg}" -cpu "${CELLVM_L1_CPU:-max,pauth-impdef=on}" \
        -smp "${CELLVM_L1_SMP:-1}" -m "${CELLVM_L1_MEM:-2048}" \
        -nographic -no-reboot -nodefaults -serial stdio \
        -kernel "$vmlinuz" -initrd "$initrd" -append "$append" </dev/null 2>&1 |
        sed -u 's/\r//g' | tee "$attempt_log"
    local statuses=("${PIPESTATUS[@]}")
    qemu_rc="${statuses[0]}"
    cat "$attempt_log" >>"$log_file"
    hung=0
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
