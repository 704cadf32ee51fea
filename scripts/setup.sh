#!/usr/bin/env bash
# Everything the nested boot tests need, in order:
#   install-deps -> build-guest-kernel -> build-guest-agent -> build-guest-initramfs
#   -> build-cellvm-static -> build-l1
# Idempotent; a second run only rebuilds what changed (the guest kernel is
# cached in $CELLVM_CACHE, cargo is incremental, the initramfs images take
# seconds).
#
# Usage: scripts/setup.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

case "${1:-}" in
    "") ;;
    -h | --help)
        print_header
        exit 0
        ;;
    *) die "unknown argument '$1'" ;;
esac

total="$(now)"
step() {
    local s
    s="$(now)"
    log "== $1"
    "$REPO_ROOT/scripts/$1" || die "$1 failed"
    log "== $1 done ($(elapsed_since "$s") s)"
}
step install-deps.sh
step build-guest-kernel.sh
step build-guest-agent.sh
step build-guest-initramfs.sh
step build-cellvm-static.sh
step build-l1.sh
log "setup complete in $(elapsed_since "$total") s (cache: $CELLVM_CACHE)"
log "run the nested scenarios with: scripts/run-l1.sh --scenarios all"
