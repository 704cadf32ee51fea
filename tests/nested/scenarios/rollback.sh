#!/bin/sh
# Rollback paths of runtime attach/detach against a real guest whose agent
# misbehaves on purpose (cells/test-agent.toml, agent mode; the agent's
# test_mode is a test hook, docs/channel.md "Test modes"): it refuses every
# change (nak), holds requests unanswered and answers them late (silent),
# unloads in the middle of an attach; and detach --force of a device the
# guest refuses to remove. tests/nested_boot.rs checks the transcript.
# Steps are marked "step: NAME"; in a step, "host: ..." lines are the
# host's view (cellvm devices --json, files), "guest: ..." lines are what
# the guest printed since the previous snapshot, ending with a snapshot of
# its devices ("guest: CELLVM-DEVICES TAG: ...").
# cellvm-timeout: 420
# cellvm-cost: 62
name=test-agent
# shellcheck source=tests/nested/scenarios/lib/agent-cell.sh
. "$(dirname "$0")/lib/agent-cell.sh"
start_cell /cellvm/cells/test-agent.toml
wait_tries=3000
agent_tries=1800
# host_agent_ready: agent_ready, said in the transcript (up to ~90 s).
host_agent_ready() {
    if agent_ready; then
        echo "host: agent ready"
    else
        echo "host: agent NOT ready"
        return 1
    fi
}
send() { printf '%s\n' "$*" >&3; }

# agent_mode normal|nak|silent: set the guest agent's test_mode, print the
# guest's confirmation.
agent_mode() {
    act_and_wait "^CELLVM-AGENT-MODE $1 " send "agent-mode $1"
    grep "^CELLVM-AGENT-MODE $1 " "$log" | tail -n 1 | sed 's/^/guest: /'
}
# guest_sync TAG: the guest prints what changed since its last poll, then
# "CELLVM-DEVICES TAG: <its devices>"; print every guest line since the
# previous guest_sync up to that one. A guest that answers is alive.
seen=0
# A second snapshot (TAG-end) is asked for right after: once its line
# starts, TAG's line is whole in the log (the guest prints it byte by byte
# through the UART; reading it earlier could cut it short).
guest_sync() {
    send "devices $1"
    send "devices $1-end"
    wait_count "^CELLVM-DEVICES $1-end:" 1 || return 1
    _end="$(grep -n "^CELLVM-DEVICES $1:" "$log" | head -n 1 | cut -d: -f1)"
    sed -n "$((seen + 1)),${_end}p" "$log" |
        grep '^CELLVM-\(DEV[+-] \|DEVICES \|KMSG: \|AGENT-\)' |
        grep -v '^CELLVM-DEVICES [^:]*-end:' | sed 's/^/guest: /'
    seen="$_end"
}
# host_devices TAG: the cell's device list as JSON, on one line.
host_devices() { echo "host: devices $1: $(cellvm devices "$name" --json 2>&1)"; }
# host_file: whether the attached UART's output file exists.
host_file() {
    if [ -e "$dir/u.out" ]; then echo "host: u.out present"; else echo "host: u.out absent"; fi
}
# bg_attach FILE DESC TIMEOUT: an attach in the background, its output in
# FILE; its pid in $bg.
bg_attach() {
    api attach "$name" "$2" --timeout "$3" >"$1" 2>&1 &
    bg=$!
}

cat >"$dir/uart.toml" <<DESC
[[uart]]
id = "ser1"
path = "$dir/u.out"
DESC
cat >"$dir/pci.toml" <<'DESC'
[[pci_bridge]]
id = "hot0"
kind = "ecam"
bus_start = 8
[[pci_bridge.device]]
slot = 1
kind = "test"
DESC

wait_count "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR" 1
step ready
grep "CELLVM-AGENT" "$log"

step control
# A normal attach creates the UART's output file (so "u.out absent" below
# means something); a normal detach keeps it.
act_and_wait "CELLVM-DEV+ .*serial" api attach "$name" "$dir/uart.toml"
host_file
act_and_wait "CELLVM-DEV- .*serial" api detach "$name" ser1
host_file
rm -f "$dir/u.out"
host_devices start
guest_sync start

step nak
agent_mode nak
api attach "$name" "$dir/uart.toml"
api attach "$name" "$dir/pci.toml"
host_devices nak
host_file
guest_sync nak

step timeout
# The agent takes both requests off the mailbox and holds them.
agent_mode silent
api attach "$name" "$dir/uart.toml" --timeout 2
api attach "$name" "$dir/pci.toml" --timeout 2
host_devices timeout
host_file
guest_sync timeout

step late-answers
# A third attach, with time to spare, is held too. Back in normal mode the
# agent answers all three in order: the first two late (cellvm refuses them
# with -ETIMEDOUT and the agent removes the overlays nobody owns), the third
# in time: only that one may answer the attach.
_c="$(count "holding APPLY_OVERLAY")"
bg_attach "$dir/late.out" "$dir/pci.toml" 60
wait_count "holding APPLY_OVERLAY" $((_c + 1))
_c="$(count "CELLVM-DEV+ .*:08:01.0")"
agent_mode normal
wait "$bg"
cat "$dir/late.out"
wait_count "CELLVM-DEV+ .*:08:01.0" $((_c + 1))
host_devices late
grep "late ACK" "$log" | sed 's/^/host-log: /'
api status "$name" --json
guest_sync late
act_and_wait "CELLVM-DEV- e[0-9a-f]*\.pci" api detach "$name" hot0
host_file
host_devices late-done
guest_sync late-done

step resync
# Nothing of the refused and timed-out attaches is left on the buses: the
# same UART attaches (and creates its file) and goes again.
act_and_wait "CELLVM-DEV+ .*serial" api attach "$name" "$dir/uart.toml"
host_file
act_and_wait "CELLVM-DEV- .*serial" api detach "$name" ser1
rm -f "$dir/u.out"
host_devices resync
guest_sync resync

step agent-dies
# The agent holds the attach, then unloads (BYE): the attach must fail at
# once, not when its 60 s run out.
agent_mode silent
_c="$(count "holding APPLY_OVERLAY")"
bg_attach "$dir/dies.out" "$dir/pci.toml" 60
wait_count "holding APPLY_OVERLAY" $((_c + 1))
t0="$(date +%s)"
send rmmod
wait "$bg"
t1="$(date +%s)"
cat "$dir/dies.out"
echo "host: attach returned $((t1 - t0)) s after rmmod"
wait_count "CELLVM-AGENT-RMMOD" 1
host_devices dies
guest_sync dies
send insmod
host_agent_ready
guest_sync reloaded

step detach-refused
act_and_wait "CELLVM-DEV+ .*:08:01.0" api attach "$name" "$dir/pci.toml"
agent_mode nak
api detach "$name" hot0
api devices "$name"
guest_sync refused

step detach-forced
api detach "$name" hot0 --force
api devices "$name"
host_devices forced
guest_sync forced

step reattach
agent_mode normal
api attach "$name" "$dir/pci.toml"
api devices "$name"
api detach "$name" hot0
guest_sync reattach

step exit
finish_cell
