#!/bin/sh
# Boot a 1-vCPU cell in report mode (cells/test-boot-1cpu.toml, or the cell
# given as $1).
# The host harness expects CELLVM-READY, a report with cpus=1, the boot-timer
# log line and rc=0.
# cellvm-cost: 7
cell="${1:-/cellvm/cells/test-boot-1cpu.toml}"
echo "scenario: cellvm run $cell"
start="$(cut -d' ' -f1 /proc/uptime)"
cellvm run "$cell" 2>&1
rc=$?
echo "scenario: cellvm rc=$rc after $(awk -v a="$start" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.2f", b - a }') s"
exit $rc
