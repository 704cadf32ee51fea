#!/usr/bin/env bash
# Build the nested rig's L1 image: a Debian 6.12 kernel (KVM + kvm_amd) and an
# initramfs holding busybox, the static cellvm, the cells, the guest (L2)
# kernel + initramfs and the scenarios.
#
# Output: build/l1/vmlinuz, build/l1/initramfs.cpio.gz
# Cache:  $CELLVM_CACHE/l1-kernel-<package>_<version>/ (vmlinuz, decompressed
#         modules, load order), keyed by the Debian package name and version.
#         The initramfs is rebuilt on every run (cheap), so the newest cellvm
#         binary, cells, scenarios and guest artefacts are always used.
#
# Inputs (must exist; run scripts/setup.sh for all of them):
#   target/x86_64-unknown-linux-gnu/release/cellvm   (scripts/build-cellvm-static.sh)
#   build/guest/bzImage, build/guest/vmlinux, build/guest/initramfs.cpio.gz
#   cells/*.toml, cells/devices/*.toml, cells/addons/*, tests/nested/scenarios/*.sh,
#   tests/nested/scenarios/lib/*.sh, guest/l1/init
#
# Environment:
#   CELLVM_L1_KERNEL_PKG  Debian kernel package to use, newest version of it
#                         (default: the pinned linux-image-6.12.117 cloud
#                         kernel, see L1_KERNEL_PKG_PINNED below)
#   CELLVM_BIN            cellvm binary to put into L1 (default: the static build)
#   CELLVM_SCENARIO_DIR   scenarios to put into L1 (default: tests/nested/scenarios)
#   CELLVM_L1_WITH_QEMU=1 same as --with-qemu
#
# Options:
#   --with-qemu   (x86_64; for --arch arm64 see there)
#                 also put the host's qemu-system-x86_64 into L1 (for the
#                 boot benchmark, scripts/bench-boot.sh): the binary, every
#                 shared library `ldd` names, and the firmware it loads
#                 (qboot.rom as bios-microvm.bin, SeaBIOS bios-256k.bin,
#                 linuxboot_dma.bin, kvmvapic.bin, ...) under /usr/share/qemu;
#                 plus the static cellvm-bench (scripts/build-cellvm-static.sh)
#                 as /cellvm/bin/cellvm-bench. Makes the initramfs ~20 MB bigger.
#
# Benchmark scenarios (tests/nested/bench/*.sh) always go to
# /cellvm/scenarios/bench/: `--scenarios all` skips that directory, they run
# only when named (scripts/run-l1.sh --scenarios bench/boot).
#
#   --arch arm64  the arm64 rig's L1 (docs/rig.md, "The arm64 rig"), for
#                 qemu-system-aarch64 (scripts/run-l1.sh --arch arm64):
#                 Debian's pinned linux-image-6.12.117 cloud-arm64 kernel
#                 (KVM built in: no modules), busybox-static:arm64, the
#                 static aarch64 cellvm (default CELLVM_BIN:
#                 target/arm64/aarch64-unknown-linux-gnu/release/cellvm from
#                 scripts/build-cellvm-static.sh --arch arm64), the cells in
#                 cells/arm64/ (*.toml, devices/*.toml, addons/*; none is a
#                 warning), build/guest-arm64/Image + initramfs.cpio.gz, the
#                 scenarios in tests/nested/scenarios-arm64/ and the x86 ones
#                 its shared.list names (benchmarks:
#                 tests/nested/bench-arm64/, when it exists) and
#                 guest/l1/init. No distribution-kernel guests.
#                 With --with-qemu: Debian's qemu-system-aarch64 built for
#                 arm64 (qemu-system-arm:arm64, apt-get download'ed and
#                 unpacked, never installed: lib.sh need_qemu_system_arm64,
#                 cached in $CELLVM_CACHE/qemu-system-arm-arm64_<version>/)
#                 as /usr/bin/qemu-system-aarch64, its program interpreter
#                 /lib/ld-linux-aarch64.so.1 and every library it loads
#                 (DT_NEEDED, recursively) in /lib/aarch64-linux-gnu/; no
#                 firmware (-M virt -kernel needs none); plus the static
#                 aarch64 cellvm-bench (scripts/build-cellvm-static.sh
#                 --arch arm64 --with-bench) as /cellvm/bin/cellvm-bench.
#                 For scripts/bench-arm64.sh; ~20 MB more initramfs.
#                 Output: build/l1-arm64/vmlinuz, build/l1-arm64/initramfs.cpio.gz
#                 L1 layout as for x86_64, but the guest in
#                 /cellvm/build/guest-arm64/ and /build -> /cellvm/build, so
#                 a cell's path written relative to cells/arm64/ in the
#                 repository (../../build/guest-arm64/Image) resolves in L1 too.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

