#!/bin/sh
# Boot benchmark (not a test; scripts/bench-boot.sh runs it): cellvm against
# QEMU in the same L1, same kernel, initramfs, command line and device tree.
# cellvm-bench boots each VMM round-robin, times spawn -> CELLVM-READY on the
# VMM's stdout, samples VmRSS minus the resident guest RAM, and prints a
# markdown table, which this script wraps in @@BENCH-TABLE-BEGIN/END lines.
# Before every boot cellvm-bench scrubs cellvm.bench_scrub_mib MiB of L1's
# free memory (untimed), so every VMM starts on clean pages.
# Needs an L1 built with scripts/build-l1.sh --with-qemu.
# cellvm-timeout: 2400
cell=/cellvm/cells/bench-boot.toml
dtb=/tmp/bench-boot.dtb
# Rounds: cellvm.bench_runs=N on L1's command line (scripts/bench-boot.sh --runs N).
runs=8
read -r l1_cmdline </proc/cmdline
scrub_mib=256
for w in $l1_cmdline; do
    case "$w" in
        cellvm.bench_runs=*) runs="${w#*=}" ;;
        cellvm.bench_scrub_mib=*) scrub_mib="${w#*=}" ;;
    esac
done
mem_mib=256
# Must equal the cell's cmdline: every VMM boots the same guest the same way.
append="console=ttyS0 quiet panic=-1 cellvm.mode=report cellvm.echo_timeout=30"
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
cellvm dtb "$cell" -o "$dtb" || fail "cellvm dtb $cell failed"

echo "BENCH-VERSIONS: L1 kernel $(uname -r) ($(cat /cellvm/l1-kernel 2>/dev/null)); $qemu_version; $(cellvm --version 2>&1 | head -n1); DT $(wc -c <"$dtb") bytes"

# QEMU reads the kernel, initramfs and DT the way it does by default
# (fw_cfg; -dtb goes into the boot protocol's setup_data as SETUP_DTB, which
# is how cellvm hands its DT over too). The DT-booted kernel needs
# TSC-deadline and ARAT in CPUID, hence -cpu host.
qemu="qemu-system-x86_64 -accel kvm -cpu host -m $mem_mib -smp 1 -nodefaults -no-user-config -nographic -serial stdio -kernel $kernel -initrd $initrd -append '$append' -dtb $dtb"
# microvm trimmed to what the DT describes (16550 at 0x3f8, IOAPIC): no
# option ROMs (qboot loads the kernel itself), no RTC/PIT/PIC, no ACPI (the
# guest kernel has none; with acpi=off QEMU loads qboot.rom).
microvm="microvm,x-option-roms=off,rtc=off,isa-serial=on,pit=off,pic=off,acpi=off"

cellvm-bench boot --runs "$runs" --mem-mib "$mem_mib" --scrub-mib "$scrub_mib" --marker CELLVM-READY --timeout-s 30 \
    --vmm "cellvm=cellvm run --no-api $cell" \
    --vmm "cellvm-vmlinux=cellvm run --no-api --kernel /cellvm/build/guest/vmlinux $cell" \
    --vmm "cellvm-static=cellvm run --no-api /cellvm/cells/bench-boot-static.toml" \
    --vmm "cellvm-ci=cellvm run --no-api --kernel $kernel --initrd $initrd --cmdline '$append' --memory ${mem_mib}M --expect CELLVM-READY --timeout 30" \
    --vmm "qemu-microvm=$qemu -M $microvm" \
    --vmm "qemu-pc=$qemu -M pc" >/tmp/bench-table.md
rc=$?
echo "@@BENCH-TABLE-BEGIN"
cat /tmp/bench-table.md
echo "@@BENCH-TABLE-END rc=$rc"
exit $rc
