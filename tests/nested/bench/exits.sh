#!/bin/sh
# Exit profile (not a test; `scripts/run-l1.sh --scenarios bench/exits`):
# the guest accesses that a runtime attach and detach of a PCI host bridge
# with a test device cost, and those of a `cellvm move` of the shared flash
# on both sides, from `cellvm stats` before and after each (exits per vCPU
# by kind, accesses per device), with the attach's breakdown and the
# move's steps; then the attach cell's console. Prints "exits-" lines, read
# by eye (docs/benchmarks.md). The guests idle between requests
# (cellvm.agent_poll=0) unless L1's command line has
# cellvm.bench_agent_poll=1 (the test loop: kernel log on the console).
# cellvm-timeout: 600
# shellcheck source=tests/nested/bench/lib.sh
. "$(dirname "$0")/lib.sh"
poll="$(param cellvm.bench_agent_poll 0)"
cell=/cellvm/cells/test-agent.toml
name=test-agent
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
log="$dir/console.log"
mkfifo "$dir/in"
exec 3<>"$dir/in"
cellvm run "$cell" --cmdline-append "cellvm.agent_poll=$poll" <"$dir/in" >"$log" 2>&1 &
pid=$!
wait_agent "$log"
bench_pci_desc "$dir/pci.toml"
cellvm attach "$name" "$dir/pci.toml" >/dev/null && cellvm detach "$name" bench0 >/dev/null
for round in 1 2 3; do
    cellvm stats "$name" | sed "s/^/exits-before-$round /"
    cellvm attach "$name" "$dir/pci.toml" | sed "s/^/exits-attach-$round /"
    cellvm stats "$name" | sed "s/^/exits-after-attach-$round /"
    cellvm detach "$name" bench0 | sed "s/^/exits-detach-$round /"
    cellvm stats "$name" | sed "s/^/exits-after-detach-$round /"
done
sed 's/^/exits-console /' "$log"
printf 'exit\n' >&3
wait $pid
rc=$?
exec 3>&-
# The shared flash of cells/host.toml and cells/bmc.toml: a move's exits.
start_flash_cells "$dir" "cellvm.agent_poll=$poll"
cellvm move flash0 --from host --to bmc >/dev/null && cellvm move flash0 --from bmc --to host >/dev/null
for round in 1 2; do
    for c in host bmc; do cellvm stats "$c" | sed "s/^/exits-move-before-$round-$c /"; done
    cellvm move flash0 --from host --to bmc 2>&1 | sed "s/^/exits-move-$round /"
    for c in host bmc; do cellvm stats "$c" | sed "s/^/exits-move-after-$round-$c /"; done
    cellvm move flash0 --from bmc --to host >/dev/null
done
printf 'exit\n' >&5
printf 'exit\n' >&6
wait "$host_pid"
wait "$bmc_pid"
rm -rf "$dir"
exit $rc
