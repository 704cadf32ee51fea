#!/bin/sh
# cellvm as a CI boot-test runner (docs/ci.md), config-less, with the cellvm
# guest kernel: a run that passes on --expect with 2 vCPUs and a JUnit
# report; a guest whose init exits (kernel panic, panic=-1) ends with the
# pvpanic status 5; a console warning fails a test run (6); a guest that
# never says the expected line times out (124); Debian's generic kernel (a
# distribution kernel without CONFIG_OF: no device tree, it finds its CPUs
# in the MP table) boots with 2 vCPUs and its console, the L1's own cloud
# kernel with 1 (it has no MP parser and cellvm no ACPI yet); hotplug
# torture: 20 attach/detach cycles of a PCI bridge pass, and a guest that
# warns when a device goes away fails the run, naming the cycle.
# tests/nested_boot.rs checks the transcript ("step: NAME", "rc=N").
# cellvm-timeout: 600
k=/cellvm/build/guest/bzImage
i=/cellvm/build/guest/initramfs.cpio.gz
dir="$(mktemp -d)"
export CELLVM_RUNTIME_DIR="$dir/run"
# boot CMDLINE FLAGS...: a config-less run; its last stderr line and status.
boot() {
    _c="$1"
    shift
    cellvm run --kernel "$k" --initrd "$i" --cmdline "console=ttyS0 quiet $_c" "$@" \
        >"$dir/out" 2>&1
    echo "rc=$?"
    # (-a: a console may carry NUL bytes; unanchored: cellvm's line may
    # follow a console line the guest did not end.)
    grep -a -o "cellvm: cell .*" "$dir/out"
}

echo "step: pass"
boot "cellvm.mode=report cellvm.echo_timeout=0" --cpus 2 --memory 256M \
    --expect "^CELLVM-REPORT-END" --timeout 60 --junit "$dir/pass.xml"
grep "^cpus=" "$dir/out"
echo "junit: $(tr -d '\n' <"$dir/pass.xml" | grep -o '<testsuite [^>]*>')"

echo "step: panic"
boot "panic=-1 cellvm.mode=panic"
grep -o "Kernel panic - not syncing: [A-Za-z ]*" "$dir/out" | head -n 1

echo "step: warning"
boot "cellvm.mode=warn" --timeout 60 --expect "never printed"

echo "step: timeout"
boot "cellvm.mode=agent" --timeout 3 --expect "never printed"

echo "step: distro-kernel"
# Debian's generic kernel (no CONFIG_OF; it finds its 2 CPUs in the MP
# table). Its probes of hardware a cell does not have may print warnings
# that are not the test's business: only a panic fails it.
distro() {
    cellvm run --kernel "$1" --initrd "$i" --cpus 2 --memory 512M \
        --cmdline "console=ttyS0 cellvm.mode=report cellvm.echo_timeout=0" \
        --expect "^CELLVM-REPORT-END" --timeout 150 --no-default-fail-on --fail-on "Kernel panic" \
        >"$dir/out" 2>&1
    echo "rc=$?"
    grep -a -o "cellvm: cell .*\|^cpus=.*\|^dt=.*\|^kernel=.*" "$dir/out"
    grep -a -o "found SMP MP-table.*\|ACPI MADT or MP tables are not detected" "$dir/out" |
        sed 's/^/kernel: /'
}
distro /cellvm/build/distro-vmlinuz

echo "step: cloud-kernel"
# The L1's own Debian cloud kernel: no MP table parser either (it wants
# ACPI), so it boots with one CPU and its console.
distro /cellvm/build/cloud-vmlinuz

echo "step: torture-pass"
cellvm run /cellvm/cells/test-agent.toml --hotplug /cellvm/cells/devices/hot-pci.toml \
    --hotplug-cycles 20 --hotplug-interval 50 --timeout 300 </dev/null >"$dir/out" 2>&1
echo "rc=$?"
grep -a -o "cellvm: cell .*" "$dir/out"
echo "pci functions seen: $(grep -a -c 'CELLVM-DEV+ .*:08:01.0' "$dir/out")"

echo "step: torture-warn"
cellvm run /cellvm/cells/test-agent.toml --hotplug /cellvm/cells/devices/hot-pci.toml \
    --hotplug-cycles 3 --hotplug-interval 1500 --timeout 300 \
    --cmdline-append cellvm.warn_on_remove=1 </dev/null >"$dir/out" 2>&1
echo "rc=$?"
grep -a -o "cellvm: cell .*" "$dir/out"
grep -a "CELLVM-DEV\|WARNING\|hotplug" "$dir/out" | head -n 12 | sed 's/^/warn: /'
rm -rf "$dir"
