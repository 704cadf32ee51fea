#!/bin/sh
# arm64: runtime attach/detach through the CLI on a running Linux cell whose
# guest agent applies the overlays (cells/arm64/test-agent.toml, agent
# mode): ECAM and CAM host bridges, a function added to and removed from a
# running bridge, virtio-mmio and virtio-pci, refusals, 20 attach/detach
# cycles. The guest prints CELLVM-DEV+/- for every platform or PCI device
# that appears or goes; tests/nested_arm64.rs checks the transcript. Steps
# are marked "step: NAME".
# cellvm-timeout: 300
cell=/cellvm/cells/test-agent.toml
name=test-agent
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
log="$dir/console.log"
mkfifo "$dir/in"
exec 3<>"$dir/in"
cellvm run "$cell" <"$dir/in" >"$log" 2>&1 &
pid=$!

# count PATTERN: matching console lines so far. wait_count PATTERN N: until
# there are at least N (checked every 20 ms, up to ~30 s: a loaded host is slow).
count() { grep -c -- "$1" "$log" 2>/dev/null; true; }
wait_count() {
    _i=0
    while [ "$(count "$1")" -lt "$2" ] && [ "$_i" -lt 1500 ]; do
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
# agent_ready: until the cell reports its guest agent ready (after an
# insmod), checked every 50 ms, up to ~60 s: the host's view, not a log line.
# The JSON's keys come sorted (serde_json's map), so the agent's "state"
# is not its first key; the cell's own state is "running", never "ready".
# A cellvm that is gone will never say so: then the scenario ends at once
# with the console's tail (cellvm's last words are there).
agent_ready() {
    _i=0
    until cellvm status "$name" --json 2>/dev/null | grep -q '"state":"ready"' || [ "$_i" -ge 1200 ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            echo "scenario: cellvm exited (rc=$?) while waiting for the agent; console tail:"
            tail -n 40 "$log"
            exit 1
        fi
        _i=$((_i + 1))
        usleep 50000
    done
}
step() { echo "step: $*"; }
api() { echo "\$ cellvm $*"; cellvm "$@" 2>&1; echo "rc=$?"; }

cat >"$dir/pci.toml" <<'DESC'
[[pci_bridge]]
id = "hot0"
kind = "ecam"
bus_start = 8
[[pci_bridge.device]]
slot = 1
kind = "test"
[[pci_bridge.device]]
slot = 2
kind = "test"
DESC
cat >"$dir/cam.toml" <<'DESC'
[[pci_bridge]]
id = "hotcam"
kind = "cam"
bus_start = 12
[[pci_bridge.device]]
slot = 4
kind = "test"
DESC
cat >"$dir/virtio.toml" <<'DESC'
[[virtio_mmio]]
id = "vio0"
kind = "rng"
DESC
dd if=/dev/zero of="$dir/hot.img" bs=1024 count=512 2>/dev/null
cat >"$dir/virtio-pci.toml" <<DESC
[[pci_bridge]]
id = "hotvio"
kind = "ecam"
bus_start = 16
[[pci_bridge.device]]
slot = 1
kind = "virtio"
virtio = "block"
path = "$dir/hot.img"
DESC
cat >"$dir/fn-test.toml" <<'DESC'
[[pci_bridge.device]]
slot = 3
kind = "test"
DESC
cat >"$dir/uart.toml" <<'DESC'
[[uart]]
id = "ser1"
DESC

_i=0
while [ "$(count "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR")" -lt 1 ] && [ "$_i" -lt 1500 ]; do
    _i=$((_i + 1))
    usleep 20000
done
step ready
grep "CELLVM-AGENT" "$log"
api devices "$name"

step attach-pci
act_and_wait "CELLVM-DEV+ .*:08:02.0" api attach "$name" "$dir/pci.toml"
api devices "$name"
step add-function
act_and_wait "CELLVM-DEV+ .*:08:03.0" api add-function "$name" hot0 "$dir/fn-test.toml"
step remove-function
act_and_wait "CELLVM-DEV- .*:08:03.0" api remove-function "$name" hot0 03.0
step detach-pci
act_and_wait "CELLVM-DEV- [0-9a-f]*\.pci" api detach "$name" hot0

step attach-cam
act_and_wait "CELLVM-DEV+ .*:0c:04.0" api attach "$name" "$dir/cam.toml"
step detach-cam
act_and_wait "CELLVM-DEV- [0-9a-f]*\.pci" api detach "$name" hotcam

step attach-virtio
act_and_wait "CELLVM-DEV+ .*virtio_mmio" api attach "$name" "$dir/virtio.toml"
step detach-virtio
act_and_wait "CELLVM-DEV- .*virtio_mmio" api detach "$name" vio0

step attach-virtio-pci
act_and_wait "CELLVM-DEV+ virtio[0-9]*:virtio_blk" api attach "$name" "$dir/virtio-pci.toml"
step detach-virtio-pci
act_and_wait "CELLVM-DEV- [0-9a-f]*\.pci" api detach "$name" hotvio

step bad-requests
# No I/O port space on aarch64: an extra UART at a port is refused.
api attach "$name" "$dir/uart.toml"
api detach "$name" nosuch

step devices-before-cycles
cellvm devices "$name" --json >"$dir/before.json"
cat "$dir/before.json"
step cycles
n=0
fail=0
while [ "$n" -lt 20 ]; do
    cellvm attach "$name" "$dir/pci.toml" >/dev/null 2>"$dir/err" || { fail=$((fail + 1)); cat "$dir/err"; }
    cellvm detach "$name" hot0 >/dev/null 2>"$dir/err" || { fail=$((fail + 1)); cat "$dir/err"; }
    n=$((n + 1))
done
echo "cycles: $n failures: $fail"
cellvm devices "$name" --json >"$dir/after.json"
if cmp -s "$dir/before.json" "$dir/after.json"; then echo "cycles: devices identical"; else echo "cycles: devices DIFFER"; cat "$dir/after.json"; fi

step guest-devices
printf 'exit\n' >&3
wait $pid
rc=$?
exec 3>&-
echo "step: console"
cat "$log"
rm -rf "$dir"
echo "scenario: cellvm rc=$rc"
exit $rc
