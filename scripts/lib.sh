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

busybox_version() {
    if [ -n "${BUSYBOX_VERSION_LINE:-}" ]; then
        echo "$BUSYBOX_VERSION_LINE"
    else
        "$BUSYBOX" 2>&1 | sed -n '1s/^\(BusyBox v[^ ]*\).*/\1/p'
    fi
}

# make_busybox_root DIR: busybox + one symlink per applet at its usual path.
make_busybox_root() {
    local root="$1" applet
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,root,etc,mnt}
    cp "$BUSYBOX" "$root/bin/busybox"
    chmod 0755 "$root/bin/busybox"
    # The arm64 busybox cannot run here: its applet list comes from the cache
    # (need_busybox_static_arm64).
    if [ -n "${BUSYBOX_APPLETS:-}" ]; then cat "$BUSYBOX_APPLETS"; else "$BUSYBOX" --list-full; fi | while read -r applet; do
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


# ---- arm64 (the aarch64 rig, docs/rig.md "The arm64 rig") ----

# set_arch VALUE: sets ARCH to the canonical name of VALUE (x86_64 or arm64;
# amd64 and aarch64 are accepted too), or dies. (Not exported: an ARCH in
# the environment would steer the kernel's make.)
# shellcheck disable=SC2034 # ARCH is read by the scripts that source this
set_arch() {
    case "$1" in
        x86_64 | amd64) ARCH=x86_64 ;;
        arm64 | aarch64) ARCH=arm64 ;;
        *) die "unknown --arch '$1' (x86_64 or arm64)" ;;
    esac
}

# parse_args [--NAME=VAR]... -- ARGS...: the build scripts' command line.
# --arch VALUE or --arch=VALUE sets ARCH (default x86_64, see set_arch),
# -h/--help prints the script's header and exits, each --NAME listed before
# `--` sets the variable VAR to 1 (0 when absent); anything else dies.
parse_args() {
    local -A flags=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        flags["${1%%=*}"]="${1#*=}"
        printf -v "${1#*=}" 0
        shift
    done
    [ $# -gt 0 ] || die "parse_args: no -- before the arguments (a bug in $SCRIPT_NAME)"
    shift
    # shellcheck disable=SC2034 # ARCH is read by the scripts that source this
    ARCH=x86_64
    while [ $# -gt 0 ]; do
        case "$1" in
            --arch)
                [ $# -ge 2 ] || die "--arch needs a value (x86_64 or arm64)"
                set_arch "$2"
                shift
                ;;
            --arch=*) set_arch "${1#*=}" ;;
            -h | --help)
                print_header
                exit 0
                ;;
            *)
                [ -n "${flags[$1]:-}" ] || die "unknown argument '$1' (see --help)"
                printf -v "${flags[$1]}" 1
                ;;
        esac
        shift
    done
}

# as_root CMD...: CMD as root (through sudo when not root).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to run: $*"
        sudo "$@"
    fi
}

# ensure_arm64_multiarch [PROBE]: dpkg accepts arm64 packages (multiarch)
# and apt has their lists. PROBE (a package, default busybox-static:arm64)
# tells whether the lists are there: when it is not installed, apt must know
# a version of it, which is left in ARM64_PROBE_VERSION (empty when PROBE
# is installed: apt is not asked, each apt-cache call costs about a second).
ensure_arm64_multiarch() {
    local probe="${1:-busybox-static:arm64}"
    need_cmd dpkg dpkg-query apt-get apt-cache
    ARM64_PROBE_VERSION=""
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        log "enabling the arm64 architecture in dpkg (dpkg --add-architecture arm64)"
        as_root dpkg --add-architecture arm64
        log "apt-get update (arm64 package lists)"
        as_root apt-get update >/dev/null || die "apt-get update failed"
    elif dpkg-query -W -f='${Status}' "$probe" 2>/dev/null | grep -q '^install ok installed$'; then
        return 0
    fi
    ARM64_PROBE_VERSION="$(apt_candidate "$probe")"
    if [ -z "$ARM64_PROBE_VERSION" ]; then
        log "apt knows no $probe; running apt-get update"
        as_root apt-get update >/dev/null || die "apt-get update failed"
        ARM64_PROBE_VERSION="$(apt_candidate "$probe")"
    fi
    [ -n "$ARM64_PROBE_VERSION" ] ||
        die "apt knows no $probe even after apt-get update (is arm64 missing from the apt sources' architectures?)"
}

