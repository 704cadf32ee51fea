#!/bin/sh
# Boot exit profile (not a test; `scripts/run-l1.sh --scenarios
# bench/boot-exits` on a --with-qemu L1): L1 KVM's own counters
# (/sys/kernel/debug/kvm: exits by kind, page faults, emulated
# instructions) from a VMM's start to the guest's CELLVM-READY, for the
# boot benchmark's guest under cellvm and QEMU microvm, the same for both
# VMMs; and cellvm's own `cellvm stats` at the marker (exits per kind,
# accesses per device). Prints "boot-exits" lines, read by eye
# (docs/benchmarks.md, "Where the guest's boot goes").
# cellvm-timeout: 600
# shellcheck source=tests/nested/bench/lib.sh
. "$(dirname "$0")/lib.sh"
cell=/cellvm/cells/bench-boot.toml
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
dtb="$dir/bench-boot.dtb"
kernel=/cellvm/build/guest/bzImage
initrd=/cellvm/build/guest/initramfs.cpio.gz
append="console=ttyS0 quiet panic=-1 cellvm.mode=report cellvm.echo_timeout=30"
microvm="microvm,x-option-roms=off,rtc=off,isa-serial=on,pit=off,pic=off,acpi=off"
kvm=/sys/kernel/debug/kvm
[ -e "$kvm" ] || mount -t debugfs none /sys/kernel/debug
[ -r "$kvm/exits" ] || { echo "boot-exits: no KVM counters in $kvm"; exit 1; }
cellvm dtb "$cell" -o "$dtb" || exit 1

# counters: every global KVM counter, one "name value" line each.
counters() {
    for f in "$kvm"/*; do
        [ -f "$f" ] && echo "$(basename "$f") $(cat "$f" 2>/dev/null)"
    done
}

# profile NAME CMD...: the counters' change from CMD's start to the
# marker on its stdout, then CMD killed.
profile() {
    name="$1"
    shift
    scrub
    counters >"$dir/before"
    "$@" >"$dir/$name.log" 2>&1 &
    vmm=$!
    wait_for "$dir/$name.log" CELLVM-READY
    counters >"$dir/after"
    if [ "$name" = cellvm ]; then
        cellvm stats bench-boot | sed "s/^/boot-exits $name stats /"
    fi
    kill -9 "$vmm" 2>/dev/null
    wait "$vmm" 2>/dev/null
    grep -q CELLVM-READY "$dir/$name.log" || echo "boot-exits $name: no marker"
    awk -v n="$name" 'NR == FNR { b[$1] = $2; next }
        ($2 - b[$1]) != 0 { printf "boot-exits %s %s %d\n", n, $1, $2 - b[$1] }' \
        "$dir/before" "$dir/after"
}

for round in 1 2; do
    echo "boot-exits round $round"
    profile cellvm cellvm run "$cell"
    profile qemu-microvm qemu-system-x86_64 -M "$microvm" -accel kvm -cpu host -m 256 -smp 1 \
        -nodefaults -no-user-config -nographic -no-reboot -serial stdio \
        -kernel "$kernel" -initrd "$initrd" -append "$append" -dtb "$dtb"
done
rm -rf "$dir"
