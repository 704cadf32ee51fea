#!/bin/sh
# virtio devices with real backends (cells/test-virtio.toml, virtio-mmio; or
# the cell named by $1, its files in /tmp/cellvm-${1#test-}, as virtio-pci.sh
# does): the guest reads /dev/hwrng, reads the host's marker from the disk and
# writes its own (checked here after the cell stopped), and answers a line
# over hvc0 (a pty here).
# cellvm-cost: 13
cell="${1:-test-virtio}"
dir="/tmp/cellvm-${cell#test-}"
rm -rf "$dir"
mkdir -p "$dir"
dd if=/dev/zero of="$dir/disk.img" bs=1024 count=1024 2>/dev/null
printf 'CELLVM-HOST-MARKER' | dd of="$dir/disk.img" conv=notrunc 2>/dev/null
echo "scenario: cellvm run /cellvm/cells/$cell.toml"
cellvm run "/cellvm/cells/$cell.toml" >"$dir/console.log" 2>&1 &
pid=$!
# The console pty: wait for its link, read it, and once the guest says
# hvc0-ready send it a line (each wait ~10 s at most).
i=0
while [ ! -e "$dir/hvc0.pty" ] && [ "$i" -lt 500 ]; do
    i=$((i + 1))
    usleep 20000
done
if [ -e "$dir/hvc0.pty" ]; then
    cat "$dir/hvc0.pty" >"$dir/hvc0.out" 2>/dev/null &
    reader=$!
    i=0
    while ! grep -q hvc0-ready "$dir/hvc0.out" 2>/dev/null && [ "$i" -lt 1500 ]; do
        i=$((i + 1))
        usleep 20000
    done
    echo "ping-from-host" >"$dir/hvc0.pty"
else
    echo "host: no pty link at $dir/hvc0.pty"
fi
wait $pid
rc=$?
[ -n "${reader:-}" ] && kill "$reader" 2>/dev/null
cat "$dir/console.log"
echo "host: disk sector 1=$(dd if="$dir/disk.img" bs=512 skip=1 count=1 2>/dev/null | tr -d '\000')"
echo "host: hvc0.out=$(tr -d '\r' <"$dir/hvc0.out" 2>/dev/null | tr '\n' ' ')"
echo "host: pty link after exit: $([ -e "$dir/hvc0.pty" ] && echo present || echo gone)"
echo "scenario: cellvm rc=$rc"
exit $rc
