#!/bin/sh
# arm64 boot benchmark (not a test; scripts/bench-arm64.sh runs it): cellvm
# against QEMU's virt board in the same arm64 L1, with the same kernel,
# initramfs and command line (cells/arm64/test-boot-1cpu.toml's). cellvm-bench
# boots each VMM round-robin, times spawn -> CELLVM-READY on the VMM's
# stdout, samples VmRSS minus the resident guest RAM, and prints a markdown
# table, which this script wraps in @@BENCH-TABLE-BEGIN/END lines.
# Needs an L1 built with scripts/build-l1.sh --arch arm64 --with-qemu.
#
# L1 kernel command line:
#   cellvm.bench_runs=N     rounds (default 10)
#   cellvm.bench_try_dtb=1  first boot QEMU once with cellvm's device tree
#                           (-dtb) and say whether it reached userspace
#                           (BENCH-DTB-PROBE); when it did, the benchmark's
#                           QEMU row uses -dtb too
# cellvm-timeout: 900
src_cell=/cellvm/cells/test-boot-1cpu.toml
# test-boot-1cpu with the report's echo wait at 30 s instead of 0: the guest
# then waits after the marker, so the VMM still runs when cellvm-bench
# samples its memory. Nothing before CELLVM-READY changes. Written next to
# the cell, so its relative paths (../../build/guest-arm64/) still hold.
cell=/cellvm/cells/bench-boot-1cpu.toml
dtb=/tmp/bench-boot.dtb
kernel=/cellvm/build/guest-arm64/Image
initrd=/cellvm/build/guest-arm64/initramfs.cpio.gz
mem_mib=256
param() { # param NAME DEFAULT: NAME=value from L1's kernel command line
    _v="$2"
    for _w in $(cat /proc/cmdline); do
        case "$_w" in "$1="*) _v="${_w#*=}" ;; esac
    done
    echo "$_v"
}
runs="$(param cellvm.bench_runs 10)"
try_dtb="$(param cellvm.bench_try_dtb 0)"

fail() {
    echo "BENCH-ERROR: $*"
    exit 1
}

for c in cellvm cellvm-bench qemu-system-aarch64; do
    command -v "$c" >/dev/null 2>&1 || fail "$c not in L1 (build it with scripts/build-l1.sh --arch arm64 --with-qemu)"
done
[ -c /dev/kvm ] || fail "/dev/kvm missing"
[ -f "$src_cell" ] || fail "$src_cell missing"
sed -e 's/^name = .*/name = "bench-boot-1cpu"/' -e 's/cellvm\.echo_timeout=0/cellvm.echo_timeout=30/' \
    "$src_cell" >"$cell" || fail "cannot write $cell"
append="$(sed -n 's/^cmdline = "\(.*\)"$/\1/p' "$cell")"
case "$append" in
    *cellvm.mode=report*cellvm.echo_timeout=30*) ;;
    *) fail "unexpected cmdline in $src_cell: $append" ;;
esac
case "$(sed -n 's/^size = "\(.*\)"$/\1/p' "$cell")" in
    "${mem_mib}M") ;;
    *) fail "$src_cell's memory is not ${mem_mib}M" ;;
esac
# QEMU must run here: its libraries and loader came from Debian's arm64
# packages (scripts/build-l1.sh --arch arm64 --with-qemu).
qemu_version="$(qemu-system-aarch64 --version 2>&1 | head -n1)"
case "$qemu_version" in
    "QEMU emulator version"*) echo "BENCH-QEMU-STARTS: qemu-system-aarch64 --version: $qemu_version" ;;
    *) fail "qemu-system-aarch64 does not run in L1: $qemu_version" ;;
esac
cellvm dtb "$cell" -o "$dtb" || fail "cellvm dtb $cell failed"

echo "BENCH-VERSIONS: L1 kernel $(uname -r) ($(cat /cellvm/l1-kernel 2>/dev/null)); $qemu_version; $(cellvm --version 2>&1 | head -n1); cmdline '$append'; cellvm DT $(wc -c <"$dtb") bytes"

# QEMU's virt board, KVM, the guest's RAM at 1 GiB as in the cell. The guest
# kernel (guest/kernel-arm64.config) has no PL011 driver, the virt board's
# UART; its console is a 16550 on both sides: cellvm's MMIO one, here QEMU's
# PCI 16550 (pci-serial, 1b36:0002, 8250_pci) on the virt board's ECAM host
# bridge. Both are ttyS0, so the command line stays the same. -no-reboot:
# the guest's debug-exit write finds no device under QEMU, and /init then
# reboots.
qemu="qemu-system-aarch64 -M virt,gic-version=3 -accel kvm -cpu host -smp 1 -m $mem_mib -nodefaults -no-user-config -nographic -no-reboot -chardev stdio,id=con0 -device pci-serial,chardev=con0 -kernel $kernel -initrd $initrd -append '$append'"
qemu_name="qemu-virt"
qemu_dt="QEMU's own device tree (-M virt generates it; no -dtb)"
if [ "$try_dtb" = 1 ]; then
    # cellvm's DT describes cellvm's board: a 16550 at 0x09000000 (virt has
    # a PL011 there), GICv3 redistributors at 0x08100000 (virt: 0x080a0000),
    # cellvm's own devices. One boot tells whether QEMU gets along with it.
    echo "BENCH-DTB-PROBE: one QEMU boot with -dtb $dtb (cellvm's device tree), 30 s limit"
    if cellvm-bench boot --runs 1 --mem-mib "$mem_mib" --marker CELLVM-READY --timeout-s 30 \
        --vmm "qemu-virt-dtb=$qemu -dtb $dtb" >/tmp/bench-dtb.md 2>/tmp/bench-dtb.err; then
        echo "BENCH-DTB-PROBE: booted: the QEMU row uses -dtb"
        qemu="$qemu -dtb $dtb"
        qemu_name="qemu-virt-dtb"
        qemu_dt="cellvm's device tree (-dtb $dtb)"
    else
        echo "BENCH-DTB-PROBE: did not reach CELLVM-READY: the QEMU row uses QEMU's own device tree"
        sed 's/^/BENCH-DTB-PROBE: | /' /tmp/bench-dtb.err | tail -n 30
    fi
fi
echo "BENCH-QEMU: $qemu_name = $qemu"
echo "BENCH-QEMU-DT: $qemu_dt"
echo "BENCH-CELLVM: cellvm = cellvm run --no-api $cell"

cellvm-bench boot --runs "$runs" --mem-mib "$mem_mib" --marker CELLVM-READY --timeout-s 60 \
    --vmm "cellvm=cellvm run --no-api $cell" \
    --vmm "$qemu_name=$qemu" >/tmp/bench-table.md
rc=$?
echo "@@BENCH-TABLE-BEGIN"
cat /tmp/bench-table.md
echo "@@BENCH-TABLE-END rc=$rc"
exit $rc
