#!/usr/bin/env bash
# The one demo command (README): sets everything up on a fresh machine, then
# boots cells/linux-demo.toml under cellvm inside the L1 rig and shows its
# console (this host's /dev/kvm cannot boot Linux itself; see docs/rig.md).
#
# Usage: scripts/demo.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
"$REPO_ROOT/scripts/setup.sh"
log "== booting the demo cell (cells/linux-demo.toml) inside L1"
exec "$REPO_ROOT/scripts/run-l1.sh" --scenarios demo
