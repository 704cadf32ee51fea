#!/bin/sh
# An ivshmem function attached at run time: a running agent-mode cell
# (cells/test-agent.toml) gains a PCI host bridge with peer 1 of the region
# "nested", then exchanges data and doorbells with peer 0, a cell booted with
# its function (cells/test-ivshmem-0.toml, cellvm.mode=ivshmem); the bridge
# is detached and the cell keeps running. tests/nested_boot.rs checks it.
# cellvm-timeout: 300
# cellvm-cost: 38
name=test-agent
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
log="$dir/agent.log"
count() { grep -c -- "$1" "$log" 2>/dev/null; true; }
wait_count() { # PATTERN N: until N lines match (every 20 ms, up to ~120 s)
    _i=0
    while [ "$(count "$1")" -lt "$2" ] && [ "$_i" -lt 6000 ]; do
        _i=$((_i + 1))
        usleep 20000
    done
}
cat >"$dir/ivshmem.toml" <<'DESC'
[[pci_bridge]]
id = "shm0"
kind = "ecam"
bus_start = 4
[[pci_bridge.device]]
slot = 1
kind = "ivshmem"
region = "nested"
peer_id = 1
rw_size = "64K"
output_size = "4K"
DESC
mkfifo "$dir/in"
exec 3<>"$dir/in"
cellvm run /cellvm/cells/test-agent.toml <"$dir/in" >"$log" 2>&1 &
pid=$!
wait_count "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR" 1
echo "step: attach"
cellvm attach "$name" "$dir/ivshmem.toml"
echo "attach rc=$?"
wait_count "CELLVM-DEV+ .*:04:01.0" 1
echo "step: exchange"
cellvm run /cellvm/cells/test-ivshmem-0.toml >"$dir/0.log" 2>&1 &
p0=$!
printf 'ivshmem-run\n' >&3
wait_count "CELLVM-IVSHMEM rc=" 1
wait $p0
echo "peer0 rc=$?"
echo "step: detach"
cellvm detach "$name" shm0
echo "detach rc=$?"
wait_count "CELLVM-DEV- .*:04:01.0" 1
cellvm devices "$name"
printf 'exit\n' >&3
wait $pid
rc=$?
exec 3>&-
echo "step: logs"
sed 's/^/peer0: /' "$dir/0.log"
grep -v "^CELLVM-DEV[+-]\|^CELLVM-KMSG" "$log" | sed 's/^/peer1: /'
grep "^CELLVM-DEV[+-]" "$log"
rm -rf "$dir"
echo "scenario: cellvm rc=$rc"
exit $rc
