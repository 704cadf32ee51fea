#!/bin/sh
# Text-order profile (not a test; scripts/profile-text-order.sh runs it):
# which pages of cellvm's code and read-only data running cells touch.
# With the kernel's fault-around set to one page, it prints the resident
# read-only pages of cellvm (`cellvm-bench pages`, "PAGE perms vaddr"
# lines) for: the boot benchmark's cell at its userspace marker; the same
# guest on the CI-runner path (no cell file, a console watch); a cell
# after runtime attaches and detaches of a PCI host bridge and the control
# API's queries; the two cells of the shared flash after moves. The host
# side names the functions on those pages (scripts/profile-text-order.sh).
# Needs an L1 built with scripts/build-l1.sh --with-qemu (cellvm-bench).
# cellvm-timeout: 900
# shellcheck source=tests/nested/bench/lib.sh
. "$(dirname "$0")/lib.sh"

fail() {
    echo "PROFILE-ERROR: $*"
    exit 1
}

command -v cellvm-bench >/dev/null 2>&1 || fail "cellvm-bench not in L1 (build it with scripts/build-l1.sh --with-qemu)"
[ -e /sys/kernel/debug/fault_around_bytes ] || mount -t debugfs none /sys/kernel/debug || fail "cannot mount debugfs"
fa=/sys/kernel/debug/fault_around_bytes
[ -w "$fa" ] || fail "$fa missing: the L1 kernel has no fault-around knob"
fa_was="$(cat "$fa")"
trap 'echo "$fa_was" >"$fa"' EXIT
echo 4096 >"$fa" || fail "cannot set $fa"

# pages TAG PID: the resident read-only pages of cellvm process PID.
pages() {
    cellvm-bench pages "$2" >"$dir/pages" || fail "cellvm-bench pages $2 ($1)"
    sed "s/^/$1 /" "$dir/pages"
}

dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"

# profile_boot TAG COMMAND...: runs COMMAND (a cell booting the report-mode
# guest) until its userspace marker, records its pages as TAG, kills it.
profile_boot() {
    _tag="$1"
    shift
    "$@" >"$dir/$_tag.log" 2>&1 &
    _pid=$!
    wait_for "$dir/$_tag.log" CELLVM-READY
    grep -q CELLVM-READY "$dir/$_tag.log" || fail "$_tag: no marker: $(tail -n 5 "$dir/$_tag.log")"
    pages "$_tag" "$_pid"
    kill -9 "$_pid"
    wait "$_pid" 2>/dev/null
}

# 1. The boot benchmark's cell, at its userspace marker.
profile_boot boot cellvm run --no-api /cellvm/cells/bench-boot.toml

# 2. The CI-runner path (docs/ci.md): the same guest without a cell file,
# its console watched for a marker that never comes.
profile_boot ci cellvm run --no-api --kernel /cellvm/build/guest/bzImage \
    --initrd /cellvm/build/guest/initramfs.cpio.gz \
    --cmdline "console=ttyS0 quiet panic=-1 cellvm.mode=report cellvm.echo_timeout=30" \
    --memory 256M --expect CELLVM-PROFILE-NEVER --timeout 120

# 3. Runtime attach and detach, and the API's queries.
cell=/cellvm/cells/test-agent.toml
name=test-agent
mkfifo "$dir/in"
exec 3<>"$dir/in"
cellvm run "$cell" --cmdline-append cellvm.agent_poll=0 <"$dir/in" >"$dir/agent.log" 2>&1 &
pid=$!
wait_agent "$dir/agent.log"
grep -q CELLVM-AGENT-READY "$dir/agent.log" || fail "no guest agent in $cell: $(tail -n 5 "$dir/agent.log")"
bench_pci_desc "$dir/pci.toml"
for round in 1 2 3; do
    cellvm attach "$name" "$dir/pci.toml" >/dev/null || fail "attach $round"
    cellvm devices "$name" >/dev/null
    cellvm stats "$name" >/dev/null
    cellvm detach "$name" bench0 >/dev/null || fail "detach $round"
done
cellvm list >/dev/null
pages attach "$pid"
printf 'exit\n' >&3
wait "$pid"
exec 3>&-

# 4. Moves of the shared flash between cells/host.toml and cells/bmc.toml.
start_flash_cells "$dir" cellvm.agent_poll=0
for round in 1 2; do
    cellvm move flash0 --from host --to bmc >/dev/null || fail "move to bmc $round"
    cellvm move flash0 --from bmc --to host >/dev/null || fail "move to host $round"
done
pages move-host "$host_pid"
pages move-bmc "$bmc_pid"
printf 'exit\n' >&5
printf 'exit\n' >&6
wait "$host_pid"
wait "$bmc_pid"
rm -rf "$dir"
echo "PROFILE-DONE"
