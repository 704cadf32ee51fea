#!/bin/sh
# Handover benchmark (not a test; scripts/bench-handover.sh runs it): the
# seeds' shared flash (cells/host.toml, cells/bmc.toml) moved back and
# forth cellvm.bench_moves times (default 50) with `cellvm move`. Prints one
# raw sample per move: the whole move as the CLI measures it (the giver's
# agent checked, the taker's claim, the giver's disable, the taker's enable) and each step's
# request -> acknowledgement time; the table is made on the host.
# cellvm-timeout: 900
# shellcheck source=tests/nested/bench/lib.sh
. "$(dirname "$0")/lib.sh"
moves="$(param cellvm.bench_moves 50)"
# The guests idle between requests (cellvm.agent_poll=0) unless the
# benchmark was asked for the test loop (--busy-guest).
poll="$(param cellvm.bench_agent_poll 0)"
# Extra guest kernel arguments (--guest-args A,B: commas for spaces).
extra="$(param cellvm.bench_guest_args "" | tr , " ")"
echo "bench-guest agent_poll=$poll args=$extra"
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
start_flash_cells "$dir" "cellvm.agent_poll=$poll $extra"
from=host
to=bmc
i=0
while [ "$i" -lt "$moves" ]; do
    i=$((i + 1))
    out="$(cellvm move flash0 --from "$from" --to "$to" 2>&1)"
    total="$(printf '%s\n' "$out" | sed -n 's/^moved .* in \([0-9.]*\) ms$/\1/p')"
    if [ -z "$total" ]; then
        echo "bench-sample move=$i move_ms=fail"
        printf '%s\n' "$out" | sed 's/^/    /'
        continue
    fi
    step_ms() { printf '%s\n' "$out" | sed -n "s/^  $1 *[a-z]* *\([0-9.]*\) ms$/\1/p"; }
    echo "bench-sample move=$i from=$from move_ms=$total claim_ms=$(step_ms claim) disable_ms=$(step_ms disable) enable_ms=$(step_ms enable)"
    t="$from"
    from="$to"
    to="$t"
done
printf 'exit\n' >&5
printf 'exit\n' >&6
wait "$host_pid"
wait "$bmc_pid"
rm -rf "$dir"