with_qemu=0 # set by parse_args
parse_args --with-qemu=with_qemu -- "$@"
[ "${CELLVM_L1_WITH_QEMU:-0}" != 1 ] || with_qemu=1

# refuse_stale_cellvm HINT: dies when a source of the default static cellvm
# is newer than the binary (an L1 with yesterday's cellvm tests nothing new;
# HINT is the command that rebuilds it). A CELLVM_BIN of your own is taken
# as it is.
refuse_stale_cellvm() {
    [ -z "${user_bin:-}" ] || return 0
    local newer
    newer="$(find "$REPO_ROOT/src" "$REPO_ROOT/Cargo.toml" "$REPO_ROOT/Cargo.lock" \
        -newer "$CELLVM_BIN" -print -quit 2>/dev/null)"
    [ -z "$newer" ] || die "$CELLVM_BIN is older than $newer: rebuild it with $1 (or run scripts/setup.sh)"
}
user_bin="${CELLVM_BIN:-}"

if [ "$ARCH" = arm64 ]; then
    need_busybox_static_arm64
    apt_ensure xz-utils kmod
    need_cmd apt-get apt-cache dpkg-deb xz
    CELLVM_BIN="${CELLVM_BIN:-$TARGET_DIR/arm64/aarch64-unknown-linux-gnu/release/cellvm}"
    [ -x "$CELLVM_BIN" ] || die "no cellvm binary at $CELLVM_BIN (run scripts/build-cellvm-static.sh --arch arm64)"
    [ "$(elf_machine "$CELLVM_BIN")" = aarch64 ] ||
        die "$CELLVM_BIN is not an aarch64 ELF ($(elf_machine "$CELLVM_BIN")): build it with scripts/build-cellvm-static.sh --arch arm64"
    if is_dynamic "$CELLVM_BIN"; then
        die "$CELLVM_BIN is dynamically linked; L1 has no libc: build it with scripts/build-cellvm-static.sh --arch arm64"
    fi
    refuse_stale_cellvm "scripts/build-cellvm-static.sh --arch arm64"
    guest_dir="$BUILD_DIR/guest-arm64"
    guest_files=("$guest_dir/Image" "$guest_dir/initramfs.cpio.gz")
    need_file "${guest_files[@]}" "$REPO_ROOT/guest/l1/init"
    out="$BUILD_DIR/l1-arm64"
else
    need_busybox_static
    apt_ensure xz-utils kmod
    need_cmd apt-get apt-cache dpkg-deb xz modinfo

    CELLVM_BIN="${CELLVM_BIN:-$TARGET_DIR/x86_64-unknown-linux-gnu/release/cellvm}"
    [ -x "$CELLVM_BIN" ] || die "no cellvm binary at $CELLVM_BIN (run scripts/build-cellvm-static.sh)"
    if is_dynamic "$CELLVM_BIN"; then
        die "$CELLVM_BIN is dynamically linked; L1 has no libc: build it with scripts/build-cellvm-static.sh"
    fi
    refuse_stale_cellvm "scripts/build-cellvm-static.sh"
    need_file "$BUILD_DIR/guest/bzImage" "$BUILD_DIR/guest/vmlinux" "$BUILD_DIR/guest/initramfs.cpio.gz" "$REPO_ROOT/guest/l1/init"
    out="$BUILD_DIR/l1"
