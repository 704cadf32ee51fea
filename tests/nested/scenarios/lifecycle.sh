#!/bin/sh
# The lifecycle of real Linux cells (docs/partitioning.md): `cellvm
# shutdown` acknowledged by the guest agent (the cell ends with the guest's
# own poweroff: exit 0), refused by an agent that NAKs (test_mode 1),
# unanswered by a silent one (test_mode 2) and then forced (exit 4); a
# disk's image claim released by its detach; and two ivshmem peers created
# with --paused and resumed together.
# tests/nested_boot.rs checks the transcript: "step: NAME" sections, each
# "$ cellvm ..." followed by its output and "rc=N"; "exit=N" is a cell's
# exit status.
# cellvm-timeout: 420
# cellvm-cost: 57
cell=/cellvm/cells/test-agent.toml
name=test-agent
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
step() { echo "step: $*"; }
api() { echo "\$ cellvm $*"; cellvm "$@" 2>&1; echo "rc=$?"; }

# until_line FILE PATTERN: until FILE has a line matching PATTERN (checked
# every 20 ms, up to ~60 s: other work may load the host).
until_line() {
    _i=0
    until grep -q -- "$2" "$1" 2>/dev/null; do
        if [ "$_i" -ge 3000 ]; then
            echo "scenario: gave up waiting for '$2' in $1"
            return 1
        fi
        _i=$((_i + 1))
        usleep 20000
    done
}

# start_agent_cell LOG: the agent cell in the background (console in LOG,
# input from a fifo on fd 3, pid in $pid), until its agent is up.
start_agent_cell() {
    log="$1"
    rm -f "$dir/in"
    mkfifo "$dir/in"
    exec 3<>"$dir/in"
    cellvm run "$cell" <"$dir/in" >"$log" 2>&1 &
    pid=$!
    until_line "$log" "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR" || return 1
    grep "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR" "$log" | head -n 1
}

# agent_mode MODE: the guest agent's test_mode (docs/channel.md).
agent_mode() {
    printf 'agent-mode %s\n' "$1" >&3
    until_line "$log" "^CELLVM-AGENT-MODE $1 " && echo "guest: agent-mode $1"
}

# finish: waits for the cell, prints its exit status and cellvm's last line.
finish() {
    wait "$pid"
    echo "exit=$?"
    grep "^cellvm: cell $name stopped" "$log"
}

step nak
start_agent_cell "$dir/nak.log"
agent_mode nak
api shutdown "$name" --timeout 20
api status "$name"

step silent
agent_mode silent
api shutdown "$name" --timeout 2
api shutdown "$name" --timeout 2 --force
finish

step detach-releases
# A disk attached at run time claims its image; its detach releases it.
start_agent_cell "$dir/ack.log"
head -c 65536 /dev/zero >"$dir/hot.img"
cat >"$dir/disk.toml" <<DESC
[[virtio_mmio]]
id = "hotdisk"
kind = "block"
path = "$dir/hot.img"
DESC
api attach "$name" "$dir/disk.toml"
echo "claims while attached: $(cellvm cells | grep -c 'hot.img')"
api detach "$name" hotdisk
echo "claims after detach: $(cellvm cells | grep -c 'hot.img')"

step ack
api shutdown "$name" --timeout 120
finish

step paused
for p in 0 1; do
    cellvm run --paused "/cellvm/cells/test-ivshmem-$p.toml" >"$dir/p$p.log" 2>&1 &
    eval "pid$p=\$!"
done
for p in 0 1; do
    _i=0
    until cellvm status "test-ivshmem-$p" >/dev/null 2>&1; do
        if [ "$_i" -ge 3000 ]; then
            echo "scenario: test-ivshmem-$p never served its socket"
            break
        fi
        _i=$((_i + 1))
        usleep 20000
    done
    echo "peer$p: $(cellvm status "test-ivshmem-$p" 2>&1 | tr ' ' '\n' | grep '^state=')"
done
api resume test-ivshmem-0
api resume test-ivshmem-1
wait "$pid0"
echo "peer0: exit=$?"
wait "$pid1"
echo "peer1: exit=$?"
grep -h "ivshmem: peer" "$dir/p0.log" "$dir/p1.log"
rm -rf "$dir"
