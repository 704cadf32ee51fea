#!/bin/sh
# The guest agent (cellvm_agent.ko, loaded by the initramfs) finds the
# channel device and says HELLO: cellvm prints
#   cellvm: channel: guest agent HELLO: protocol 1, capabilities 0x3
# and the guest (cells/test-agent.toml, agent mode) prints CELLVM-AGENT-READY.
# Once CELLVM-AGENT-READY (or -ERROR) appeared this script sends "exit" on the console; the guest
# leaves through debug-exit with 0. rc 0 only if both lines were seen.
# cellvm-timeout: 60
# cellvm-cost: 8
cell=/cellvm/cells/test-agent.toml
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
mkfifo "$dir/in"
# Opening a fifo read-write never blocks; fd 3 is the sending end and keeps
# cellvm's stdin open until this script ends.
exec 3<>"$dir/in"
echo "scenario: cellvm run $cell (sends 'exit' after the HELLO and CELLVM-AGENT-READY)"
{
    cellvm run "$cell" <"$dir/in" 3>&- 2>&1
    echo $? >"$dir/rc"
} | {
    hello=0 ready=0 sent=0
    while IFS= read -r line || [ -n "$line" ]; do
        printf '%s\n' "$line"
        case "$line" in
            *"cellvm: channel: guest agent HELLO:"*) hello=1 ;;
            *CELLVM-AGENT-READY*) ready=1 ;;
            *CELLVM-AGENT-ERROR*) ready=2 ;;
        esac
        # The HELLO comes first: the agent's probe sends it during insmod.
        if [ "$sent" -eq 0 ] && [ "$ready" -ne 0 ]; then
            printf 'exit\n' >&3
            sent=1
            echo "scenario: sent 'exit' (hello=$hello ready=$ready)"
        fi
    done
    echo "$hello $ready" >"$dir/seen"
}
exec 3>&-
rc="$(cat "$dir/rc" 2>/dev/null || echo 1)"
read -r hello ready <"$dir/seen" || { hello=0 ready=0; }
echo "scenario: cellvm rc=$rc, agent HELLO seen=$hello, CELLVM-AGENT-READY seen=$ready"
if [ "$rc" -eq 0 ] && { [ "$hello" -ne 1 ] || [ "$ready" -ne 1 ]; }; then
    rc=1
fi
exit "$rc"
