#!/bin/sh
# Attach benchmark (not a test): a running Linux cell with the guest agent
# (cells/test-agent.toml) gains and loses a PCI host bridge with a test
# device, through the control API. elapsed_ms is measured by cellvm from the
# request to the guest's acknowledgement (the agent ACKs after
# of_overlay_fdt_apply returns, i.e. after pci-host-generic probed and
# enumerated the bus). Prints raw samples; scripts/bench-attach.sh makes the
# table. Also reports cellvm's VmRSS, and its own memory (VmRSS minus the
# resident guest RAM), before, during and after CELLVM_BENCH_RSS_CYCLES.
# Then the attach with 1, 16 and 64 devices already attached (bench-scale).
# cellvm-timeout: 2400
cell=/cellvm/cells/test-agent.toml
name=test-agent
# shellcheck source=tests/nested/bench/lib.sh
. "$(dirname "$0")/lib.sh"
cycles="$(param cellvm.bench_cycles 50)"
scale_cycles="$(param cellvm.bench_scale_cycles 20)"
rss_cycles="$(param cellvm.bench_rss_cycles 1000)"
# The guest idles between requests (cellvm.agent_poll=0) unless the
# benchmark was asked for the test loop (--busy-guest).
poll="$(param cellvm.bench_agent_poll 0)"
# Extra guest kernel arguments (--guest-args A,B: commas for spaces).
extra="$(param cellvm.bench_guest_args "" | tr , " ")"
echo "bench-guest agent_poll=$poll args=$extra"
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
log="$dir/console.log"
mkfifo "$dir/in"
exec 3<>"$dir/in"
cellvm run "$cell" --cmdline-append "cellvm.agent_poll=$poll $extra" <"$dir/in" >"$log" 2>&1 &
pid=$!
wait_agent "$log"
grep "CELLVM-AGENT" "$log"
bench_pci_desc "$dir/pci.toml"
ms() { sed -n 's/.*elapsed_ms=\([0-9.]*\).*/\1/p'; }
# Warm-up cycle (first probe loads code paths), not counted.
cellvm attach "$name" "$dir/pci.toml" >/dev/null && cellvm detach "$name" bench0 >/dev/null
n=0
# cellvm's minor page faults so far, all threads (/proc/PID/stat field 10):
# in L1 under TCG each costs tens of microseconds.
minflt() { awk '{ print $10 }' "/proc/$pid/stat"; }
while [ "$n" -lt "$cycles" ]; do
    f0="$(minflt)"
    out="$(cellvm attach "$name" "$dir/pci.toml")"
    f1="$(minflt)"
    a="$(echo "$out" | ms)"
    # Where the attach's time went (cellvm's breakdown in the answer).
    steps=""
    for k in plan_ms build_ms deliver_ms wake_ms guest_ms ack_ms commit_ms; do
        steps="$steps $k=$(echo "$out" | sed -n "s/\(^\|.* \)$k=\([0-9.]*\).*/\2/p")"
    done
    d="$(cellvm detach "$name" bench0 | ms)"
    f2="$(minflt)"
    echo "bench-sample attach_ms=${a:-fail} detach_ms=${d:-fail}$steps attach_minflt=$((f1 - f0)) detach_minflt=$((f2 - f1))"
    n=$((n + 1))
done
# Attach cost as devices accumulate: with 1, 16 and 64 virtio-mmio rng
# devices attached beside it, the same bridge is attached and detached
# scale_cycles times ("bench-scale devices=N ..." lines).
have=0
for target in 1 16 64; do
    while [ "$have" -lt "$target" ]; do
        printf '[[virtio_mmio]]\nid = "bg%s"\nkind = "rng"\n' "$have" >"$dir/bg.toml"
        cellvm attach "$name" "$dir/bg.toml" >/dev/null || echo "bench-scale: attach of bg$have failed"
        have=$((have + 1))
    done
    n=0
    while [ "$n" -lt "$scale_cycles" ]; do
        out="$(cellvm attach "$name" "$dir/pci.toml")"
        a="$(echo "$out" | ms)"
        steps=""
        for k in plan_ms deliver_ms guest_ms; do
            steps="$steps $k=$(echo "$out" | sed -n "s/\(^\|.* \)$k=\([0-9.]*\).*/\2/p")"
        done
        d="$(cellvm detach "$name" bench0 | ms)"
        echo "bench-scale devices=$target attach_ms=${a:-fail} detach_ms=${d:-fail}$steps"
        n=$((n + 1))
    done
done
n=0
while [ "$n" -lt "$have" ]; do
    cellvm detach "$name" "bg$n" >/dev/null || echo "bench-scale: detach of bg$n failed"
    n=$((n + 1))
done
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status"; }
# cellvm's own memory: VmRSS minus the resident guest RAM (the 256 MiB
# mapping; the same rule as the boot benchmark's overhead). RssAnon alone
# would count guest pages the guest touches for the devices it probes.
own() {
    awk -v vmrss="$(rss)" -v anon="$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status")" -v guest=262144 '
        /^Size:/ { size = $2 }
        /^Rss:/ { if (size >= guest && size <= guest + 4096) g += $2 }
        END { printf "own_kib=%d own_anon_kib=%d", vmrss - g, anon - g }' "/proc/$pid/smaps"
}
# Heap bytes cellvm's code holds (cellvm status, src/heap.rs): a leak grows
# them; the allocator's caches and fragments do not.
heap() { cellvm status "$name" --json 2>/dev/null | tr -d ' \n' | sed -n 's/.*"heap_live_bytes":\([0-9]*\).*/heap_bytes=\1/p'; }
echo "bench-rss before_kib=$(rss) $(own) cycles=$rss_cycles $(heap)"
n=0
fail=0
while [ "$n" -lt "$rss_cycles" ]; do
    cellvm attach "$name" "$dir/pci.toml" >/dev/null 2>&1 || fail=$((fail + 1))
    cellvm detach "$name" bench0 >/dev/null 2>&1 || fail=$((fail + 1))
    n=$((n + 1))
    if [ "$n" -eq 10 ] || [ "$n" -eq 100 ] || { [ $((n % 250)) -eq 0 ] && [ "$n" -lt "$rss_cycles" ]; }; then
        echo "bench-rss-at cycle=$n kib=$(rss) $(own) $(heap)"
    fi
done
echo "bench-rss after_kib=$(rss) $(own) failures=$fail $(heap)"
printf 'exit\n' >&3
wait $pid
rc=$?
exec 3>&-
rm -rf "$dir"
exit $rc
