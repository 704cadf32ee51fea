#!/bin/sh
# Guest-side profile (not a test; `scripts/run-l1.sh --scenarios
# bench/guest-profile`): where the guest's own time goes in a runtime
# attach of a PCI host bridge and in a `cellvm move` of the shared flash.
# The guests boot with `initcall_debug`, so their kernels log every driver
# probe's duration ("probe of DEV returned R after N usecs"), and with
# printk timestamps the kernel log is a timeline of each request. Prints
# the attach answers (with their breakdown), the move steps, and each
# guest's kernel log from the first request on, as "profile-" lines read
# by eye (docs/benchmarks.md). The guests idle between requests
# (cellvm.agent_poll=0).
# cellvm-timeout: 600
# shellcheck source=tests/nested/bench/lib.sh
. "$(dirname "$0")/lib.sh"
args="cellvm.agent_poll=0 initcall_debug"
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"

# guest_log FD LOG TAG: the guest's whole kernel log (agent command dmesg)
# as "profile-TAG" lines.
guest_log() {
    printf 'dmesg\n' >&"$1"
    wait_for "$2" "CELLVM-DMESG-END"
    sed -n 's/^CELLVM-DMESG: //p' "$2" | sed "s/^/profile-$3 /"
}

cell=/cellvm/cells/test-agent.toml
log="$dir/attach.log"
mkfifo "$dir/in"
exec 3<>"$dir/in"
cellvm run "$cell" --cmdline-append "$args" <"$dir/in" >"$log" 2>&1 &
pid=$!
wait_agent "$log"
bench_pci_desc "$dir/pci.toml"
cellvm attach test-agent "$dir/pci.toml" >/dev/null && cellvm detach test-agent bench0 >/dev/null
for round in 1 2 3; do
    cellvm attach test-agent "$dir/pci.toml" | sed "s/^/profile-attach-$round /"
    cellvm detach test-agent bench0 | sed "s/^/profile-detach-$round /"
done
guest_log 3 "$log" attach-guest
printf 'exit\n' >&3
wait $pid
rc=$?
exec 3>&-

start_flash_cells "$dir" "$args"
cellvm move flash0 --from host --to bmc >/dev/null && cellvm move flash0 --from bmc --to host >/dev/null
for round in 1 2; do
    cellvm move flash0 --from host --to bmc 2>&1 | sed "s/^/profile-move-$round-to-bmc /"
    cellvm move flash0 --from bmc --to host 2>&1 | sed "s/^/profile-move-$round-to-host /"
done
guest_log 5 "$dir/host.log" host-guest
guest_log 6 "$dir/bmc.log" bmc-guest
printf 'exit\n' >&5
printf 'exit\n' >&6
wait "$host_pid" || rc=1
wait "$bmc_pid" || rc=1
rm -rf "$dir"
exit $rc
