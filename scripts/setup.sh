#!/usr/bin/env bash
# Everything the nested boot tests need, in order:
#   install-deps -> build-guest-kernel -> build-guest-agent -> build-guest-initramfs
#   -> build-cellvm-static -> build-l1
# Idempotent; a second run only rebuilds what changed (the guest kernel is
# cached in $CELLVM_CACHE, cargo is incremental, the initramfs images take
# seconds).
#
# Usage: scripts/setup.sh [--arch x86_64|arm64]
#   --arch arm64  the arm64 rig (docs/rig.md, "The arm64 rig"): the same
#                 steps with --arch arm64, without install-deps (each step
#                 installs what it needs); then scripts/run-l1.sh --arch arm64
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

parse_args -- "$@"

total="$(now)"
step() {
    local s
    s="$(now)"
    log "== $*"
    "$REPO_ROOT/scripts/$1" "${@:2}" || die "$* failed"
    log "== $* done ($(elapsed_since "$s") s)"
}
if [ "$ARCH" = arm64 ]; then
    for script in build-guest-kernel.sh build-guest-agent.sh build-guest-initramfs.sh \
        build-cellvm-static.sh build-l1.sh; do
        step "$script" --arch arm64
    done
    log "arm64 setup complete in $(elapsed_since "$total") s (cache: $CELLVM_CACHE)"
    log "run the arm64 scenarios with: scripts/run-l1.sh --arch arm64 --scenarios all"
    exit 0
fi
step install-deps.sh
step build-guest-kernel.sh
step build-guest-agent.sh
step build-guest-initramfs.sh
step build-cellvm-static.sh
step build-l1.sh
log "setup complete in $(elapsed_since "$total") s (cache: $CELLVM_CACHE)"
log "run the nested scenarios with: scripts/run-l1.sh --scenarios all"