# apt_candidate PKG[:ARCH]: the version apt would install (empty if none).
apt_candidate() {
    apt-cache show --no-all-versions "$1" 2>/dev/null | sed -n 's/^Version: //p' | head -n1
}

# elf_machine FILE: x86_64, aarch64, or "other" (e_machine of an ELF file;
# "none" if FILE is not ELF).
elf_machine() {
    local magic m
    magic="$(LC_ALL=C od -An -c -N4 "$1" 2>/dev/null | tr -d ' \n')"
    [ "$magic" = "177ELF" ] || { echo none; return 0; }
    m="$(od -An -tu1 -j18 -N2 "$1" | tr -s ' ' | sed 's/^ //;s/ $//')"
    case "$m" in
        "62 0") echo x86_64 ;;
        "183 0") echo aarch64 ;;
        *) echo other ;;
    esac
}

# need_busybox_static_arm64: Debian's busybox-static:arm64 for the arm64
# images, fetched (apt-get download + dpkg-deb -x) once into
# $CELLVM_CACHE/busybox-static-arm64_<version>/ with its applet list (the
# binary runs once under qemu-aarch64, Debian's qemu-user, for
# `--list-full`; later builds only read the list). Sets BUSYBOX (the arm64
# binary), BUSYBOX_APPLETS (the list, read by make_busybox_root) and
# BUSYBOX_VERSION_LINE (for busybox_version).
need_busybox_static_arm64() {
    apt_ensure cpio gzip
    need_cmd cpio gzip find sort dpkg-deb flock
    ensure_arm64_multiarch busybox-static:arm64
    local version entry deb
    version="${ARM64_PROBE_VERSION:-$(apt_candidate busybox-static:arm64)}"
    [ -n "$version" ] || die "apt knows no busybox-static:arm64"
    entry="$CELLVM_CACHE/busybox-static-arm64_${version//:/_}"
    mkdir -p "$CELLVM_CACHE"
    (
        exec 8>"$CELLVM_CACHE/busybox-static-arm64.lock"
        flock 8
        [ -f "$entry/.complete" ] && exit 0
        apt_ensure qemu-user
        need_cmd qemu-aarch64
        log "fetching busybox-static:arm64 $version"
        rm -rf "$entry"
        mkdir -p "$entry/deb"
        (cd "$entry/deb" && apt-get download "busybox-static:arm64=$version" >/dev/null 2>&1) ||
            (cd "$entry/deb" && apt-get download "busybox-static:arm64=$version") ||
            die "apt-get download busybox-static:arm64=$version failed"
        deb="$(find "$entry/deb" -name '*.deb' | head -n1)"
        [ -n "$deb" ] || die "apt-get download busybox-static:arm64 produced no .deb"
        dpkg-deb -x "$deb" "$entry/root" || die "dpkg-deb -x $deb failed"
        [ -f "$entry/root/bin/busybox" ] || die "no /bin/busybox in $deb"
        [ "$(elf_machine "$entry/root/bin/busybox")" = aarch64 ] || die "$deb's /bin/busybox is not an aarch64 ELF"
        is_dynamic "$entry/root/bin/busybox" && die "$deb's /bin/busybox is dynamically linked"
        cp "$entry/root/bin/busybox" "$entry/busybox"
        qemu-aarch64 "$entry/busybox" --list-full >"$entry/applets" ||
            die "qemu-aarch64 $entry/busybox --list-full failed"
        [ -s "$entry/applets" ] || die "busybox:arm64 --list-full printed nothing"
        { qemu-aarch64 "$entry/busybox" 2>&1 || true; } | sed -n '1s/^\(BusyBox v[^ ]*\).*/\1/p' >"$entry/version"
        rm -rf "$entry/root" "$entry/deb"
        touch "$entry/.complete"
        log "cached busybox-static:arm64 $version ($(wc -l <"$entry/applets") applets): $entry"
    ) || die "could not prepare busybox-static:arm64"
    BUSYBOX="$entry/busybox"
    BUSYBOX_APPLETS="$entry/applets"
    BUSYBOX_VERSION_LINE="$(cat "$entry/version") (arm64)"
    need_file "$BUSYBOX" "$BUSYBOX_APPLETS"
}


