#!/usr/bin/env bash
# Runs fuzz targets one after the other, each for a while, with libFuzzer (cargo-fuzz).
#
#   fuzz/run.sh [-t SECONDS] [TARGET...]     (default: 60 s each, every target)
#
# Each target starts from its committed seeds (fuzz/corpus/<target>, read only) and keeps what
# it learns in fuzz/work/<target> (not committed); a crash lands in fuzz/artifacts/<target>/
# and stops that target. The log of each run is fuzz/logs/<target>.log; the last lines
# (cov, ft, exec/s, runs) are printed at the end. Needs cargo-fuzz (`cargo install
# cargo-fuzz`); on a stable toolchain RUSTC_BOOTSTRAP=1 lets it use its -Z flags.
# Inputs up to FUZZ_MAX_LEN bytes (16 KiB: a whole packet and its fragments, long scripts).
# FUZZ_SANITIZER=address turns AddressSanitizer on (off by default: zt's crates forbid
# unsafe code and its dependencies run in their safe modes, and ASan costs about 8x).
set -euo pipefail
cd "$(dirname "$0")"
secs=60
while getopts "t:" o; do
    case $o in
        t) secs=$OPTARG ;;
        *) echo "usage: fuzz/run.sh [-t SECONDS] [TARGET...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
if [ $# -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list 2>/dev/null || sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | tail -n +2)
else
    targets=("$@")
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi
sanitizer=${FUZZ_SANITIZER:-none}
mkdir -p logs
status=0
for t in "${targets[@]}"; do
    mkdir -p "work/$t"
    echo "==> $t (${secs}s)"
    if ! cargo fuzz run --sanitizer "$sanitizer" "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len="${FUZZ_MAX_LEN:-16384}" -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 \
        >"logs/$t.log" 2>&1; then
        echo "    FAILED: see fuzz/logs/$t.log and fuzz/artifacts/$t/"
        status=1
    fi
    grep -a -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE)' "logs/$t.log" | tail -n 1 || true
    grep -a -E 'stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "logs/$t.log" || true
done
exit $status
