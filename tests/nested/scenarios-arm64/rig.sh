#!/bin/sh
# The arm64 rig's smoke test (docs/rig.md, "The arm64 rig"): L1 is an
# aarch64 kernel with a usable /dev/kvm, and the static aarch64 cellvm runs
# there. Boots no cell. Prints RIG-ARM64-OK and exits 0 when all holds;
# otherwise a "rig: FAIL: ..." line and exit 1.
# cellvm-timeout: 60
fail() {
    echo "rig: FAIL: $*"
    exit 1
}

arch="$(uname -m)"
echo "rig: L1 $arch, kernel $(uname -r), $(grep -c '^processor' /proc/cpuinfo) CPU(s)"
[ "$arch" = aarch64 ] || fail "L1 is $arch, not aarch64"

[ -c /dev/kvm ] || fail "no /dev/kvm"
echo "rig: /dev/kvm $(stat -c '%t:%T' /dev/kvm)"
# KVM's ioctls need the device open for reading and writing.
if ! (exec 3<>/dev/kvm) 2>/dev/null; then
    fail "cannot open /dev/kvm read-write"
fi
echo "rig: /dev/kvm opens read-write"

bin="$(command -v cellvm)" || fail "cellvm not on PATH ($PATH)"
version="$(cellvm --version 2>&1)"
rc=$?
echo "rig: $bin --version (rc=$rc): $version"
[ "$rc" -eq 0 ] || fail "cellvm --version exited with $rc"
[ -n "$version" ] || fail "cellvm --version printed nothing"

echo "RIG-ARM64-OK"
