#!/bin/sh
# Descriptions the attach scenarios of both architectures attach at run time
# (sourced, like agent-cell.sh; not a scenario).

# write_hot_devices DIR: in DIR, pci.toml (ECAM bridge hot0, buses from 8,
# test functions in slots 1 and 2), cam.toml (CAM bridge hotcam, buses from
# 12, a test function in slot 4), virtio.toml (virtio-mmio rng vio0), and
# virtio-pci.toml (ECAM bridge hotvio, buses from 16, a virtio-blk
# function in slot 1 on DIR/hot.img, a fresh 512 KiB image).
write_hot_devices() {
    cat >"$1/pci.toml" <<'DESC'
[[pci_bridge]]
id = "hot0"
kind = "ecam"
bus_start = 8
[[pci_bridge.device]]
slot = 1
kind = "test"
[[pci_bridge.device]]
slot = 2
kind = "test"
DESC
    cat >"$1/cam.toml" <<'DESC'
[[pci_bridge]]
id = "hotcam"
kind = "cam"
bus_start = 12
[[pci_bridge.device]]
slot = 4
kind = "test"
DESC
    cat >"$1/virtio.toml" <<'DESC'
[[virtio_mmio]]
id = "vio0"
kind = "rng"
DESC
    dd if=/dev/zero of="$1/hot.img" bs=1024 count=512 2>/dev/null
    cat >"$1/virtio-pci.toml" <<DESC
[[pci_bridge]]
id = "hotvio"
kind = "ecam"
bus_start = 16
[[pci_bridge.device]]
slot = 1
kind = "virtio"
virtio = "block"
path = "$1/hot.img"
DESC
}
