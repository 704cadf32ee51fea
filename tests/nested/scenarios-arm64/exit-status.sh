#!/bin/sh
# arm64: cellvm's exit status says why the cell stopped, as on x86_64
# (docs/cli.md): the guest's debug-exit code (cells/arm64/test-exit42.toml:
# 42), and an orderly `cellvm shutdown` that the guest agent acknowledges
# with the guest's own poweroff, which reaches KVM as PSCI SYSTEM_OFF
# (exit 0). tests/nested_arm64.rs checks the "step: NAME" sections.
# cellvm-timeout: 180
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
step() { echo "step: $*"; }

step exit42
cellvm run /cellvm/cells/test-exit42.toml >"$dir/exit42.log" 2>&1
echo "exit=$?"
grep "^cellvm: cell test-exit42 stopped" "$dir/exit42.log"

step shutdown
mkfifo "$dir/in"
exec 3<>"$dir/in"
cellvm run /cellvm/cells/test-agent.toml <"$dir/in" >"$dir/agent.log" 2>&1 &
pid=$!
_i=0
until grep -q "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR" "$dir/agent.log" 2>/dev/null || [ "$_i" -ge 3000 ]; do
    _i=$((_i + 1))
    usleep 20000
done
grep "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR" "$dir/agent.log" | head -n 1
echo "\$ cellvm shutdown test-agent --timeout 60"
cellvm shutdown test-agent --timeout 60 2>&1
echo "rc=$?"
wait "$pid"
echo "exit=$?"
grep "^cellvm: cell test-agent stopped" "$dir/agent.log"
exec 3>&-
rm -rf "$dir"
