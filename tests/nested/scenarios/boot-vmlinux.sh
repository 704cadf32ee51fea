#!/bin/sh
# Boot the uncompressed guest kernel (cells/test-vmlinux.toml, report mode):
# boot-1cpu's steps with another cell. The host harness expects CELLVM-READY,
# a report with cpus=1 and the cell's device tree, the boot-timer log line
# and rc=0.
# cellvm-cost: 7
exec sh "$(dirname "$0")/boot-1cpu.sh" /cellvm/cells/test-vmlinux.toml
