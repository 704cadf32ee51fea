#!/bin/sh
# Add-on boards (docs/addons.md) on a running Linux cell with a connector
# (cells/test-addon.toml, agent mode): the sensor board of
# cells/addons/sensor-board.* plugged and unplugged as a unit, its disk used,
# refusals that change nothing, the PCI board of cells/addons/pci-board.*
# enumerated and removed, 50 plug/unplug cycles of each, a connector
# attached at run time with the sensor board on it, then detached; surprise
# removals (unplug --force) while the guest reads the board's disk, each
# followed by a new plug. tests/nested_boot.rs
# checks the transcript. Steps are marked "step: NAME".
# cellvm-timeout: 480
# cellvm-cost: 203
name=test-addon
conn=/connector-bus@d1000000
# shellcheck source=tests/nested/scenarios/lib/agent-cell.sh
. "$(dirname "$0")/lib/agent-cell.sh"
start_cell /cellvm/cells/test-addon.toml

# guest CMD PATTERN: send CMD to the guest, wait for one more PATTERN line,
# whole (the console log ends with a newline), and print the newest.
guest() {
    act_and_wait "$2" printf '%s\n' "$1" >&3
    _i=0
    while [ -n "$(tail -c 1 "$log" | tr -d '\n')" ] && [ "$_i" -lt 500 ]; do
        _i=$((_i + 1))
        usleep 20000
    done
    grep -- "$2" "$log" | tail -n 1
}

# The committed board with its image here (the example's path is relative
# to the repository's build/ directory).
dd if=/dev/zero of="$dir/sensor.img" bs=1024 count=1024 2>/dev/null
sed "s|^path = .*|path = \"$dir/sensor.img\"|; s|^overlay = .*|overlay = \"/cellvm/cells/addons/sensor-board.dtso\"|" \
    /cellvm/cells/addons/sensor-board.toml >"$dir/board.toml"
# The committed PCI board (a bridge with a test function), as it is.
cp /cellvm/cells/addons/pci-board.toml /cellvm/cells/addons/pci-board.dtso "$dir/"
# A board whose overlay reaches outside its connector.
cat >"$dir/outside.dtso" <<'DTS'
/dts-v1/;
/plugin/;

&j1 {
	fine { compatible = "cellvm,test"; };
};

&ioapic {
	evil { compatible = "cellvm,test"; };
};
DTS
cat >"$dir/outside.toml" <<DESC
name = "outside"
overlay = "$dir/outside.dtso"
DESC

step_ready
guest "dt-ls $conn" "CELLVM-DT-LS .* END"

step plug
act_and_wait "CELLVM-DEV+ virtio[0-9]*:virtio_blk" api plug "$name" j1 "$dir/board.toml"
wait_count "CELLVM-DEV+ virtio[0-9]*:virtio_rng" 1
api devices "$name"
guest "dt-ls $conn" "CELLVM-DT-LS .* END"
guest "blk-write sensor-marker-1" "CELLVM-BLK-WRITE"
guest "blk-read" "CELLVM-BLK-READ"
guest "uart-write d1002000.serial hello from the sensor board" "CELLVM-UART-WRITE"
echo "host: sensor-uart.out: $(cat "$dir/run/test-addon.sensor-uart.out" 2>&1)"

step plug-twice
api plug "$name" j1 "$dir/board.toml"

step unplug
act_and_wait "CELLVM-DEV- virtio[0-9]*:virtio_blk" api unplug "$name" j1
guest "dt-ls $conn" "CELLVM-DT-LS .* END"
guest "blk-read" "CELLVM-BLK-READ"
api devices "$name"
od -c "$dir/sensor.img" | head -n 1

step replug
act_and_wait "CELLVM-DEV+ virtio[0-9]*:virtio_blk" api plug "$name" j1 "$dir/board.toml"
guest "blk-read" "CELLVM-BLK-READ"
act_and_wait "CELLVM-DEV- virtio[0-9]*:virtio_blk" api unplug "$name" j1

step refusals
api plug "$name" j9 "$dir/board.toml"
api plug "$name" j1 "$dir/outside.toml"
api unplug "$name" j1
guest "agent-mode nak" "CELLVM-AGENT-MODE"
api plug "$name" j1 "$dir/board.toml"
guest "agent-mode normal" "CELLVM-AGENT-MODE"
api devices "$name"
guest "dt-ls $conn" "CELLVM-DT-LS .* END"

step pci-board
act_and_wait "CELLVM-DEV+ .*:20:01.0" api plug "$name" j2 "$dir/pci-board.toml"
api devices "$name"
guest "dt-ls /connector-bus@d1400000" "CELLVM-DT-LS .* END"
guest "devices pci" "CELLVM-DEVICES pci"
act_and_wait "CELLVM-DEV- d14[0-9a-f]*\.pci" api unplug "$name" j2
guest "dt-ls /connector-bus@d1400000" "CELLVM-DT-LS .* END"

