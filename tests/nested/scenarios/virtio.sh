#!/bin/sh
# virtio-mmio devices with real backends: the guest reads /dev/hwrng, reads
# the host's marker from the disk and writes its own (checked here after the
# cell stopped), and writes a line to hvc0 (checked in the host file).
dir=/tmp/cellvm-virtio
rm -rf "$dir"
mkdir -p "$dir"
dd if=/dev/zero of="$dir/disk.img" bs=1024 count=1024 2>/dev/null
printf 'CELLVM-HOST-MARKER' | dd of="$dir/disk.img" conv=notrunc 2>/dev/null
echo "scenario: cellvm run /cellvm/cells/test-virtio.toml"
cellvm run /cellvm/cells/test-virtio.toml 2>&1
rc=$?
echo "host: disk sector 1=$(dd if="$dir/disk.img" bs=512 skip=1 count=1 2>/dev/null | tr -d '\000')"
echo "host: hvc0.out=$(cat "$dir/hvc0.out" 2>/dev/null)"
echo "scenario: cellvm rc=$rc"
exit $rc
