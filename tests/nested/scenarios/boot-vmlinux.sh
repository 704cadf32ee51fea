#!/bin/sh
# Boot the uncompressed guest kernel (cells/test-vmlinux.toml, report mode).
# The host harness expects CELLVM-READY, a report with cpus=1 and the cell's
# device tree, the boot-timer log line and rc=0.
cell=/cellvm/cells/test-vmlinux.toml
echo "scenario: cellvm run $cell"
start="$(cut -d' ' -f1 /proc/uptime)"
cellvm run "$cell" 2>&1
rc=$?
echo "scenario: cellvm rc=$rc after $(awk -v a="$start" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.2f", b - a }') s"
exit $rc
