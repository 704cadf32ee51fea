# shellcheck shell=bash
# Shared by the benchmarks whose L1 scenario prints a cellvm-bench table
# (scripts/bench-boot.sh, scripts/bench-virtio-blk.sh). Source after lib.sh.

# bench_table_run SCENARIO TIMEOUT_S APPEND: boots L1 once running
# tests/nested/bench/SCENARIO.sh with APPEND on L1's command line, then
# prints the table the scenario wrapped in @@BENCH-TABLE-BEGIN/END, the
# versions line (BENCH-VERSIONS) and a line describing the host. L1's
# console goes to stderr and build/bench/SCENARIO-run.log. Dies (status 1)
# when the scenario failed, printed no table, or a VMM never produced a
# result.
bench_table_run() {
    local scenario="$1" timeout_s="$2" append="$3"
    need_file "$BUILD_DIR/l1/vmlinuz" "$BUILD_DIR/l1/initramfs.cpio.gz"
    local out_dir="$BUILD_DIR/bench"
    mkdir -p "$out_dir"
    local run_log="$out_dir/$scenario-run.log"
    log "== booting L1 once: scenario bench/$scenario (log: $run_log)"
    trap - ERR
    set +e
    "$REPO_ROOT/scripts/run-l1.sh" --scenarios "bench/$scenario" --timeout "$timeout_s" \
        --append "$append" 2>&1 | tee "$run_log" >&2
    local l1_rc="${PIPESTATUS[0]}"
    set -e
    trap _err_trap ERR

    if grep -q '^BENCH-ERROR' "$run_log"; then
        grep '^BENCH-ERROR' "$run_log" | sed 's/^/    /' >&2
        die "the benchmark scenario failed (see above; was L1 built with --with-qemu?)"
    fi
    grep -q "^@@CELLVM-SCENARIO-BEGIN bench/$scenario" "$run_log" ||
        die "L1 did not run the bench/$scenario scenario (run-l1.sh status $l1_rc; log: $run_log)"
    local end_line
    end_line="$(grep -m1 '^@@BENCH-TABLE-END' "$run_log" || true)"
    [ -n "$end_line" ] || die "no table in the L1 output (scenario killed? run-l1.sh status $l1_rc; log: $run_log)"
    local table versions host_cpu l0_qemu
    table="$(sed -n '/^@@BENCH-TABLE-BEGIN/,/^@@BENCH-TABLE-END/{/^@@BENCH-TABLE/d;p;}' "$run_log")"
    versions="$(sed -n 's/^BENCH-VERSIONS: //p' "$run_log" | head -n1)"
    host_cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    l0_qemu="$("${CELLVM_QEMU:-qemu-system-x86_64}" --version | head -n1)"

    printf '%s\n' "$table"
    echo
    echo "L1/L2: $versions"
    echo "host: $(uname -r), ${host_cpu:-unknown CPU}, $(nproc) CPUs; L1 under $l0_qemu, -accel ${CELLVM_L1_ACCEL:-tcg} -cpu ${CELLVM_L1_CPU:-max,-xsave} -smp ${CELLVM_L1_SMP:-1}; $(date -u '+%Y-%m-%d %H:%M UTC')"

    case "$end_line" in
        *rc=0) ;;
        *) die "cellvm-bench reported a VMM without results (${end_line#@@BENCH-TABLE-END }); its errors are in $run_log" ;;
    esac
    [ "$l1_rc" -eq 0 ] || die "run-l1.sh failed (status $l1_rc) although the table is complete; log: $run_log"
}

# sample_stats LOG COLUMN: "median p99 min max n" of the numeric COLUMN=
# values of the `bench-sample` lines in LOG ("- - - - 0" without any).
sample_stats() {
    sed -n "s/^bench-sample .*$2=\([0-9.]*\).*/\1/p" "$1" | sort -n | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "- - - - 0"; exit }
            m = v[int((NR + 1) / 2)]; p = v[int(NR * 0.99 + 0.999)]; if (p == "") p = v[NR]
            printf "%.1f %.1f %.1f %.1f %d\n", m, p, v[1], v[NR], NR
        }'
}
