#!/bin/sh
# arm64: runtime attach/detach through the CLI on a running Linux cell whose
# guest agent applies the overlays (cells/arm64/test-agent.toml, agent
# mode): ECAM and CAM host bridges, a function added to and removed from a
# running bridge, virtio-mmio and virtio-pci, refusals, 20 attach/detach
# cycles. The guest prints CELLVM-DEV+/- for every platform or PCI device
# that appears or goes; tests/nested_arm64.rs checks the transcript. Steps
# are marked "step: NAME".
# cellvm-timeout: 300
name=test-agent
# shellcheck source=tests/nested/scenarios/lib/agent-cell.sh
. "$(dirname "$0")/lib/agent-cell.sh"
start_cell /cellvm/cells/test-agent.toml

# shellcheck source=tests/nested/scenarios/lib/hot-devices.sh
. "$(dirname "$0")/lib/hot-devices.sh"
write_hot_devices "$dir"
cat >"$dir/fn-test.toml" <<'DESC'
[[pci_bridge.device]]
slot = 3
kind = "test"
DESC
cat >"$dir/uart.toml" <<'DESC'
[[uart]]
id = "ser1"
DESC

step_ready

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
finish_cell
