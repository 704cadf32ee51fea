#!/usr/bin/env bash
# Fuzz cellvm's host side (docs/fuzzing.md): build the libFuzzer targets in
# fuzz/ with cargo-fuzz on the stable toolchain (no sanitizer: -s none) and
# run each for a bounded time. Exits 1 if any target finds a crash, a panic
# or a hang, naming the saved input and how to replay and minimise it.
#
# Installs what it needs once: cargo-fuzz (crates.io, into ~/.cargo/bin) and
# a C++ compiler for libFuzzer (Debian g++). The corpus each run grows is
# kept in $CELLVM_CACHE/fuzz/corpus/TARGET, so later runs start where the
# last one stopped; fuzz/corpus/TARGET holds the committed seeds.
#
# Usage: scripts/fuzz.sh [TARGET...]     (default: every target)
#   FUZZ_SECONDS     seconds per target (default 30)
#   FUZZ_TARGET_DIR  cargo target dir for the fuzz build (default fuzz/target)
#   FUZZ_ARGS        extra libFuzzer arguments (e.g. "-jobs=2 -workers=2")
#   FUZZ_JOBS        targets fuzzed at once (default: the CPU count)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
FUZZ_DIR="$REPO_ROOT/fuzz"
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$FUZZ_DIR/target}"
CORPUS_CACHE="$CELLVM_CACHE/fuzz/corpus"
ARTIFACTS="$FUZZ_DIR/artifacts"

case "${1:-}" in
    -h | --help)
        print_header
        exit 0
        ;;
esac
case "$FUZZ_SECONDS" in
    '' | *[!0-9]*) die "FUZZ_SECONDS must be a whole number of seconds, got '$FUZZ_SECONDS'" ;;
esac

export PATH="$HOME/.cargo/bin:$PATH"
need_cmd cargo rustc
apt_ensure g++

if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION (once; into ~/.cargo/bin)"
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" ||
        die "could not install cargo-fuzz from crates.io"
fi

cd "$FUZZ_DIR"
mapfile -t ALL_TARGETS < <(cargo fuzz list)
[ "${#ALL_TARGETS[@]}" -gt 0 ] || die "cargo fuzz list found no targets in $FUZZ_DIR"
if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
    for t in "${TARGETS[@]}"; do
        printf '%s\n' "${ALL_TARGETS[@]}" | grep -qx -- "$t" ||
            die "no fuzz target '$t' (targets: ${ALL_TARGETS[*]})"
    done
else
    TARGETS=("${ALL_TARGETS[@]}")
fi

# Stable toolchain: no -Zsanitizer, so no AddressSanitizer (-s none). The
# coverage instrumentation libFuzzer needs (sanitizer-coverage via -Cpasses
# and -Cllvm-args) works on stable; cargo-fuzz adds it, with debug
# assertions and overflow checks on.
start="$(now)"
log "== building ${#ALL_TARGETS[@]} fuzz targets (cargo fuzz build -s none)"
cargo fetch --locked ||
    die "fuzz/Cargo.lock is out of date (run cargo update in fuzz/ and commit it)"
cargo fuzz build -s none --target-dir "$FUZZ_TARGET_DIR" || die "building the fuzz targets failed"
log "== built in $(elapsed_since "$start") s"

triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$FUZZ_TARGET_DIR/$triple/release"

# fuzz_one TARGET: runs TARGET for FUZZ_SECONDS; its log and status file
# ("$artifacts/rc") say how it went. Several run at once (FUZZ_JOBS): each
# libFuzzer process is single-threaded.
fuzz_one() {
    local t="$1" corpus seeds artifacts logfile t0 rc summary
    corpus="$CORPUS_CACHE/$t"
    seeds="$FUZZ_DIR/corpus/$t"
    artifacts="$ARTIFACTS/$t"
    mkdir -p "$corpus" "$artifacts"
    local dirs=("$corpus")
    [ -d "$seeds" ] && dirs+=("$seeds")
    logfile="$artifacts/fuzz.log"
    rm -f "$artifacts/rc"
    log "== $t: ${FUZZ_SECONDS} s (corpus $corpus)"
    t0="$(now)"
    # New inputs go to the first directory (the cache), never to the seeds.
    # -timeout: an input running longer than 10 s is reported as a hang.
    rc=0
    # shellcheck disable=SC2086
    "$bin_dir/$t" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} \
        "${dirs[@]}" >"$logfile" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        summary="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$logfile" | tail -n 1 || true)"
        log "   $t ok in $(elapsed_since "$t0") s: ${summary:-no DONE line (see $logfile)}"
    fi
    echo "$rc" >"$artifacts/rc"
}

# report_failure TARGET: its log's tail, the saved input and how to replay it.
report_failure() {
    local t="$1" artifacts logfile input
    artifacts="$ARTIFACTS/$t"
    logfile="$artifacts/fuzz.log"
    tail -n 40 "$logfile" >&2
    input="$(sed -n 's/.*Test unit written to \([^ ]*\).*/\1/p' "$logfile" | tail -n 1)"
    warn "$t FAILED (libFuzzer exit $(cat "$artifacts/rc" 2>/dev/null || echo '?')); full log: $logfile"
    if [ -n "$input" ]; then
        warn "$t: crashing input saved at $input"
        warn "$t: reproduce: (cd fuzz && cargo fuzz run -s none $t $input)"
        warn "$t: minimise:  (cd fuzz && cargo fuzz tmin -s none $t $input)"
    fi
}

jobs="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
case "$jobs" in '' | *[!0-9]* | 0) die "FUZZ_JOBS must be a whole number >= 1, got '$jobs'" ;; esac
running=0
for t in "${TARGETS[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    fuzz_one "$t" &
    running=$((running + 1))
done
wait || true

failed=()
for t in "${TARGETS[@]}"; do
    if [ "$(cat "$ARTIFACTS/$t/rc" 2>/dev/null || echo missing)" != 0 ]; then
        report_failure "$t"
        failed+=("$t")
    fi
done

log "fuzzing took $(elapsed_since "$start") s in all (${#TARGETS[@]} targets, ${FUZZ_SECONDS} s each, $jobs at once)"
if [ "${#failed[@]}" -gt 0 ]; then
    die "fuzz targets that failed: ${failed[*]} (inputs and logs under $ARTIFACTS)"
fi
