#!/bin/sh
# Device states with a real guest (docs/partitioning.md, "Device states"):
# a virtio-blk disk declared reserved in the cell file is enabled (the
# guest probes it, virtio_blk binds; cellvm claims the image), disabled
# (the guest removes it; cellvm releases the image); a disk okay at boot is
# disabled and enabled again; a reserved PCI host bridge with a test
# device is enabled (the guest enumerates it) and disabled; an agent that
# NAKs (test_mode 1) leaves the
# state as it was. tests/nested_boot.rs checks the transcript: "step: NAME"
# sections; "$ cellvm ..." then its output and "rc=N"; "guest: ..." lines
# are the guest's device snapshots.
# cellvm-timeout: 300
# cellvm-cost: 32
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
name=test-states
log="$dir/console.log"
step() { echo "step: $*"; }
api() { echo "\$ cellvm $*"; cellvm "$@" 2>&1; echo "rc=$?"; }
send() { printf '%s\n' "$*" >&3; }

# until_line PATTERN: until the console has a line matching PATTERN
# (checked every 20 ms, up to ~60 s).
until_line() {
    _i=0
    until grep -q -- "$1" "$log" 2>/dev/null; do
        if [ "$_i" -ge 3000 ]; then
            echo "scenario: gave up waiting for '$1'"
            return 1
        fi
        _i=$((_i + 1))
        usleep 20000
    done
}
# guest_devices TAG: the guest's device snapshot, one line. A second
# snapshot is asked for after it: once that one starts, the first line is
# whole in the log (the guest prints it byte by byte through the UART).
guest_devices() {
    send "devices $1"
    send "devices $1-then"
    until_line "^CELLVM-DEVICES $1-then:" && grep "^CELLVM-DEVICES $1:" "$log" | sed 's/^/guest: /'
}
# host_view TAG: the two disks' states and the image claims.
host_view() {
    echo "host: $1: $(cellvm devices "$name" | grep -o 'id=[a-z0-9]*  .*state=[a-z]*' | grep 'id=flash0\|id=boot0' | sed 's/  .*state=/=/' | tr '\n' ' ')"
    echo "host: $1: claims flash=$(cellvm cells | grep -c flash.img) boot=$(cellvm cells | grep -c boot.img)"
}

head -c 1048576 /dev/zero >"$dir/flash.img"
head -c 1048576 /dev/zero >"$dir/boot.img"
sed -e "s|^name = .*|name = \"$name\"|" -e 's|"\.\./build/|"/cellvm/build/|g' \
    /cellvm/cells/test-agent.toml >"$dir/cell.toml"
cat >>"$dir/cell.toml" <<CELL

[[virtio_mmio]]
id = "flash0"
kind = "block"
path = "$dir/flash.img"
state = "reserved"

[[virtio_mmio]]
id = "boot0"
kind = "block"
path = "$dir/boot.img"

[[pci_bridge]]
id = "pcix"
kind = "ecam"
state = "reserved"

[[pci_bridge.device]]
slot = 1
kind = "test"
CELL
mkfifo "$dir/in"
exec 3<>"$dir/in"
cellvm run "$dir/cell.toml" <"$dir/in" >"$log" 2>&1 &
pid=$!
until_line "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR"

step boot
grep "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR" "$log" | head -n 1
host_view boot
guest_devices boot

step enable
api enable "$name" flash0
host_view enabled
guest_devices enabled

step disable
api disable "$name" flash0
host_view disabled
guest_devices disabled

step boot-disk
api disable "$name" boot0
host_view boot-off
guest_devices boot-off
api enable "$name" boot0
host_view boot-on
guest_devices boot-on

step bridge
api enable "$name" pcix
guest_devices bridge-on
api disable "$name" pcix
guest_devices bridge-off

step nak
send "agent-mode nak"
until_line "^CELLVM-AGENT-MODE nak "
api enable "$name" flash0
host_view nak
guest_devices nak

step end
send "exit"
wait "$pid"
echo "exit=$?"
rm -rf "$dir"
