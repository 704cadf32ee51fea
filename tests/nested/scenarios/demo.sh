#!/bin/sh
# The README's demo (scripts/demo.sh): boot cells/linux-demo.toml, look at
# its devices, attach a PCI host bridge with a test device while it runs,
# watch the guest find it, detach it again, plug the sensor add-on board
# (cells/addons/) into its connector and unplug it, and leave.
# cellvm-timeout: 150
# cellvm-cost: 18
cell=/cellvm/cells/linux-demo.toml
name=linux-demo
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
log="$dir/console.log"
mkfifo "$dir/in"
exec 3<>"$dir/in"
shown=0
# Prints the guest console lines that have not been shown yet.
show_console() {
    _n="$(wc -l <"$log")"
    if [ "$_n" -gt "$shown" ]; then
        sed -n "$((shown + 1)),${_n}p" "$log" | sed 's/^/  | /'
        shown="$_n"
    fi
}
wait_console() { # PATTERN: up to ~20 s
    _i=0
    until grep -q -- "$1" "$log" 2>/dev/null || [ "$_i" -ge 1000 ]; do
        _i=$((_i + 1))
        usleep 20000
    done
}
say() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@" 2>&1; }

cat >"$dir/hot-pci.toml" <<'DESC'
[[pci_bridge]]
id = "hot0"
kind = "ecam"
bus_start = 8
[[pci_bridge.device]]
slot = 1
kind = "test"
DESC

say "booting $cell (guest console below, prefixed with '  | ')"
cellvm run "$cell" <"$dir/in" >"$log" 2>&1 &
pid=$!
wait_console "CELLVM-AGENT-READY"
show_console

say "the running cell, seen through its control socket"
run cellvm status "$name"
run cellvm devices "$name"

say "attach a PCI host bridge with a test device at runtime"
cat "$dir/hot-pci.toml"
run cellvm attach "$name" "$dir/hot-pci.toml"
wait_console "CELLVM-DEV+ .*:08:01.0"
show_console

say "detach it again"
run cellvm detach "$name" hot0
wait_console "CELLVM-DEV- .*:08:01.0"
show_console

say "plug an add-on board into connector j1: its DTS plus a disk and an RNG cellvm serves"
dd if=/dev/zero of="$dir/sensor.img" bs=1024 count=1024 2>/dev/null
sed "s|^path = .*|path = \"$dir/sensor.img\"|; s|^overlay = .*|overlay = \"/cellvm/cells/addons/sensor-board.dtso\"|" \
    /cellvm/cells/addons/sensor-board.toml >"$dir/sensor-board.toml"
cat /cellvm/cells/addons/sensor-board.dtso
run cellvm plug "$name" j1 "$dir/sensor-board.toml"
wait_console "CELLVM-DEV+ virtio[0-9]*:virtio_blk"
show_console

say "unplug it: the guest lets go of the whole board"
run cellvm unplug "$name" j1
wait_console "CELLVM-DEV- virtio[0-9]*:virtio_blk"
show_console

say "leave the cell"
printf 'exit\n' >&3
wait $pid
rc=$?
exec 3>&-
show_console
rm -rf "$dir"
echo "scenario: cellvm rc=$rc"
exit $rc
