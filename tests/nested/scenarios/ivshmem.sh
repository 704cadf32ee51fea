#!/bin/sh
# Two cells, peers 0 and 1 of one ivshmem region, run at the same time,
# exchange a marker through shared memory and interrupt each other with
# doorbells and state changes, taken through uio_pci_generic
# (guest/initramfs/init, cellvm.mode=ivshmem; tests/nested_boot.rs checks it).
# cellvm-cost: 17
dir="$(mktemp -d)"
# The region file and doorbell sockets live here (L1 has no /dev/shm).
export CELLVM_RUNTIME_DIR="$dir/run"
echo "scenario: cellvm run test-ivshmem-0 and test-ivshmem-1 together"
cellvm run /cellvm/cells/test-ivshmem-0.toml >"$dir/0.log" 2>&1 &
p0=$!
cellvm run /cellvm/cells/test-ivshmem-1.toml >"$dir/1.log" 2>&1 &
p1=$!
wait $p0
rc0=$?
wait $p1
rc1=$?
sed 's/^/peer0: /' "$dir/0.log"
sed 's/^/peer1: /' "$dir/1.log"
rm -rf "$dir"
echo "scenario: rc0=$rc0 rc1=$rc1"
[ "$rc0" -eq 0 ] && [ "$rc1" -eq 0 ]
