#!/bin/sh
# Two virtual PCI host bridges (ECAM + CAM) with test devices: the guest's
# pci-host-generic enumerates them; BAR reads/writes and INTx (through
# uio_pci_generic) are checked by tests/nested_boot.rs.
# cellvm-cost: 15
cell=/cellvm/cells/test-pci.toml
echo "scenario: cellvm run $cell"
cellvm run "$cell" 2>&1
rc=$?
echo "scenario: cellvm rc=$rc"
exit $rc