step devices-before-cycles
cellvm devices "$name" --json >"$dir/before.json"
step cycles
n=0
fail=0
while [ "$n" -lt 50 ]; do
    cellvm plug "$name" j1 "$dir/board.toml" >/dev/null 2>"$dir/err" || { fail=$((fail + 1)); cat "$dir/err"; }
    cellvm unplug "$name" j1 >/dev/null 2>"$dir/err" || { fail=$((fail + 1)); cat "$dir/err"; }
    cellvm plug "$name" j2 "$dir/pci-board.toml" >/dev/null 2>"$dir/err" || { fail=$((fail + 1)); cat "$dir/err"; }
    cellvm unplug "$name" j2 >/dev/null 2>"$dir/err" || { fail=$((fail + 1)); cat "$dir/err"; }
    n=$((n + 1))
done
echo "cycles: $n failures: $fail"
cellvm devices "$name" --json >"$dir/after.json"
if cmp -s "$dir/before.json" "$dir/after.json"; then echo "cycles: devices identical"; else echo "cycles: devices DIFFER"; cat "$dir/after.json"; fi
guest "devices cycles" "CELLVM-DEVICES cycles"
guest "dt-ls $conn" "CELLVM-DT-LS .* END"

step after-cycles
act_and_wait "CELLVM-DEV+ virtio[0-9]*:virtio_blk" api plug "$name" j1 "$dir/board.toml"
guest "blk-read" "CELLVM-BLK-READ"
act_and_wait "CELLVM-DEV- virtio[0-9]*:virtio_blk" api unplug "$name" j1
guest "devices end" "CELLVM-DEVICES end"

step surprise
act_and_wait "CELLVM-DEV+ virtio[0-9]*:virtio_blk" api plug "$name" j1 "$dir/board.toml"
act_and_wait "CELLVM-BLK-READER: reading" printf 'blk-reader\n' >&3
gone="$(count "CELLVM-DEV- virtio[0-9]*:virtio_blk")"
act_and_wait "CELLVM-BLK-READER: stopped" api unplug "$name" j1 --force
wait_count "CELLVM-DEV- virtio[0-9]*:virtio_blk" $((gone + 1))
grep "CELLVM-BLK-READER" "$log"
echo "disk gone from the guest: $(($(count "CELLVM-DEV- virtio[0-9]*:virtio_blk") - gone))"
api devices "$name"
guest "dt-ls $conn" "CELLVM-DT-LS .* END"
step surprise-replug
act_and_wait "CELLVM-DEV+ virtio[0-9]*:virtio_blk" api plug "$name" j1 "$dir/board.toml"
guest "blk-read" "CELLVM-BLK-READ"
act_and_wait "CELLVM-DEV- virtio[0-9]*:virtio_blk" api unplug "$name" j1
step surprise-pci
act_and_wait "CELLVM-DEV+ .*:20:01.0" api plug "$name" j2 "$dir/pci-board.toml"
act_and_wait "CELLVM-DEV- d14[0-9a-f]*\.pci" api unplug "$name" j2 --force
guest "dt-ls /connector-bus@d1400000" "CELLVM-DT-LS .* END"
act_and_wait "CELLVM-DEV+ .*:20:01.0" api plug "$name" j2 "$dir/pci-board.toml"
act_and_wait "CELLVM-DEV- d14[0-9a-f]*\.pci" api unplug "$name" j2
guest "devices surprise-end" "CELLVM-DEVICES surprise-end"

step runtime-connector
cat >"$dir/j3.toml" <<'DESC'
[[connector]]
id = "j3"
DESC
api connect "$name" "$dir/j3.toml"
guest "devices j3" "CELLVM-DEVICES j3"
act_and_wait "CELLVM-DEV+ virtio[0-9]*:virtio_blk" api plug "$name" j3 "$dir/board.toml"
guest "dt-ls /connector-bus@d1100000" "CELLVM-DT-LS .* END"
guest "blk-read" "CELLVM-BLK-READ"
api disconnect "$name" j3
api disconnect "$name" j1
act_and_wait "CELLVM-DEV- virtio[0-9]*:virtio_blk" api disconnect "$name" j3 --force
guest "devices j3-gone" "CELLVM-DEVICES j3-gone"
api devices "$name"
step reconnect
api connect "$name" "$dir/j3.toml"
act_and_wait "CELLVM-DEV+ virtio[0-9]*:virtio_blk" api plug "$name" j3 "$dir/board.toml"
act_and_wait "CELLVM-DEV- virtio[0-9]*:virtio_blk" api unplug "$name" j3
api disconnect "$name" j3

step end
finish_cell
