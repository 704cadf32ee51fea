#!/bin/sh
# virtio-blk benchmark (not a test; scripts/bench-virtio-blk.sh runs it):
# cellvm against QEMU microvm in the same L1, with the same kernel,
# initramfs, command line, device tree and disk image. In both the disk is a
# virtio-blk-pci function at 00:01.0 behind a pci-host-ecam-generic bridge at
# 0xe0000000 (cellvm's emulated bridge; QEMU microvm's PCIe host, pcie=on,
# which sits at the same ECAM base), using MSI-X. The guest's /init
# (cellvm.mode=blkbench) runs /bin/blkbench on /dev/vda: a sequential read of
# the whole disk in 128 KiB blocks, then 4 KiB random reads, O_DIRECT, one
# request at a time. cellvm-bench runs the VMMs round-robin and prints the
# table, which this script wraps in @@BENCH-TABLE-BEGIN/END lines.
# Needs an L1 built with scripts/build-l1.sh --with-qemu.
# cellvm-timeout: 900
cell=/cellvm/cells/bench-virtio-blk.toml
dtb=/tmp/bench-virtio-blk.dtb
img_dir=/tmp/cellvm-bench-blk
img=$img_dir/disk.img
img_mib=64
runs=5
read -r l1_cmdline </proc/cmdline
for w in $l1_cmdline; do
    case "$w" in cellvm.bench_runs=*) runs="${w#*=}" ;; esac
done
# Must equal the cell's cmdline.
append="console=ttyS0 quiet panic=-1 cellvm.mode=blkbench cellvm.blk_reads=2000"
kernel=/cellvm/build/guest/bzImage
initrd=/cellvm/build/guest/initramfs.cpio.gz

fail() {
    echo "BENCH-ERROR: $*"
    exit 1
}

for c in cellvm cellvm-bench qemu-system-x86_64; do
    command -v "$c" >/dev/null 2>&1 || fail "$c not in L1 (build it with scripts/build-l1.sh --with-qemu)"
done
[ -c /dev/kvm ] || fail "/dev/kvm missing"
grep -q "^cmdline = \"$append\"\$" "$cell" || fail "$cell's cmdline differs from this script's: $(grep '^cmdline' "$cell")"
qemu_version="$(qemu-system-x86_64 --version 2>&1 | head -n1)" ||
    fail "qemu-system-x86_64 does not run in L1: $qemu_version"
# The image lives in L1's tmpfs (RAM): both VMMs read it from memory, so the
# figures are the VMMs' request paths, not a disk.
mkdir -p "$img_dir"
dd if=/dev/zero of="$img" bs=1M count=$img_mib 2>/dev/null || fail "cannot create $img"
cellvm dtb "$cell" -o "$dtb" || fail "cellvm dtb $cell failed"
# The same cell with the fast path off (ioeventfd = false: every notify
# exits to cellvm's vCPU thread), to show what the ioeventfds buy.
cell_exit=/cellvm/cells/bench-virtio-blk-exit.toml
sed 's/^virtio = "block"$/&\nioeventfd = false/' "$cell" >"$cell_exit"
grep -q '^ioeventfd = false$' "$cell_exit" || fail "could not derive $cell_exit"

echo "BENCH-VERSIONS: L1 kernel $(uname -r) ($(cat /cellvm/l1-kernel 2>/dev/null)); $qemu_version; $(cellvm --version 2>&1 | head -n1); image ${img_mib} MiB in tmpfs"

# As in the boot benchmark: microvm trimmed to what the DT describes, plus
# its PCIe host (pcie=on: ECAM at 0xe0000000, 32-bit window from
# 0xc0000000; QEMU creates it only with ACPI on, which the guest kernel,
# built without ACPI, ignores), the disk on it at 00:01.0, modern virtio only
# (like cellvm), QEMU's default block settings (cache=writeback,
# aio=threads, ioeventfd on).
qemu="qemu-system-x86_64 -accel kvm -cpu host -m 256 -smp 1 -nodefaults -no-user-config -nographic -serial stdio"
qemu="$qemu -M microvm,x-option-roms=off,rtc=off,isa-serial=on,pit=off,pic=off,pcie=on"
qemu="$qemu -kernel $kernel -initrd $initrd -append '$append' -dtb $dtb"
qemu="$qemu -drive file=$img,format=raw,if=none,id=disk0 -device virtio-blk-pci,drive=disk0,bus=pcie.0,addr=1,disable-legacy=on"

cellvm-bench blk --runs "$runs" --timeout-s 120 \
    --vmm "cellvm=cellvm run --no-api $cell" \
    --vmm "cellvm-exit=cellvm run --no-api $cell_exit" \
    --vmm "qemu-microvm=$qemu" >/tmp/bench-table.md
rc=$?
echo "@@BENCH-TABLE-BEGIN"
cat /tmp/bench-table.md
echo "@@BENCH-TABLE-END rc=$rc"
exit $rc
