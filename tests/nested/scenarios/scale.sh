#!/bin/sh
# 64 devices in one cell (issue "Scale and speed"), 40 virtio-mmio devices
# (24 rng, 16 block) and 24 PCI functions (3 host bridges with 8 cellvm test
# functions each), on the IOAPIC's 18 dynamic pins (shared, level-triggered):
#   boot:    a cell configured with all 64; a function more is added to one
#            of its bridges at run time and removed again;
#   runtime: a cell with none gains all 64 at run time, loses them all,
#            gains them all again.
# After each change the guest checks every device (scale-check: bound, a
# marker read from and written to every disk, BAR0 and INTx of every test
# function); the host reads back what the guest wrote into each disk.
# tests/nested_boot.rs checks the transcript.
# cellvm-timeout: 900
# cellvm-cost: 415
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
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

# disk NAME: a 64 KiB image whose first line is marker-NAME.
disk() {
    dd if=/dev/zero of="$dir/d$1.img" bs=1024 count=64 2>/dev/null
    printf 'marker-%s\n' "$1" | dd of="$dir/d$1.img" conv=notrunc 2>/dev/null
}
# rng ID / blk ID: a virtio-mmio table (blk with its own disk).
rng() { printf '[[virtio_mmio]]\nid = "%s"\nkind = "rng"\n' "$1"; }
blk() {
    disk "$1"
    printf '[[virtio_mmio]]\nid = "%s"\nkind = "block"\npath = "%s"\n' "$1" "$dir/d$1.img"
}
# bridge ID BUS: a PCI host bridge on bus BUS with 8 test functions.
bridge() {
    printf '[[pci_bridge]]\nid = "%s"\nkind = "ecam"\nbus_start = %s\n' "$1" "$2"
    for s in 1 2 3 4 5 6 7 8; do
        printf '[[pci_bridge.device]]\nslot = %s\nkind = "test"\n' "$s"
    done
}
# cell NAME: a cell file with the guest agent and no device.
cell() {
    cat <<CELL
name = "$1"
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
}
# devices PREFIX: the 64 devices' tables, one file each (PREFIX-ID.toml),
# their ids in $dir/PREFIX.ids.
devices() {
    : >"$dir/$1.ids"
    n=0
    while [ "$n" -lt 24 ]; do
        rng "$1r$n" >"$dir/$1-$1r$n.toml"
        echo "$1r$n" >>"$dir/$1.ids"
        n=$((n + 1))
    done
    n=0
    while [ "$n" -lt 16 ]; do
        blk "$1b$n" >"$dir/$1-$1b$n.toml"
        echo "$1b$n" >>"$dir/$1.ids"
        n=$((n + 1))
    done
    for b in 0 1 2; do
        bridge "$1p$b" "$b" >"$dir/$1-$1p$b.toml"
        echo "$1p$b" >>"$dir/$1.ids"
    done
}
# start NAME FILE: runs the cell, until its agent is ready.
start() {
    name="$1"
    log="$dir/$1.log"
    mkfifo "$dir/$1.in"
    exec 3<>"$dir/$1.in"
    cellvm run "$2" <"$dir/$1.in" >"$log" 2>&1 &
    pid=$!
    wait_count "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR" 1
    grep "CELLVM-AGENT" "$log"
}
# stop: the guest exits; the console's interrupt health and tail.
stop() {
    printf 'exit\n' >&3
    wait $pid
    rc=$?
    exec 3>&-
    echo "$name: cellvm rc=$rc"
    echo "$name: irq-problems: $(grep -c 'nobody cared\|Disabling IRQ\|WARNING:' "$log")"
    grep -v "^CELLVM-DEV[+-]\|^CELLVM-KMSG" "$log" | tail -n 20
    [ "$rc" -eq 0 ] || fail=1
}
# check TAG: the guest's scale-check, waited for (it drives 24 functions)
# until its whole line is in the log (it ends with END: the console may
# have written only part of it when the first bytes match).
check() {
    _p="CELLVM-SCALE $1: .* END"
    _c="$(count "$_p")"
    printf 'scale-check %s\n' "$1" >&3
    wait_count "$_p" $((_c + 1)) 9000
    grep -- "$_p" "$log" | tail -n 1
}
# each VERB PREFIX: cellvm VERB for every device of PREFIX; counts failures.
each() {
    _fail=0
    while read -r _id; do
        case "$1" in
            attach) cellvm attach "$name" "$dir/$2-$_id.toml" >/dev/null 2>"$dir/err" ;;
            detach) cellvm detach "$name" "$_id" >/dev/null 2>"$dir/err" ;;
        esac || { _fail=$((_fail + 1)); cat "$dir/err"; }
    done <"$dir/$2.ids"
    echo "$1-all: failures=$_fail"
}
fail=0

step boot
devices boot
cell scale-boot >"$dir/boot.toml"
cat "$dir"/boot-*.toml >>"$dir/boot.toml"
start scale-boot "$dir/boot.toml"
check boot
step add-function
# A function more on a boot-time bridge, driven by the guest, then gone.
printf '[[pci_bridge.device]]\nslot = 9\nkind = "test"\n' >"$dir/fn.toml"
cellvm add-function "$name" bootp0 "$dir/fn.toml"
echo "add-function rc=$?"
check added
cellvm remove-function "$name" bootp0 09.0
echo "remove-function rc=$?"
check removed
stop

step runtime
devices run
cell scale-run >"$dir/run.toml"
start scale-run "$dir/run.toml"
check empty
step attach-all
each attach run
check full
step detach-all
each detach run
check detached
step reattach-all
each attach run
check again
step stop-runtime
stop

step host-reads
# What the guests wrote into sector 1 of each disk.
ok=0
total=0
for img in "$dir"/d*.img; do
    total=$((total + 1))
    want="guest-marker-$(basename "$img" .img | sed 's/^d//')"
    got="$(dd if="$img" bs=512 skip=1 count=1 2>/dev/null | head -n 1)"
    [ "$got" = "$want" ] && ok=$((ok + 1))
done
echo "host-reads: disks=$total guest_lines=$ok"
rm -rf "$dir"
echo "scenario: fail=$fail"
exit $fail
