# shellcheck shell=bash
# Shared helpers for the cellvm build and test scripts. Source it, don't run it:
#   . "$(dirname "$0")/lib.sh"
#
# Provides:
#   REPO_ROOT      absolute path of the repository
#   CELLVM_CACHE   cache root outside git (default ~/.cache/cellvm)
#   BUILD_DIR      $REPO_ROOT/build (gitignored)
#   log/warn/die   messages on stderr, prefixed with the script name
#   need_cmd       fail unless a command exists
#   need_file      fail unless a file exists
#   sha256_of      sha256 of the concatenation of files/strings
#   apt_ensure     install Debian packages that are missing (idempotent)
#   jobs_n         parallel jobs for make

set -euo pipefail

_lib_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$_lib_dir/.." && pwd)"
CELLVM_CACHE="${CELLVM_CACHE:-${HOME:-/root}/.cache/cellvm}"
BUILD_DIR="$REPO_ROOT/build"
# Where cargo puts its output: $CARGO_TARGET_DIR if set (relative to the
# repository), else target/.
case "${CARGO_TARGET_DIR:-}" in
    "") TARGET_DIR="$REPO_ROOT/target" ;;
    /*) TARGET_DIR="$CARGO_TARGET_DIR" ;;
    *) TARGET_DIR="$REPO_ROOT/$CARGO_TARGET_DIR" ;;
esac
SCRIPT_NAME="$(basename "$0")"
export REPO_ROOT CELLVM_CACHE BUILD_DIR TARGET_DIR

# No silent deaths under `set -e`: name the command that failed.
# (The trap also fires under `set +e`: use `trap - ERR` around commands whose
# failure is handled, and `trap _err_trap ERR` after.)
_err_trap() {
    local rc=$?
    printf '[%s] ERROR: command failed (status %s) at %s line %s: %s\n' \
        "$SCRIPT_NAME" "$rc" "${BASH_SOURCE[1]##*/}" "${BASH_LINENO[0]}" "$BASH_COMMAND" >&2
}
set -E
trap _err_trap ERR

log() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2
    exit 1
}

need_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "required command '$c' not found (run scripts/install-deps.sh)"
    done
}

need_file() {
    local f
    for f in "$@"; do
        [ -e "$f" ] || die "required file '$f' is missing"
    done
}

# sha256_of FILE... : sha256 over the named files' contents, in order.
sha256_of() {
    cat "$@" | sha256sum | cut -d' ' -f1
}

# Seconds since the epoch with decimals, for timings.
now() { date +%s.%N; }
elapsed_since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.1f", e - s }'; }

# apt_ensure PKG... : install the Debian packages that are not installed yet.
apt_ensure() {
    local missing=() p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
            missing+=("$p")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    need_cmd apt-get
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${missing[*]}"
        sudo=(sudo)
    fi
    log "installing Debian packages: ${missing[*]}"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; then
        log "apt-get install failed; running apt-get update and retrying"
        "${sudo[@]}" apt-get update
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" ||
            die "could not install: ${missing[*]}"
    fi
}

# Version of an installed Debian package (empty if not installed).
pkg_version() {
    dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true
}

jobs_n() {
    if [ -n "${CELLVM_JOBS:-}" ]; then
        echo "$CELLVM_JOBS"
    else
        nproc 2>/dev/null || echo 2
    fi
}


# ---- initramfs helpers ----

BUSYBOX=/bin/busybox

# is_dynamic FILE: true if FILE is an ELF with a program interpreter
# (ld-linux), i.e. not statically linked. (grep reads all its input, so no
# SIGPIPE can upset pipefail.)
is_dynamic() {
    LC_ALL=C od -An -c -N 4096 "$1" | tr -d ' \n' | grep 'ld-linux' >/dev/null
}

# Ensure a statically linked busybox (Debian busybox-static) plus cpio/gzip.
need_busybox_static() {
    apt_ensure busybox-static cpio gzip
    need_cmd cpio gzip find sort
    need_file "$BUSYBOX"
    if is_dynamic "$BUSYBOX"; then
        die "$BUSYBOX is dynamically linked; install busybox-static (not busybox)"
    fi
}

busybox_version() { "$BUSYBOX" 2>&1 | sed -n '1s/^\(BusyBox v[^ ]*\).*/\1/p'; }

# make_busybox_root DIR: busybox + one symlink per applet at its usual path.
make_busybox_root() {
    local root="$1" applet
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,root,etc,mnt}
    cp "$BUSYBOX" "$root/bin/busybox"
    chmod 0755 "$root/bin/busybox"
    "$BUSYBOX" --list-full | while read -r applet; do
        [ "$applet" = bin/busybox ] && continue
        ln -sf /bin/busybox "$root/$applet"
    done
    chmod 1777 "$root/tmp"
}

# cpio_gz DIR OUT: newc archive of DIR owned by root, sorted, gzipped.
cpio_gz() {
    local root="$1" out="$2"
    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9n >"$out.tmp"
    mv "$out.tmp" "$out"
}


# Print the calling script's header comment (lines 2.. up to `set -euo`) as help.
print_header() {
    sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p;}' "$0"
}