fi

# ---- L1 kernel package ----
# Pinned, so that the rig does not change under CI's feet with every Debian
# stable update (docs/rig.md, "L1"). Debian's security archive keeps older
# versions; override with CELLVM_L1_KERNEL_PKG.
L1_KERNEL_PKG_PINNED="linux-image-6.12.117+deb12-cloud-amd64-unsigned"
L1_KERNEL_VERSION_PINNED="6.12.117-1~deb12u1"
# apt's name for the package: arm64 packages are foreign here (multiarch).
apt_suffix=""
if [ "$ARCH" = arm64 ]; then
    # The same Debian version as the x86_64 L1; KVM is built in.
    L1_KERNEL_PKG_PINNED="linux-image-6.12.117+deb12-cloud-arm64-unsigned"
    apt_suffix=":arm64"
fi
pkg="${CELLVM_L1_KERNEL_PKG:-$L1_KERNEL_PKG_PINNED}"
if [ -z "$(apt-cache show --no-all-versions "$pkg$apt_suffix" 2>/dev/null | sed -n 's/^Version: //p')" ]; then
    log "apt knows no $pkg$apt_suffix; running apt-get update"
    if [ "$(id -u)" -eq 0 ]; then apt-get update >/dev/null; else sudo apt-get update >/dev/null; fi
fi
if [ "$pkg" = "$L1_KERNEL_PKG_PINNED" ]; then
    version="$L1_KERNEL_VERSION_PINNED"
    apt-cache show "$pkg$apt_suffix=$version" >/dev/null 2>&1 ||
        die "the pinned L1 kernel $pkg=$version is not in the Debian archive any more: pick another one that passes the attach scenario repeatedly (CELLVM_L1_KERNEL_PKG=... scripts/run-l1.sh --scenarios attach) and pin it here (docs/rig.md)"
else
    version="$(apt-cache show --no-all-versions "$pkg$apt_suffix" 2>/dev/null | sed -n 's/^Version: //p' | head -n1)"
    [ -n "$version" ] || die "apt-cache knows no package '$pkg$apt_suffix'"
fi

entry="$CELLVM_CACHE/l1-kernel-${pkg}_${version}"
mkdir -p "$CELLVM_CACHE"
exec 9>"$CELLVM_CACHE/l1-kernel.lock"
flock 9
if [ -f "$entry/.complete" ]; then
    log "cached: $entry"
