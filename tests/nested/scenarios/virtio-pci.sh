#!/bin/sh
# The virtio scenario on the virtio-pci transport (cells/test-virtio-pci.toml:
# the same devices as virtio-pci functions behind an ECAM bridge).
# cellvm-cost: 13
exec "$(dirname "$0")/virtio.sh" test-virtio-pci
