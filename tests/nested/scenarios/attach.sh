#!/bin/sh
# Runtime attach/detach through the CLI on a running Linux cell whose guest
# agent applies the overlays (cells/test-agent.toml, agent mode). The guest
# prints CELLVM-DEV+/- for every platform or PCI device that appears or goes;
# tests/nested_boot.rs checks the transcript. Steps are marked "step: NAME".
# cellvm-timeout: 420
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
[[pci_bridge.device]]
slot = 2
kind = "virtio"
virtio = "console"
pty = "$dir/hot.pty"
DESC
cat >"$dir/missing-image.toml" <<'DESC'
[[virtio_mmio]]
id = "vdisk"
kind = "block"
path = "/nonexistent/disk.img"
DESC
cat >"$dir/fn-test.toml" <<'DESC'
[[pci_bridge.device]]
slot = 3
kind = "test"
DESC
cat >"$dir/fn-taken.toml" <<'DESC'
[[pci_bridge.device]]
slot = 1
kind = "test"
DESC
dd if=/dev/zero of="$dir/fn.img" bs=1024 count=256 2>/dev/null
cat >"$dir/fn-blk.toml" <<DESC
[[pci_bridge.device]]
slot = 4
kind = "virtio"
virtio = "block"
path = "$dir/fn.img"
DESC
cat >"$dir/uart.toml" <<'DESC'
[[uart]]
id = "ser1"
DESC
cat >"$dir/collide.toml" <<'DESC'
[[pci_bridge]]
id = "bad0"
kind = "ecam"
bus_start = 9
config_base = 0xd0000000
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
step add-function-virtio
act_and_wait "CELLVM-DEV+ virtio[0-9]*:virtio_blk" api add-function "$name" hot0 "$dir/fn-blk.toml"
api devices "$name"
step add-function-refused
api add-function "$name" hot0 "$dir/fn-taken.toml"
api add-function "$name" nosuch "$dir/fn-test.toml"
api remove-function "$name" hot0 05.0
step remove-function
act_and_wait "CELLVM-DEV- .*:08:03.0" api remove-function "$name" hot0 03.0
act_and_wait "CELLVM-DEV- virtio[0-9]*:virtio_blk" api remove-function "$name" hot0 04
step remove-function-configured
act_and_wait "CELLVM-DEV- .*:08:02.0" api remove-function "$name" hot0 02.0
step detach-pci
act_and_wait "CELLVM-DEV- e[0-9a-f]*\.pci" api detach "$name" hot0

step attach-cam
act_and_wait "CELLVM-DEV+ .*:0c:04.0" api attach "$name" "$dir/cam.toml"
step detach-cam
act_and_wait "CELLVM-DEV- e[0-9a-f]*\.pci" api detach "$name" hotcam

step attach-virtio
act_and_wait "CELLVM-DEV+ .*virtio_mmio" api attach "$name" "$dir/virtio.toml"
step detach-virtio
act_and_wait "CELLVM-DEV- .*virtio_mmio" api detach "$name" vio0

step attach-virtio-pci
act_and_wait "CELLVM-DEV+ virtio[0-9]*:virtio_blk" api attach "$name" "$dir/virtio-pci.toml"
wait_count "CELLVM-DEV+ virtio[0-9]*:virtio_console" 1
[ -e "$dir/hot.pty" ] && echo "host: hot.pty present"
step detach-virtio-pci
act_and_wait "CELLVM-DEV- e[0-9a-f]*\.pci" api detach "$name" hotvio
[ -e "$dir/hot.pty" ] || echo "host: hot.pty gone"

step attach-uart
act_and_wait "CELLVM-DEV+ .*serial" api attach "$name" "$dir/uart.toml"
step detach-uart
act_and_wait "CELLVM-DEV- .*serial" api detach "$name" ser1

step bad-requests
api attach "$name" "$dir/collide.toml"
api detach "$name" nosuch
api detach "$name" debug-exit
api attach "$name" "$dir/missing-image.toml"

step devices-before-cycles
cellvm devices "$name" --json >"$dir/before.json"
cat "$dir/before.json"
step cycles
n=0
fail=0
while [ "$n" -lt 100 ]; do
    cellvm attach "$name" "$dir/pci.toml" >/dev/null 2>"$dir/err" || { fail=$((fail + 1)); cat "$dir/err"; }
    cellvm detach "$name" hot0 >/dev/null 2>"$dir/err" || { fail=$((fail + 1)); cat "$dir/err"; }
    n=$((n + 1))
done
echo "cycles: $n failures: $fail"
cellvm devices "$name" --json >"$dir/after.json"
if cmp -s "$dir/before.json" "$dir/after.json"; then echo "cycles: devices identical"; else echo "cycles: devices DIFFER"; cat "$dir/after.json"; fi

step no-agent
act_and_wait "CELLVM-AGENT-RMMOD" printf 'rmmod\n' >&3
api attach "$name" "$dir/pci.toml"
api devices "$name"
printf 'insmod\n' >&3
agent_ready
step re-attach
act_and_wait "CELLVM-DEV+ .*:08:02.0" api attach "$name" "$dir/pci.toml"
act_and_wait "CELLVM-DEV- e[0-9a-f]*\.pci" api detach "$name" hot0

step reload
# A device attached before the agent reloads: the agent removes its overlay
# on unload, and the new agent numbers overlays afresh. Detaching it later
# must not send its stale overlay id (it would name hotcam's overlay now).
act_and_wait "CELLVM-DEV+ .*:08:02.0" api attach "$name" "$dir/pci.toml"
act_and_wait "CELLVM-AGENT-RMMOD" printf 'rmmod\n' >&3
printf 'insmod\n' >&3
agent_ready
act_and_wait "CELLVM-DEV+ .*:0c:04.0" api attach "$name" "$dir/cam.toml"
api detach "$name" hot0
api devices "$name"
step reload-cleanup
# Wait for the bridge itself, not its child: the guest lists devices every
# 0.2 s and may catch the moment the child is gone but the bridge is not.
act_and_wait "CELLVM-DEV- e[0-9a-f]*\.pci" api detach "$name" hotcam

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
