#!/bin/sh
# Boot a 2-vCPU cell with an ECAM PCI host in report mode
# (cells/test-boot-2cpu.toml).
# The host harness expects CELLVM-READY, a report with cpus=2, the boot-timer
# log line and rc=0.
# cellvm-cost: 9
cell=/cellvm/cells/test-boot-2cpu.toml
echo "scenario: cellvm run $cell"
start="$(cut -d' ' -f1 /proc/uptime)"
cellvm run "$cell" 2>&1
rc=$?
echo "scenario: cellvm rc=$rc after $(awk -v a="$start" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.2f", b - a }') s"
exit $rc
