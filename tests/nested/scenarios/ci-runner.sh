#!/bin/sh
# cellvm as a CI boot-test runner (docs/ci.md), config-less, with the cellvm
# guest kernel: a run that passes on --expect with 2 vCPUs and a JUnit
# report; a guest whose init exits (kernel panic, panic=-1) ends with the
# pvpanic status 5; a console warning fails a test run (6); a guest that
# never says the expected line times out (124); Debian's generic kernel (a
# distribution kernel without CONFIG_OF: no device tree) boots with 2 vCPUs
# from the MP table (acpi=off), the L1's own cloud kernel (no MP parser)
# with 2 from cellvm's ACPI tables, and powers off through ACPI; hotplug
# torture: 20 attach/detach cycles of a PCI bridge pass, and a guest that
# warns when a device goes away fails the run, naming the cycle.
# tests/nested_boot.rs checks the transcript ("step: NAME", "rc=N").
# cellvm-timeout: 600
# cellvm-cost: 101
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
# Debian's generic kernel (no CONFIG_OF) with acpi=off: it finds its 2 CPUs
# in the MP table. Its probes of hardware a cell does not have may print
# warnings that are not the test's business: only a panic fails it.
# distro KERNEL CMDLINE [FLAGS...]
distro() {
    _k="$1"
    _c="$2"
    shift 2
    cellvm run --kernel "$_k" --initrd "$i" --cpus 2 --memory 512M \
        --cmdline "console=ttyS0 cellvm.echo_timeout=0 $_c" "$@" \
        --timeout 150 --no-default-fail-on --fail-on "Kernel panic" \
        >"$dir/out" 2>&1
    echo "rc=$?"
    grep -a -o "cellvm: cell .*\|^cpus=.*\|^dt=.*\|^kernel=.*\|CELLVM-POWEROFF.*" "$dir/out"
    grep -a -o "found SMP MP-table.*\|ACPI MADT or MP tables are not detected\|ACPI: Using ACPI (MADT) for SMP.*\|ACPI: PM: Preparing to enter system sleep state S5" "$dir/out" |
        sed 's/^/kernel: /'
}
distro /cellvm/build/distro-vmlinuz "acpi=off cellvm.mode=report" --expect "^CELLVM-REPORT-END"

echo "step: cloud-kernel"
# The L1's own Debian cloud kernel has no MP table parser: it finds its 2
# CPUs in cellvm's ACPI tables (the MADT).
distro /cellvm/build/cloud-vmlinuz cellvm.mode=report --expect "^CELLVM-REPORT-END"

echo "step: acpi-poweroff"
# Without cellvm's agent, the cloud kernel powers off through the FADT's
# sleep register: the run ends with status 0, not by its timeout.
distro /cellvm/build/cloud-vmlinuz cellvm.mode=poweroff

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