# need_qemu_system_arm64: Debian's qemu-system-aarch64 built for arm64, with
# every shared library it loads, for the arm64 L1
# (scripts/build-l1.sh --arch arm64 --with-qemu). qemu-system-arm:arm64
# cannot be installed beside the host's amd64 qemu-system-arm, so its
# packages are `apt-get download`ed and unpacked (dpkg-deb -x), once, into
# $CELLVM_CACHE/qemu-system-arm-arm64_<version>/ (the version of
# qemu-system-arm:arm64). The libraries are found from the ELF files'
# DT_NEEDED entries (readelf -d), recursively: each soname is mapped to its
# package by `dpkg -S` on the host (the amd64 package of the same name owns
# the amd64 copy: multiarch library packages are named alike on both
# architectures), or else among the Depends of the packages fetched so far.
# The cache entry's bundle/ is a root tree ready to copy:
#   usr/bin/qemu-system-aarch64
#   lib/ld-linux-aarch64.so.1           the program interpreter (PT_INTERP)
#   lib/aarch64-linux-gnu/<soname>      every library, under its soname
# (glibc's loader searches /lib/aarch64-linux-gnu without an ld.so.cache),
# plus packages (name version, one a line) and version. Sets
# QEMU_ARM64_BUNDLE (the bundle directory) and QEMU_ARM64_VERSION.
# shellcheck disable=SC2034 # QEMU_ARM64_* are read by the scripts that source this
need_qemu_system_arm64() {
    apt_ensure binutils
    need_cmd dpkg dpkg-deb apt-get flock readelf awk
    ensure_arm64_multiarch qemu-system-arm:arm64
    local version
    version="${ARM64_PROBE_VERSION:-$(apt_candidate qemu-system-arm:arm64)}"
    [ -n "$version" ] || die "apt knows no qemu-system-arm:arm64"
    local entry="$CELLVM_CACHE/qemu-system-arm-arm64_${version//:/_}"
    mkdir -p "$CELLVM_CACHE"
    (
        exec 8>"$CELLVM_CACHE/qemu-system-arm-arm64.lock"
        flock 8
        [ -f "$entry/.complete" ] && exit 0
        log "fetching qemu-system-arm:arm64 $version and the arm64 libraries it needs"
        rm -rf "$entry"
        mkdir -p "$entry/deb" "$entry/root" "$entry/bundle/usr/bin" "$entry/bundle/lib/aarch64-linux-gnu"
        : >"$entry/packages"
        # fetch PKG [VERSION]: PKG:arm64 downloaded and unpacked into root/
        # (once).
        fetch() {
            local pkg="$1" want="${2:-}" deb
            grep -q "^$pkg " "$entry/packages" && return 0
            rm -f "$entry"/deb/*.deb
            (cd "$entry/deb" && apt-get download "$pkg:arm64${want:+=$want}" >/dev/null 2>&1) ||
                (cd "$entry/deb" && apt-get download "$pkg:arm64${want:+=$want}") ||
                die "apt-get download $pkg:arm64${want:+=$want} failed"
            deb="$(find "$entry/deb" -name '*.deb' | head -n1)"
            [ -n "$deb" ] || die "apt-get download $pkg:arm64 produced no .deb"
            dpkg-deb -x "$deb" "$entry/root" || die "dpkg-deb -x $deb failed"
            printf '%s %s\n' "$pkg" "$(dpkg-deb -f "$deb" Version)" >>"$entry/packages"
            dpkg-deb -f "$deb" Depends Pre-Depends | tr ',|' '\n' |
                sed -n 's/^[[:space:]]*\([a-z0-9][a-z0-9.+-]*\).*/\1/p' >>"$entry/depends"
            rm -f "$deb"
        }
        # resolve PATH: PATH inside root/ with its symlinks followed (an
        # absolute link target is taken inside root/ too); empty if missing.
        resolve() {
            local p="$1" t i=0
            while [ -L "$p" ] && [ "$i" -lt 16 ]; do
                t="$(readlink "$p")"
                case "$t" in
                    /*) p="$entry/root$t" ;;
                    *) p="$(dirname "$p")/$t" ;;
                esac
                i=$((i + 1))
            done
            [ -f "$p" ] && echo "$p"
            return 0
        }
        find_lib() { # find_lib SONAME: its file in root/, or empty
            local d f
            for d in lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu lib usr/lib; do
                f="$(resolve "$entry/root/$d/$1")"
                [ -n "$f" ] && { echo "$f"; return 0; }
            done
            return 0
        }
        # soname_pkg SONAME: the package owning SONAME in a multiarch
        # library directory on this host, or empty.
        soname_pkg() {
            { dpkg -S "*/$1" 2>/dev/null || true; } | awk -v so="$1" '
                /^diversion / { next }
                {
                    path = $NF
                    if (substr(path, length(path) - length(so)) != "/" so) next
                    if (path !~ /^\/(usr\/)?lib\/(x86_64|aarch64)-linux-gnu\//) next
                    sub(/[:,].*/, "", $1); print $1; exit
                }'
        }
        needed() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }

        fetch qemu-system-arm "$version"
        local bin="$entry/root/usr/bin/qemu-system-aarch64"
        [ -f "$bin" ] || die "qemu-system-arm:arm64 $version has no /usr/bin/qemu-system-aarch64"
        [ "$(elf_machine "$bin")" = aarch64 ] || die "$bin is not an aarch64 ELF"
        cp "$bin" "$entry/bundle/usr/bin/qemu-system-aarch64"
        local interp
        interp="$(readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')"
        [ -n "$interp" ] || die "$bin names no program interpreter"
        local queue=("$bin") done=" " f so lib pkg dep n
        while [ "${#queue[@]}" -gt 0 ]; do
            f="${queue[0]}"
            queue=("${queue[@]:1}")
            for so in $(needed "$f"); do
                case "$done" in *" $so "*) continue ;; esac
                done="$done$so "
                lib="$(find_lib "$so")"
                if [ -z "$lib" ]; then
                    pkg="$(soname_pkg "$so")"
                    [ -z "$pkg" ] || fetch "$pkg"
                    lib="$(find_lib "$so")"
                fi
                # Not known on this host: the Depends of what was fetched,
                # a round at a time, until the library turns up.
                while [ -z "$lib" ]; do
                    n="$(wc -l <"$entry/packages")"
                    while read -r dep; do
                        case "$dep" in lib* | zlib1g) fetch "$dep" ;; esac
                    done < <(sort -u "$entry/depends")
                    lib="$(find_lib "$so")"
                    [ -n "$lib" ] || [ "$(wc -l <"$entry/packages")" -gt "$n" ] ||
                        die "no arm64 package found for $so (needed by ${f#"$entry/root"})"
                done
                cp -L "$lib" "$entry/bundle/lib/aarch64-linux-gnu/$so"
                queue+=("$lib")
            done
        done
        # The interpreter: glibc's ld.so, which libc.so.6 names too.
        lib="$(find_lib "$(basename "$interp")")"
        [ -n "$lib" ] || lib="$(resolve "$entry/root$interp")"
        [ -n "$lib" ] || die "the program interpreter $interp is in none of the fetched packages"
        mkdir -p "$entry/bundle$(dirname "$interp")"
        if [ -f "$entry/bundle/lib/aarch64-linux-gnu/$(basename "$interp")" ] && [ "$(dirname "$interp")" = /lib ]; then
            ln -s "aarch64-linux-gnu/$(basename "$interp")" "$entry/bundle$interp"
        else
            cp -L "$lib" "$entry/bundle$interp"
        fi
        # Every library there: the loader (under qemu-user, with the bundle
        # as its root) resolves them all, or --version fails.
        if command -v qemu-aarch64 >/dev/null 2>&1; then
            qemu-aarch64 -L "$entry/bundle" "$entry/bundle/usr/bin/qemu-system-aarch64" --version >"$entry/version-check" 2>&1 ||
                die "the bundled qemu-system-aarch64 does not start under qemu-aarch64: $(head -n 3 "$entry/version-check")"
        fi
        sed -n 's/^qemu-system-arm //p' "$entry/packages" >"$entry/version"
        rm -rf "$entry/root" "$entry/deb" "$entry/depends"
        touch "$entry/.complete"
        log "cached qemu-system-aarch64 (arm64) $version with $(find "$entry/bundle/lib/aarch64-linux-gnu" -type f | wc -l) libraries from $(wc -l <"$entry/packages") packages ($(du -sk "$entry/bundle" | cut -f1) KiB): $entry"
    ) || die "could not prepare qemu-system-aarch64 for arm64"
    QEMU_ARM64_BUNDLE="$entry/bundle"
    QEMU_ARM64_VERSION="$version"
    need_file "$QEMU_ARM64_BUNDLE/usr/bin/qemu-system-aarch64"
}

# Print the calling script's header comment (lines 2.. up to `set -euo`) as help.
print_header() {
    sed -n '2,/^set -euo pipefail/{/^set -euo/d;s/^# \{0,1\}//;p;}' "$0"
}