else
    log "fetching $pkg $version"
    rm -rf "$entry"
    mkdir -p "$entry/deb" "$entry/modules"
    trap 'rm -rf "$entry"' EXIT
    (cd "$entry/deb" && apt-get download "$pkg$apt_suffix=$version" >/dev/null 2>&1) ||
        (cd "$entry/deb" && apt-get download "$pkg$apt_suffix=$version") ||
        die "apt-get download $pkg$apt_suffix=$version failed"
    deb="$(find "$entry/deb" -name '*.deb' | head -n1)"
    [ -n "$deb" ] || die "apt-get download produced no .deb"
    dpkg-deb -x "$deb" "$entry/root"
    vmlinuz="$(find "$entry/root/boot" -name 'vmlinuz-*' | head -n1)"
    [ -n "$vmlinuz" ] || die "no /boot/vmlinuz-* in $pkg"
    cp "$vmlinuz" "$entry/vmlinuz"
    moddir=""
    for d in "$entry"/root/lib/modules/* "$entry"/root/usr/lib/modules/*; do
        [ -d "$d" ] && moddir="$d" && break
    done
    [ -n "$moddir" ] || die "no modules directory in $pkg"
    if [ "$ARCH" = arm64 ]; then
        # KVM is built into the arm64 cloud kernel: no modules to load.
        config="$(find "$entry/root/boot" -name 'config-*' | head -n1)"
        [ -n "$config" ] || die "no /boot/config-* in $pkg"
        grep -qx 'CONFIG_KVM=y' "$config" ||
            die "$pkg does not have KVM built in ($(grep '^CONFIG_KVM=' "$config" || echo 'no CONFIG_KVM')): the arm64 L1 loads no modules"
    fi

    # find_module NAME: path of NAME.ko[.xz] (dashes and underscores are equivalent).
    find_module() {
        local n1="${1//_/-}" n2="${1//-/_}"
        find "$moddir" \( -name "$n1.ko" -o -name "$n1.ko.xz" -o -name "$n2.ko" -o -name "$n2.ko.xz" \) | head -n1
    }
    # Depth-first: dependencies first, each module once.
    order=()
    add_module() {
        local name="$1" path dep deps m
        for m in "${order[@]:-}"; do [ "$m" = "$name" ] && return 0; done
        path="$(find_module "$name")"
        [ -n "$path" ] || die "module $name not found in $pkg"
        deps="$(modinfo -F depends "$path" | tr ',' ' ')"
        for dep in $deps; do add_module "${dep//-/_}"; done
        case "$path" in
            *.xz) xz -dc "$path" >"$entry/modules/$name.ko" ;;
            *) cp "$path" "$entry/modules/$name.ko" ;;
        esac
        order+=("$name")
    }
    if [ "$ARCH" = arm64 ]; then
        : >"$entry/modules/load-order"
    else
        add_module kvm_amd
        printf '%s\n' "${order[@]}" >"$entry/modules/load-order"
    fi
    rm -rf "$entry/root" "$entry/deb"
    printf '%s %s\n' "$pkg" "$version" >"$entry/package"
    touch "$entry/.complete"
    trap - EXIT
    mods="$(tr '\n' ' ' <"$entry/modules/load-order")"
    log "cached $pkg $version: modules ${mods:-none (KVM built in)}"
fi
need_file "$entry/vmlinuz" "$entry/modules/load-order"

# ---- A distribution kernel for the CI-runner scenario ----
# Debian's generic amd64 kernel of the same version: no CONFIG_OF (it
# ignores the device tree), CONFIG_X86_MPPARSE (it finds its CPUs in
# cellvm's MP table). Only its vmlinuz is kept. (The cloud flavour the L1
# runs has no MP table parser: it needs ACPI, docs/ci.md.)
# (x86_64 only: the CI-runner scenario is an x86 one.)
distro_pkg="linux-image-6.12.117+deb12-amd64-unsigned"
distro_entry="$CELLVM_CACHE/distro-kernel-${distro_pkg}_${L1_KERNEL_VERSION_PINNED}"
if [ "$ARCH" = x86_64 ] && [ ! -f "$distro_entry/.complete" ]; then
    log "fetching $distro_pkg $L1_KERNEL_VERSION_PINNED (the distribution-kernel guest)"
    rm -rf "$distro_entry"
    mkdir -p "$distro_entry/deb"
    (cd "$distro_entry/deb" && apt-get download "$distro_pkg=$L1_KERNEL_VERSION_PINNED" >/dev/null 2>&1) ||
        die "apt-get download $distro_pkg=$L1_KERNEL_VERSION_PINNED failed"
    deb="$(find "$distro_entry/deb" -name '*.deb' | head -n1)"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$distro_entry" ./boot ||
        die "cannot unpack /boot of $deb"
    vmlinuz="$(find "$distro_entry/boot" -name 'vmlinuz-*' | head -n1)"
    [ -n "$vmlinuz" ] || die "no /boot/vmlinuz-* in $distro_pkg"
    mv "$vmlinuz" "$distro_entry/vmlinuz"
    rm -rf "${distro_entry:?}/deb" "${distro_entry:?}/boot"
    touch "$distro_entry/.complete"
fi
[ "$ARCH" != x86_64 ] || need_file "$distro_entry/vmlinuz"

# ---- L1 initramfs (always rebuilt) ----
mkdir -p "$out"
stage="$(mktemp -d "$out/.stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

# install_stripped SRC DST: an x86_64 binary without its symbol table (the
# static build keeps it for the text-order profile; nothing in L1 reads it).
install_stripped() {
    objcopy --strip-all "$1" "$2" || die "objcopy --strip-all $1 failed"
    chmod 0755 "$2"
}

make_busybox_root "$stage"
install -m 0755 "$REPO_ROOT/guest/l1/init" "$stage/init"
mkdir -p "$stage/lib/cellvm-modules" "$stage/cellvm/bin" "$stage/cellvm/cells" \
    "$stage/cellvm/build/guest" "$stage/cellvm/scenarios"
if [ "$ARCH" = arm64 ]; then
    # KVM built in: an empty load order.
    cp "$entry/modules/load-order" "$stage/lib/cellvm-modules/"
    install -m 0755 "$CELLVM_BIN" "$stage/cellvm/bin/cellvm"
    rmdir "$stage/cellvm/build/guest"
    mkdir -p "$stage/cellvm/build/guest-arm64"
    cp "${guest_files[@]}" "$stage/cellvm/build/guest-arm64/"
    # Paths relative to cells/arm64/ in the repository
    # (../../build/guest-arm64/Image) resolve from /cellvm/cells/ too.
    ln -s cellvm/build "$stage/build"
    cell_src="$REPO_ROOT/cells/arm64"
    shopt -s nullglob
    extra_cells=("$cell_src"/devices/*.toml)
    if [ "${#extra_cells[@]}" -gt 0 ]; then
        mkdir -p "$stage/cellvm/cells/devices"
        cp "${extra_cells[@]}" "$stage/cellvm/cells/devices/"
    fi
    extra_cells=("$cell_src"/addons/*.toml "$cell_src"/addons/*.dtso)
    if [ "${#extra_cells[@]}" -gt 0 ]; then
        mkdir -p "$stage/cellvm/cells/addons"
        cp "${extra_cells[@]}" "$stage/cellvm/cells/addons/"
    fi
    cells=("$cell_src"/*.toml)
    scenario_dir="${CELLVM_SCENARIO_DIR:-$REPO_ROOT/tests/nested/scenarios-arm64}"
    scenarios=("$scenario_dir"/*.sh)
    shopt -u nullglob
    # The x86 scenarios the arm64 rig runs unchanged (shared.list).
    if [ -f "$scenario_dir/shared.list" ]; then
        while read -r name; do
            case "$name" in "" | "#"*) continue ;; esac
            shared="$REPO_ROOT/tests/nested/scenarios/$name.sh"
            need_file "$shared"
            [ ! -e "$scenario_dir/$name.sh" ] || die "$scenario_dir/$name.sh shadows the shared $shared (shared.list)"
            scenarios+=("$shared")
        done <"$scenario_dir/shared.list"
    fi
    [ "${#cells[@]}" -gt 0 ] || warn "no cells/arm64/*.toml: L1 gets no cells (only scenarios that need none can run)"
else
    cp "$entry/modules/"*.ko "$entry/modules/load-order" "$stage/lib/cellvm-modules/"
    install_stripped "$CELLVM_BIN" "$stage/cellvm/bin/cellvm"
    cp "$BUILD_DIR/guest/bzImage" "$BUILD_DIR/guest/vmlinux" "$BUILD_DIR/guest/initramfs.cpio.gz" "$stage/cellvm/build/guest/"
    # Guests for the CI-runner scenario: Debian's generic kernel (no
    # CONFIG_OF: it boots from the MP table) and the L1's own cloud kernel
    # (neither CONFIG_OF nor an MP table parser: one vCPU without ACPI).
    cp "$distro_entry/vmlinuz" "$stage/cellvm/build/distro-vmlinuz"
    cp "$entry/vmlinuz" "$stage/cellvm/build/cloud-vmlinuz"
    mkdir -p "$stage/cellvm/cells/devices" "$stage/cellvm/cells/addons"
    cp "$REPO_ROOT"/cells/devices/*.toml "$stage/cellvm/cells/devices/"
    cp "$REPO_ROOT"/cells/addons/*.toml "$REPO_ROOT"/cells/addons/*.dtso "$stage/cellvm/cells/addons/"

    shopt -s nullglob
    cells=("$REPO_ROOT"/cells/*.toml)
    scenario_dir="${CELLVM_SCENARIO_DIR:-$REPO_ROOT/tests/nested/scenarios}"
    scenarios=("$scenario_dir"/*.sh)
    shopt -u nullglob
    [ "${#cells[@]}" -gt 0 ] || die "no cells/*.toml"
fi
[ "${#scenarios[@]}" -gt 0 ] || die "no scenarios ($scenario_dir/*.sh)"
[ "${#cells[@]}" -eq 0 ] || cp "${cells[@]}" "$stage/cellvm/cells/"
install -m 0755 "${scenarios[@]}" "$stage/cellvm/scenarios/"
# The helpers scenarios source (tests/nested/scenarios/lib, both
# architectures): a subdirectory, so `cellvm.scenarios=all` never runs them.
mkdir -p "$stage/cellvm/scenarios/lib"
install -m 0644 "$REPO_ROOT"/tests/nested/scenarios/lib/*.sh "$stage/cellvm/scenarios/lib/"
printf '%s %s\n' "$pkg" "$version" >"$stage/cellvm/l1-kernel"

# Benchmark scenarios: a subdirectory, so `cellvm.scenarios=all` (files only)
# never runs them.
if [ "$ARCH" = arm64 ]; then
    bench_dir="${CELLVM_BENCH_DIR:-$REPO_ROOT/tests/nested/bench-arm64}"
else
    bench_dir="${CELLVM_BENCH_DIR:-$REPO_ROOT/tests/nested/bench}"
fi
shopt -s nullglob
bench_scenarios=("$bench_dir"/*.sh)
shopt -u nullglob
if [ "${#bench_scenarios[@]}" -gt 0 ]; then
    mkdir -p "$stage/cellvm/scenarios/bench"
    install -m 0755 "${bench_scenarios[@]}" "$stage/cellvm/scenarios/bench/"
fi

# --with-qemu: QEMU (dynamically linked: its libraries come along at the
# paths ldd resolves) and its firmware, plus the static cellvm-bench.
qemu_note=""
if [ "$with_qemu" = 1 ] && [ "$ARCH" = arm64 ]; then
    # QEMU for arm64 (not the host's: it is x86_64), its libraries from
    # Debian's arm64 packages, and the aarch64 cellvm-bench.
    bench_bin="$(dirname "$CELLVM_BIN")/cellvm-bench"
    [ -x "$bench_bin" ] || die "--with-qemu: no cellvm-bench at $bench_bin (run scripts/build-cellvm-static.sh --arch arm64 --with-bench)"
    [ "$(elf_machine "$bench_bin")" = aarch64 ] || die "--with-qemu: $bench_bin is not an aarch64 ELF"
    if is_dynamic "$bench_bin"; then
        die "$bench_bin is dynamically linked; build it with scripts/build-cellvm-static.sh --arch arm64 --with-bench"
    fi
    need_qemu_system_arm64
    install -m 0755 "$bench_bin" "$stage/cellvm/bin/cellvm-bench"
    # The bundle is a root tree: usr/bin/qemu-system-aarch64,
    # lib/ld-linux-aarch64.so.1, lib/aarch64-linux-gnu/*.
    cp -a "$QEMU_ARM64_BUNDLE/." "$stage/"
    nlibs="$(find "$QEMU_ARM64_BUNDLE/lib/aarch64-linux-gnu" -type f | wc -l)"
    qemu_note=", qemu-system-aarch64 (arm64) $QEMU_ARM64_VERSION + $nlibs libraries, cellvm-bench"
elif [ "$with_qemu" = 1 ]; then
    apt_ensure qemu-system-x86
    need_cmd ldd
    qemu_bin="$(command -v qemu-system-x86_64)" || die "--with-qemu: qemu-system-x86_64 not found"
    bench_bin="$(dirname "$CELLVM_BIN")/cellvm-bench"
    [ -x "$bench_bin" ] || die "--with-qemu: no cellvm-bench at $bench_bin (run scripts/build-cellvm-static.sh)"
    if is_dynamic "$bench_bin"; then
        die "$bench_bin is dynamically linked; build it with scripts/build-cellvm-static.sh"
    fi
    install_stripped "$bench_bin" "$stage/cellvm/bin/cellvm-bench"
    mkdir -p "$stage/usr/bin"
    install -m 0755 "$qemu_bin" "$stage/usr/bin/qemu-system-x86_64"
    # ldd lines: "libx.so => /path (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)".
    ldd_out="$(ldd "$qemu_bin")" || die "--with-qemu: ldd $qemu_bin failed"
    if grep -q 'not found' <<<"$ldd_out"; then
        die "--with-qemu: libraries missing: $(grep 'not found' <<<"$ldd_out" | tr -s ' \t\n' ' ')"
    fi
    libs="$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out" | sort -u)"
    [ -n "$libs" ] || die "--with-qemu: ldd $qemu_bin named no libraries"
    nlibs=0
    while read -r lib; do
        mkdir -p "$stage$(dirname "$lib")"
        cp -L "$lib" "$stage$lib"
        nlibs=$((nlibs + 1))
    done <<<"$libs"
    # Firmware: QEMU looks in /usr/share/qemu (its data dir) first. microvm
    # boots qboot (bios-microvm.bin; qboot.rom with acpi=off), pc boots
    # SeaBIOS (bios-256k.bin) with the linuxboot_dma.bin option ROM;
    # kvmvapic.bin is loaded under KVM.
    fw_dst="$stage/usr/share/qemu"
    mkdir -p "$fw_dst"
    find_fw() { # find_fw NAME: first existing copy in Debian's firmware path
        local d
        for d in /usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu; do
            [ -e "$d/$1" ] && { echo "$d/$1"; return 0; }
        done
        return 1
    }
    for fw in bios-microvm.bin qboot.rom bios-256k.bin linuxboot_dma.bin linuxboot.bin kvmvapic.bin pvh.bin; do
        src="$(find_fw "$fw")" || die "--with-qemu: firmware $fw not found (Debian packages qemu-system-data, seabios)"
        cp -L "$src" "$fw_dst/$fw"
    done
    qemu_note=", qemu $("$qemu_bin" --version | sed -n '1s/.*version \([^ ]*\).*/\1/p') + $nlibs libraries + firmware, cellvm-bench"
fi

cp "$entry/vmlinuz" "$out/vmlinuz.tmp"
mv "$out/vmlinuz.tmp" "$out/vmlinuz"
cpio_gz "$stage" "$out/initramfs.cpio.gz"
rel_out="${out#"$REPO_ROOT"/}"
log "$rel_out/vmlinuz ($pkg $version), $rel_out/initramfs.cpio.gz ($(stat -c %s "$out/initramfs.cpio.gz") bytes): ${#cells[@]} cells, ${#scenarios[@]} scenarios (+${#bench_scenarios[@]} bench), cellvm $(stat -c %s "$CELLVM_BIN") bytes$qemu_note"
