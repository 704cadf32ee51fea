#!/bin/sh
# Helpers the x86 benchmark scenarios source (not a scenario: it runs
# nothing; in L1 it is /cellvm/scenarios/bench/lib.sh).

# param NAME DEFAULT: NAME=value from L1's kernel command line.
param() {
    _v="$2"
    for _w in $(cat /proc/cmdline); do
        case "$_w" in "$1="*) _v="${_w#*=}" ;; esac
    done
    echo "$_v"
}

# wait_agent LOG [TRIES]: until the cell's console LOG says its guest agent
# is ready (or failed), every 20 ms, at most TRIES times (default 1500).
wait_agent() {
    _i=0
    until grep -q "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR" "$1" 2>/dev/null || [ "$_i" -ge "${2:-1500}" ]; do
        _i=$((_i + 1))
        usleep 20000
    done
}
