#!/bin/sh
# The seeds' shared flash (000/001): cells host and bmc both declare flash0
# (one virtio-blk image), okay in host, reserved in bmc. The host guest
# writes a marker; `cellvm move flash0 --from host --to bmc` (the host
# guest lets the disk go, the BMC guest takes it); the BMC reads the marker
# and writes "new firmware"; the flash moves back and the host reads it. A
# BMC that refuses (its agent NAKs) leaves the flash with the host, usable.
# Then 50 moves back and forth, the data checked at the end; a host guest
# that has the flash mounted refuses to let it go (its consent hook); and a
# cell that dies mid-move (the BMC, then the host) leaves the flash in the
# documented state (docs/partitioning.md).
# tests/nested_boot.rs checks the transcript ("step: NAME"; "$ cellvm ..."
# then its output and "rc=N"; "host: ..." / "bmc: ..." guest lines).
# cellvm-timeout: 420
# cellvm-cost: 125
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
step() { echo "step: $*"; }
api() { echo "\$ cellvm $*"; cellvm "$@" 2>&1; echo "rc=$?"; }

# until_line LOG PATTERN [N]: until LOG has N (default 1) lines matching
# PATTERN (checked every 20 ms, up to ~60 s).
until_line() {
    _i=0
    while [ "$(grep -c -- "$2" "$1" 2>/dev/null)" -lt "${3:-1}" ]; do
        if [ "$_i" -ge 3000 ]; then
            echo "scenario: gave up waiting for '$2' in $1"
            return 1
        fi
        _i=$((_i + 1))
        usleep 20000
    done
}
# guest CELL COMMAND PATTERN: send COMMAND to CELL's console, wait for one
# more line matching PATTERN, print it as "CELL: line".
guest() {
    _log="$dir/$1.log"
    _n=$(($(grep -c -- "$3" "$_log" 2>/dev/null) + 1))
    case "$1" in host) printf '%s\n' "$2" >&3 ;; bmc) printf '%s\n' "$2" >&4 ;; esac
    until_line "$_log" "$3" "$_n" && grep -- "$3" "$_log" | sed -n "${_n}p" | sed "s/^/$1: /"
}

head -c 1048576 /dev/zero >/cellvm/build/flash0.img
mkfifo "$dir/host.in" "$dir/bmc.in"
exec 3<>"$dir/host.in" 4<>"$dir/bmc.in"
cellvm run /cellvm/cells/host.toml <"$dir/host.in" >"$dir/host.log" 2>&1 &
host_pid=$!
cellvm run /cellvm/cells/bmc.toml <"$dir/bmc.in" >"$dir/bmc.log" 2>&1 &
bmc_pid=$!
until_line "$dir/host.log" "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR"
until_line "$dir/bmc.log" "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR"

step start
grep -h "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR" "$dir/host.log" "$dir/bmc.log"
api check /cellvm/cells/host.toml /cellvm/cells/bmc.toml
guest host "blk-write host-marker-1" "^CELLVM-BLK-WRITE"
guest bmc "blk-read" "^CELLVM-BLK-READ"

step to-bmc
api move flash0 --from host --to bmc
guest host "blk-read" "^CELLVM-BLK-READ"
guest bmc "blk-read" "^CELLVM-BLK-READ"
guest bmc "blk-write new-firmware" "^CELLVM-BLK-WRITE"
echo "claims: $(cellvm cells | grep flash0.img | sed 's/ (pid [0-9]*)//; s/: image [0-9:]* / /')"

step to-host
api move flash0 --from bmc --to host
guest host "blk-read" "^CELLVM-BLK-READ"
guest bmc "blk-read" "^CELLVM-BLK-READ"

step bmc-refuses
guest bmc "agent-mode nak" "^CELLVM-AGENT-MODE nak "
api move flash0 --from host --to bmc
guest host "blk-read" "^CELLVM-BLK-READ"
guest bmc "agent-mode normal" "^CELLVM-AGENT-MODE normal "

step back-and-forth
ok=0
i=0
while [ "$i" -lt 25 ]; do
    i=$((i + 1))
    cellvm move flash0 --from host --to bmc >/dev/null 2>&1 &&
        cellvm move flash0 --from bmc --to host >/dev/null 2>&1 && ok=$((ok + 1))
done
echo "round trips: $ok of 25"
guest host "blk-read" "^CELLVM-BLK-READ"

step host-refuses
guest host "blk-mount" "^CELLVM-BLK-MOUNT"
api move flash0 --from host --to bmc
# Asked the resident responder (no program run); without it, the hook.
until_line "$dir/host.log" "consent responder refused to disable" &&
    grep -m1 "consent responder refused to disable" "$dir/host.log" | sed 's/^/host: /'
guest host "consent-responder-stop" "^CELLVM-CONSENT-RESPONDER"
api move flash0 --from host --to bmc
until_line "$dir/host.log" "consent hook .* refused to disable" &&
    grep -m1 "consent hook .* refused to disable" "$dir/host.log" | sed 's/^/host: /'
guest host "consent-responder-start" "^CELLVM-CONSENT-RESPONDER"
guest host "blk-umount" "^CELLVM-BLK-UMOUNT"
guest host "blk-write after-mount" "^CELLVM-BLK-WRITE"
api move flash0 --from host --to bmc
guest bmc "blk-read" "^CELLVM-BLK-READ"
api move flash0 --from bmc --to host

# until_cmd PATTERN COMMAND...: until COMMAND's output matches PATTERN
# (every 20 ms, up to ~60 s).
until_cmd() {
    _p="$1"
    shift
    _i=0
    until "$@" 2>/dev/null | grep -q -- "$_p"; do
        if [ "$_i" -ge 3000 ]; then
            echo "scenario: gave up waiting for '$_p' from $*"
            return 1
        fi
        _i=$((_i + 1))
        usleep 20000
    done
}

step bmc-dies
# The BMC holds the enable unanswered; it dies once the host has let go.
guest bmc "agent-mode silent" "^CELLVM-AGENT-MODE silent "
cellvm move flash0 --from host --to bmc --timeout 30 >"$dir/move.out" 2>&1 &
move_pid=$!
until_cmd "id=flash0 .*state=reserved" cellvm devices host
kill -9 "$bmc_pid"
wait "$move_pid"
echo "move rc=$?"
sed 's/^/move: /' "$dir/move.out"
guest host "blk-read" "^CELLVM-BLK-READ"
echo "claims: $(cellvm cells | grep flash0.img | sed 's/ (pid [0-9]*)//; s/: image [0-9:]* / /')"

step host-dies
cellvm run /cellvm/cells/bmc.toml <"$dir/bmc.in" >"$dir/bmc.log" 2>&1 &
bmc_pid=$!
until_line "$dir/bmc.log" "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR"
# The host holds the disable unanswered; it dies once the BMC has claimed.
guest host "agent-mode silent" "^CELLVM-AGENT-MODE silent "
cellvm move flash0 --from host --to bmc --timeout 30 >"$dir/move.out" 2>&1 &
move_pid=$!
until_cmd "cell bmc.*flash0.img" cellvm cells
kill -9 "$host_pid"
wait "$move_pid"
echo "move rc=$?"
echo "claims: $(cellvm cells | grep flash0.img | sed 's/ (pid [0-9]*)//; s/: image [0-9:]* / /')"
api enable bmc flash0
guest bmc "blk-read" "^CELLVM-BLK-READ"

step end
printf 'exit\n' >&4
wait "$bmc_pid"
echo "bmc exit=$?"
rm -rf "$dir"
