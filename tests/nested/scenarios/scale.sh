#!/bin/sh
# 64 devices in one cell (issue "Scale and speed"): a Linux cell boots with
# 24 virtio-mmio devices (16 rng, 8 block) and a PCI host bridge with 8
# cellvm test functions, then gains 16 more virtio-mmio devices (8 rng,
# 8 block) and two more bridges with 8 test functions each at runtime: 40
# virtio-mmio devices and 24 PCI functions, on the IOAPIC's 18 dynamic pins
# (shared, level-triggered). The guest checks every device (scale-check:
# bound, a marker read from and written to every disk, BAR0 and INTx of
# every test function); then every runtime device is detached, checked,
# attached again and checked again. The host reads back what the guest wrote.
# tests/nested_boot.rs checks the transcript.
# cellvm-timeout: 900
name=test-scale
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
log="$dir/console.log"
cell="$dir/scale.toml"
count() { grep -c -- "$1" "$log" 2>/dev/null; true; }
# wait_count PATTERN N [TRIES]: until N lines match (every 20 ms, default ~60 s).
wait_count() {
    _i=0
    while [ "$(count "$1")" -lt "$2" ] && [ "$_i" -lt "${3:-3000}" ]; do
        _i=$((_i + 1))
        usleep 20000
    done
}
step() { echo "step: $*"; echo "at: $(date +%s)"; }

# disk N: a 64 KiB image whose first line is marker-N.
disk() {
    dd if=/dev/zero of="$dir/d$1.img" bs=1024 count=64 2>/dev/null
    printf 'marker-%s\n' "$1" | dd of="$dir/d$1.img" conv=notrunc 2>/dev/null
}
# bridge ID BUS: a PCI host bridge on bus BUS with 8 test functions.
bridge() {
    printf '[[pci_bridge]]\nid = "%s"\nkind = "ecam"\nbus_start = %s\n' "$1" "$2"
    for s in 1 2 3 4 5 6 7 8; do
        printf '[[pci_bridge.device]]\nslot = %s\nkind = "test"\n' "$s"
    done
}

cat >"$cell" <<CELL
name = "$name"
[cpus]
count = 1
[[memory]]
size = "256M"
[kernel]
path = "/cellvm/build/guest/bzImage"
initrd = "/cellvm/build/guest/initramfs.cpio.gz"
cmdline = "console=ttyS0 quiet panic=-1 cellvm.mode=agent"
[console]
output = "stdout"
input = "stdin"
CELL
n=0
while [ "$n" -lt 16 ]; do
    printf '[[virtio_mmio]]\nid = "br%s"\nkind = "rng"\n' "$n" >>"$cell"
    n=$((n + 1))
done
n=0
while [ "$n" -lt 8 ]; do
    disk "b$n"
    printf '[[virtio_mmio]]\nid = "bb%s"\nkind = "block"\npath = "%s"\n' "$n" "$dir/db$n.img" >>"$cell"
    n=$((n + 1))
done
bridge bootpci 0 >>"$cell"

# The runtime devices, one description file each.
n=0
while [ "$n" -lt 8 ]; do
    printf '[[virtio_mmio]]\nid = "rr%s"\nkind = "rng"\n' "$n" >"$dir/rr$n.toml"
    disk "r$n"
    printf '[[virtio_mmio]]\nid = "rb%s"\nkind = "block"\npath = "%s"\n' "$n" "$dir/dr$n.img" >"$dir/rb$n.toml"
    n=$((n + 1))
done
bridge hot1 1 >"$dir/hot1.toml"
bridge hot2 2 >"$dir/hot2.toml"
runtime="rr0 rb0 rr1 rb1 rr2 rb2 rr3 rb3 rr4 rb4 rr5 rb5 rr6 rb6 rr7 rb7 hot1 hot2"

mkfifo "$dir/in"
exec 3<>"$dir/in"
cellvm run "$cell" <"$dir/in" >"$log" 2>&1 &
pid=$!
wait_count "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR" 1
step ready
grep "CELLVM-AGENT" "$log"

# attach_all: every runtime device; counts the failures.
attach_all() {
    _fail=0
    for _d in $runtime; do
        cellvm attach "$name" "$dir/$_d.toml" >/dev/null 2>"$dir/err" || { _fail=$((_fail + 1)); cat "$dir/err"; }
    done
    echo "attach-all: failures=$_fail"
}
detach_all() {
    _fail=0
    for _d in $runtime; do
        cellvm detach "$name" "$_d" >/dev/null 2>"$dir/err" || { _fail=$((_fail + 1)); cat "$dir/err"; }
    done
    echo "detach-all: failures=$_fail"
}
# check TAG: the guest's scale-check, waited for (it drives 24 functions).
check() {
    _c="$(count "CELLVM-SCALE $1:")"
    printf 'scale-check %s\n' "$1" >&3
    wait_count "CELLVM-SCALE $1:" $((_c + 1)) 9000
    grep "CELLVM-SCALE $1:" "$log" | tail -n 1
}

step boot-devices
check boot
step attach-all
attach_all
check full
step detach-all
detach_all
check detached
step reattach-all
attach_all
check again
step add-function
# A function more on the boot-time bridge, driven by the guest, then gone.
printf '[[pci_bridge.device]]\nslot = 9\nkind = "test"\n' >"$dir/fn.toml"
cellvm add-function "$name" bootpci "$dir/fn.toml"
echo "add-function rc=$?"
check added
cellvm remove-function "$name" bootpci 09.0
echo "remove-function rc=$?"
step host-reads
# What the guest wrote into sector 1 of each disk (two checks since the
# last marker write: the line is the same).
ok=0
for img in "$dir"/d*.img; do
    want="guest-marker-$(basename "$img" .img | sed 's/^d//')"
    got="$(dd if="$img" bs=512 skip=1 count=1 2>/dev/null | head -n 1)"
    [ "$got" = "$want" ] && ok=$((ok + 1))
done
echo "host-reads: disks=$(find "$dir" -name 'd*.img' | wc -l) guest_lines=$ok"
step exit
printf 'exit\n' >&3
wait $pid
rc=$?
exec 3>&-
echo "step: console"
echo "irq-problems: $(grep -c 'nobody cared\|Disabling IRQ\|WARNING:' "$log")"
grep -v "^CELLVM-DEV[+-]\|^CELLVM-KMSG" "$log" | tail -n 60
rm -rf "$dir"
echo "scenario: cellvm rc=$rc"
exit $rc
