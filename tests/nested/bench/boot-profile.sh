#!/bin/sh
# Boot profile (not a test): boots the boot benchmark's guest under cellvm
# (bzImage and vmlinux) and under QEMU microvm with
# cellvm.mode=bootlog, which prints the guest kernel's log with timestamps and
# its interrupt counts, to see where boot time goes in each VMM.
# Run: CELLVM_L1_WITH_QEMU=1 scripts/setup.sh, then
#      scripts/run-l1.sh --scenarios bench/boot-profile
# (cellvm's side also logs at debug level). L1 command-line options:
# cellvm.bench_runs=N rounds (default 3); cellvm.bench_guest_args=A,B
# appends "A B" to every guest's command line (e.g. initcall_debug).
# Before every boot, untimed, 256 MiB of L1 memory is faulted in and freed,
# as in the boot benchmark (docs/benchmarks.md, "The rig's memory state").
# cellvm-timeout: 600
# shellcheck source=tests/nested/bench/lib.sh
. "$(dirname "$0")/lib.sh"
extra="$(param cellvm.bench_guest_args "" | tr , ' ')"
cell=/cellvm/cells/bench-boot.toml
dtb=/tmp/bench-boot.dtb
append="console=ttyS0 quiet panic=-1 cellvm.mode=report cellvm.echo_timeout=30 cellvm.mode=bootlog${extra:+ $extra}"
kernel=/cellvm/build/guest/bzImage
initrd=/cellvm/build/guest/initramfs.cpio.gz
runs="$(param cellvm.bench_runs 3)"
echo "L1 THP: enabled=$(cat /sys/kernel/mm/transparent_hugepage/enabled) defrag=$(cat /sys/kernel/mm/transparent_hugepage/defrag)"
echo "L1 clocksource: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
cellvm dtb "$cell" -o "$dtb" || exit 1
microvm="microvm,x-option-roms=off,rtc=off,isa-serial=on,pit=off,pic=off,acpi=off"
i=0
while [ "$i" -lt "$runs" ]; do
    i=$((i + 1))
    echo "== cellvm run $i"
    scrub
    start="$(cut -d' ' -f1 /proc/uptime)"
    CELLVM_LOG=debug cellvm run --no-api --cmdline-append "cellvm.mode=bootlog${extra:+ $extra}" "$cell" 2>&1
    echo "== cellvm run $i rc=$? (L1 uptime $start -> $(cut -d' ' -f1 /proc/uptime))"
    echo "== cellvm-vmlinux run $i"
    scrub
    start="$(cut -d' ' -f1 /proc/uptime)"
    CELLVM_LOG=debug cellvm run --no-api --kernel /cellvm/build/guest/vmlinux --cmdline-append "cellvm.mode=bootlog${extra:+ $extra}" "$cell" 2>&1
    echo "== cellvm-vmlinux run $i rc=$? (L1 uptime $start -> $(cut -d' ' -f1 /proc/uptime))"
    echo "== qemu-microvm run $i"
    scrub
    start="$(cut -d' ' -f1 /proc/uptime)"
    timeout 60 qemu-system-x86_64 -M "$microvm" -accel kvm -cpu host -m 256 -smp 1 -nodefaults -no-user-config \
        -nographic -no-reboot -serial stdio -kernel "$kernel" -initrd "$initrd" -append "$append" -dtb "$dtb" 2>&1 | sed "/CELLVM-BOOTLOG-END/q"
    echo "== qemu-microvm run $i rc=$? (L1 uptime $start -> $(cut -d' ' -f1 /proc/uptime))"
done
