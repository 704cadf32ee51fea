#!/bin/sh
# Runtime attach/detach through the CLI on a running Linux cell whose guest
# agent applies the overlays (cells/test-agent.toml, agent mode). The guest
# prints CELLVM-DEV+/- for every platform or PCI device that appears or goes;
# tests/nested_boot.rs checks the transcript. Steps are marked "step: NAME".
# cellvm-timeout: 900
# cellvm-cost: 173
name=test-agent
# shellcheck source=tests/nested/scenarios/lib/agent-cell.sh
. "$(dirname "$0")/lib/agent-cell.sh"
start_cell /cellvm/cells/test-agent.toml

# shellcheck source=tests/nested/scenarios/lib/hot-devices.sh
. "$(dirname "$0")/lib/hot-devices.sh"
write_hot_devices "$dir"
# x86_64: a virtio-console function beside the disk.
cat >>"$dir/virtio-pci.toml" <<DESC
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

step_ready

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
finish_cell
