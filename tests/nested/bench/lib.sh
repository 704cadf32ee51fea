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

# scrub: faults in 256 MiB of fresh L1 memory and frees it, so that the
# next VMM starts on pages L1 has just zeroed rather than on the previous
# guest's (docs/benchmarks.md, "The rig's memory state"; the boot
# benchmark's `cellvm-bench boot --scrub-mib`).
scrub() {
    dd if=/dev/zero of=/dev/null bs=256M count=1 2>/dev/null
}

# wait_for LOG PATTERN [TRIES]: until LOG has a line matching PATTERN
# (grep), every 20 ms, at most TRIES times (default 3000: ~60 s).
wait_for() {
    _i=0
    until grep -q "$2" "$1" 2>/dev/null || [ "$_i" -ge "${3:-3000}" ]; do
        _i=$((_i + 1))
        usleep 20000
    done
}

# wait_agent LOG [TRIES]: until the cell's console LOG says its guest agent
# is ready (or failed), every 20 ms, at most TRIES times (default 1500).
wait_agent() {
    wait_for "$1" "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR" "${2:-1500}"
}

# bench_pci_desc FILE: the description the attach benchmarks attach and
# detach: host bridge bench0 (ECAM, buses from 8) with a test function in
# slot 1.
bench_pci_desc() {
    cat >"$1" <<'DESC'
[[pci_bridge]]
id = "bench0"
kind = "ecam"
bus_start = 8
[[pci_bridge.device]]
slot = 1
kind = "test"
DESC
}

# start_flash_cells DIR ARGS: the shared flash of cells/host.toml and
# cells/bmc.toml (a fresh 1 MiB image), both cells started with ARGS
# appended to their kernel command lines, consoles in DIR/host.log and
# DIR/bmc.log, inputs on fds 5 (host) and 6 (bmc); sets host_pid and
# bmc_pid; returns once both agents are ready (or failed).
# shellcheck disable=SC2034 # host_pid, bmc_pid: for the caller
start_flash_cells() {
    head -c 1048576 /dev/zero >/cellvm/build/flash0.img
    mkfifo "$1/host.in" "$1/bmc.in"
    exec 5<>"$1/host.in" 6<>"$1/bmc.in"
    cellvm run /cellvm/cells/host.toml --cmdline-append "$2" <"$1/host.in" >"$1/host.log" 2>&1 &
    host_pid=$!
    cellvm run /cellvm/cells/bmc.toml --cmdline-append "$2" <"$1/bmc.in" >"$1/bmc.log" 2>&1 &
    bmc_pid=$!
    wait_agent "$1/host.log" 3000
    wait_agent "$1/bmc.log" 3000
}
