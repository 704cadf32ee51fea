#!/bin/sh
# Helpers the scenarios source (not a scenario: `cellvm.scenarios=all` runs
# the files of /cellvm/scenarios, not its directories). build-l1.sh installs
# this directory as /cellvm/scenarios/lib in the x86_64 and the arm64 L1, so
# a scenario, shared or not, sources it with
#     . "$(dirname "$0")/lib/agent-cell.sh"
#
# The cell these helpers drive is the one start_cell started: its name in
# $name, its console in $log, its input on fd 3, its process in $pid.
# The scenario sets $name before it calls them.
# shellcheck disable=SC2154

# step NAME: marks the start of a transcript section ("step: NAME"), which
# the Rust side of the test splits on.
step() { echo "step: $*"; }

# api ARGS...: `cellvm ARGS`, echoed as "$ cellvm ARGS", with its output
# (stderr too) and "rc=N".
api() { echo "\$ cellvm $*"; cellvm "$@" 2>&1; echo "rc=$?"; }

# start_cell CELL_FILE [ARGS...]: a scratch directory in $dir (the cell's
# runtime directory below it), then `cellvm run CELL_FILE ARGS` in the
# background, its console in $log, its input from a fifo open on fd 3,
# its pid in $pid. Returns at once: agent_ready waits for the guest.
start_cell() {
    dir="$(mktemp -d)"
    export CELLVM_RUNTIME_DIR="$dir/run"
    log="$dir/console.log"
    mkfifo "$dir/in"
    exec 3<>"$dir/in"
    _cell="$1"
    shift
    cellvm run "$_cell" "$@" <"$dir/in" >"$log" 2>&1 &
    pid=$!
}

# count PATTERN: the console lines matching PATTERN (grep) so far.
count() { grep -c -- "$1" "$log" 2>/dev/null; true; }

# wait_count PATTERN N [TRIES]: until at least N console lines match,
# checked every 20 ms, at most TRIES times (default $wait_tries, else 1500:
# ~30 s, a loaded host is slow). Gives up with a "scenario: gave up ..."
# line and status 1.
wait_count() {
    _i=0
    _tries="${3:-${wait_tries:-1500}}"
    while [ "$(count "$1")" -lt "$2" ]; do
        if [ "$_i" -ge "$_tries" ]; then
            echo "scenario: gave up waiting for $2 line(s) matching '$1'" >&2
            return 1
        fi
        _i=$((_i + 1))
        usleep 20000
    done
}

# act_and_wait PATTERN CMD...: run CMD, then wait for one more PATTERN line.
act_and_wait() {
    _pat="$1"
    shift
    _c="$(count "$_pat")"
    "$@"
    wait_count "$_pat" $((_c + 1))
}

# step_ready: the "ready" step, once the guest agent's CELLVM-AGENT-READY
# (or CELLVM-AGENT-ERROR) console line is there (~30 s at most): the
# agent's lines so far and `cellvm devices`.
step_ready() {
    wait_count "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR" 1 1500
    step ready
    grep "CELLVM-AGENT" "$log"
    api devices "$name"
}

# agent_ready: until the cell reports its guest agent ready (after an
# insmod), checked every 50 ms, at most $agent_tries times (default 1200:
# ~60 s): the host's view, not a log line. The JSON's keys come sorted
# (serde_json's map), so the agent's "state" is not its first key; the
# cell's own state is "running", never "ready". Status 1 when it never
# is. A cellvm that is gone will never say so: then the scenario ends at
# once with the console's tail (cellvm's last words are there).
agent_ready() {
    _i=0
    until cellvm status "$name" --json 2>/dev/null | grep -q '"state":"ready"'; do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            echo "scenario: cellvm exited (rc=$?) while waiting for the agent; console tail:"
            tail -n 40 "$log"
            exit 1
        fi
        if [ "$_i" -ge "${agent_tries:-1200}" ]; then
            return 1
        fi
        _i=$((_i + 1))
        usleep 50000
    done
}

# finish_cell: the scenario's end: "exit" to the guest (agent mode leaves),
# cellvm waited for, the whole console under "step: console", the scratch
# directory removed, and the scenario ends with cellvm's status
# ("scenario: cellvm rc=N").
finish_cell() {
    printf 'exit\n' >&3
    wait "$pid"
    _rc=$?
    exec 3>&-
    echo "step: console"
    cat "$log"
    rm -rf "$dir"
    echo "scenario: cellvm rc=$_rc"
    exit "$_rc"
}
