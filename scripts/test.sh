#!/usr/bin/env bash
# The one test command (README): sets up what the tests need, then runs all
# three layers with cargo test:
#   1. unit tests (no KVM): config, layout, device tree, devices, ...
#   2. fast KVM tests (tests/kvm_host.rs): tiny guests on this host's /dev/kvm
#   3. nested boot tests (tests/nested_boot.rs): real Linux cells under cellvm
#      on real KVM inside an L1 guest (QEMU TCG + SVM), one L1 boot for all;
#      and the arm64 ones (tests/nested_arm64.rs): arm64 cells under the
#      static aarch64 cellvm inside an aarch64 L1 (qemu-system-aarch64).
# Also checks formatting and clippy, and runs the aarch64 unit tests under
# qemu-aarch64. Fails loudly on anything missing.
#
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

[ -c /dev/kvm ] || die "/dev/kvm is missing on this host: the fast KVM test layer needs it (load kvm_intel/kvm_amd, or kvm-pvm)"

"$REPO_ROOT/scripts/setup.sh"
"$REPO_ROOT/scripts/setup.sh" --arch arm64

log "== cargo fmt --check"
cargo fmt --all -- --check || die "cargo fmt found unformatted files (run: cargo fmt --all)"
log "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings || die "clippy found problems"
log "== device trees against the kernel's binding schemas"
"$REPO_ROOT/scripts/check-dt-schema.sh" || die "a generated device tree breaks a binding schema"
log "== aarch64 unit tests (scripts/test-arm64-units.sh: Debian's rustc, under qemu-aarch64)"
"$REPO_ROOT/scripts/test-arm64-units.sh" || die "the aarch64 unit tests failed"
log "== cargo test (unit, host KVM, nested boot x86_64 and arm64)"
cargo test --all-targets --locked "$@"
log "== fuzzing (scripts/fuzz.sh: every fuzz target for FUZZ_SECONDS, default 30)"
"$REPO_ROOT/scripts/fuzz.sh" || die "fuzzing failed (the crashing input and how to replay it are above)"
