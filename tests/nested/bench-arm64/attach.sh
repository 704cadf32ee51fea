#!/bin/sh
# arm64 attach benchmark (not a test; scripts/bench-arm64.sh runs it): a
# running arm64 Linux cell with the guest agent
# (cells/arm64/test-agent.toml) gains and loses, through the control API,
# a PCI host bridge (ECAM, one test function) and a virtio-mmio rng device,
# N times each after one warm-up cycle of each. elapsed_ms is cellvm's own
# figure, from the request to the guest agent's ACK (sent after
# of_overlay_fdt_apply() returned: pci-host-generic probed the bridge and
# enumerated its bus, virtio-mmio probed the device); the breakdown fields
# come with it. Prints one line per cycle:
#   bench-sample kind=pci|virtio-mmio attach_ms=... detach_ms=... plan_ms=... build_ms=...
#     deliver_ms=... wake_ms=... guest_ms=... ack_ms=... commit_ms=...
# scripts/bench-arm64.sh makes the tables.
#
# L1 kernel command line: cellvm.bench_cycles=N (default 50).
# cellvm-timeout: 1800
cell=/cellvm/cells/test-agent.toml
name=test-agent
param() { # param NAME DEFAULT: NAME=value from L1's kernel command line
    _v="$2"
    for _w in $(cat /proc/cmdline); do
        case "$_w" in "$1="*) _v="${_w#*=}" ;; esac
    done
    echo "$_v"
}
cycles="$(param cellvm.bench_cycles 50)"
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
log="$dir/console.log"
mkfifo "$dir/in"
exec 3<>"$dir/in"
cellvm run "$cell" <"$dir/in" >"$log" 2>&1 &
pid=$!
_i=0
until grep -q "CELLVM-AGENT-READY\|CELLVM-AGENT-ERROR" "$log" 2>/dev/null || [ "$_i" -ge 1500 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
        break
    fi
    _i=$((_i + 1))
    usleep 20000
done
if ! grep -q "CELLVM-AGENT-READY" "$log"; then
    echo "BENCH-ERROR: the agent cell did not get ready; console tail:"
    tail -n 30 "$log"
    kill "$pid" 2>/dev/null
    exit 1
fi
grep "CELLVM-AGENT" "$log"
cat >"$dir/pci.toml" <<'DESC'
[[pci_bridge]]
id = "bench0"
kind = "ecam"
bus_start = 8
[[pci_bridge.device]]
slot = 1
kind = "test"
DESC
cat >"$dir/virtio.toml" <<'DESC'
[[virtio_mmio]]
id = "benchvio0"
kind = "rng"
DESC
ms() { sed -n 's/.*elapsed_ms=\([0-9.]*\).*/\1/p'; }
# cycle KIND DESCRIPTION ID: one attach and detach; prints a bench-sample line.
cycle() {
    out="$(cellvm attach "$name" "$2" 2>&1)"
    a="$(echo "$out" | ms)"
    [ -n "$a" ] || echo "bench-error $1 attach: $out"
    steps=""
    for k in plan_ms build_ms deliver_ms wake_ms guest_ms ack_ms commit_ms; do
        steps="$steps $k=$(echo "$out" | sed -n "s/\(^\|.* \)$k=\([0-9.]*\).*/\2/p")"
    done
    out="$(cellvm detach "$name" "$3" 2>&1)"
    d="$(echo "$out" | ms)"
    [ -n "$d" ] || echo "bench-error $1 detach: $out"
    echo "bench-sample kind=$1 attach_ms=${a:-fail} detach_ms=${d:-fail}$steps"
}
echo "bench-info cycles=$cycles cell=$cell vmrss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")"
# Warm-up (the first probe of each kind loads code paths), not counted.
cycle pci "$dir/pci.toml" bench0 | sed 's/^bench-sample/bench-warmup/'
cycle virtio-mmio "$dir/virtio.toml" benchvio0 | sed 's/^bench-sample/bench-warmup/'
for kind in pci virtio-mmio; do
    n=0
    while [ "$n" -lt "$cycles" ]; do
        case "$kind" in
            pci) cycle pci "$dir/pci.toml" bench0 ;;
            *) cycle virtio-mmio "$dir/virtio.toml" benchvio0 ;;
        esac
        n=$((n + 1))
    done
done
echo "bench-info after vmrss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")"
printf 'exit\n' >&3
wait $pid
rc=$?
exec 3>&-
rm -rf "$dir"
exit $rc
