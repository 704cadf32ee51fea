#!/bin/sh
# arm64: boot a 2-vCPU cell in report mode (the second vCPU started by
# PSCI CPU_ON)
# (cells/arm64/test-boot-2cpu.toml).
# The host harness expects CELLVM-READY, a report with cpus=2, the boot-timer
# log line and rc=0.
cell=/cellvm/cells/test-boot-2cpu.toml
echo "scenario: cellvm run $cell"
start="$(cut -d' ' -f1 /proc/uptime)"
cellvm run "$cell" 2>&1
rc=$?
echo "scenario: cellvm rc=$rc after $(awk -v a="$start" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.2f", b - a }') s"
exit $rc
