#!/usr/bin/env bash
# Builds the libFuzzer targets (Fuzz/Package.swift) with -sanitize=fuzzer,address and runs each for N seconds.
#   scripts/fuzz.sh [seconds]        default 60 (CI); docs/reliability.md records the 10-minute runs (600)
# Env: FUZZ_TARGETS="fuzz-frame-decoder fuzz-log-reader fuzz-strict-json", FUZZ_JOBS (unused, one process per target),
#      FUZZ_KEEP_CORPUS=1 keeps the grown corpus in .build-fuzz/corpus-<target> (default: a fresh copy each run).
# The committed seeds (Fuzz/corpus/<target>/) are replayed first. A crash or a property violation stops with a
# non-zero status and leaves the input in Fuzz/crashes/<target>/ ; add it to Fuzz/corpus/<target>/ as a regression
# seed once fixed. Exit status: 0 if no target found anything.
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")/.."
root="$PWD"
scratch="$root/.build-fuzz"
targets="${FUZZ_TARGETS:-fuzz-frame-decoder fuzz-log-reader fuzz-strict-json}"

declare -A max_len=([fuzz-frame-decoder]=4096 [fuzz-log-reader]=16384 [fuzz-strict-json]=8192)
# The log reader must never size a buffer from an unchecked length: a 64 MiB malloc limit turns one into a report.
declare -A extra=([fuzz-frame-decoder]="-malloc_limit_mb=64" [fuzz-log-reader]="-malloc_limit_mb=64" [fuzz-strict-json]="-malloc_limit_mb=64")

start=$(date +%s)
for t in $targets; do
    swift build -c debug -Xswiftc -sanitize=fuzzer,address --package-path Fuzz --scratch-path "$scratch" --product "$t" \
        2>&1 | grep -v "Cannot export local symbol" | grep -Ev "^\[[0-9]+/[0-9]+\]" || true
    test -x "$scratch/debug/$t" || { echo "fuzz.sh: build of $t failed" >&2; exit 2; }
done
echo "fuzz.sh: build took $(( $(date +%s) - start ))s"

status=0
for t in $targets; do
    work="$scratch/corpus-$t"
    [ "${FUZZ_KEEP_CORPUS:-0}" = 1 ] || rm -rf "$work"
    mkdir -p "$work" "Fuzz/crashes/$t"
    log="$scratch/$t.log"
    echo "fuzz.sh: $t for ${seconds}s (log $log)"
    set +e
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:${ASAN_OPTIONS:-}" \
        "$scratch/debug/$t" "$work" "Fuzz/corpus/$t" \
        -max_total_time="$seconds" -max_len="${max_len[$t]}" -rss_limit_mb=2048 -timeout=10 ${extra[$t]} \
        -print_final_stats=1 -artifact_prefix="Fuzz/crashes/$t/" >"$log" 2>&1
    rc=$?
    set -e
    # One summary line: runs, exec/s, coverage, corpus.
    done_line=$(grep -E "^#[0-9]+[[:space:]]+DONE" "$log" | tail -1 || true)
    stats=$(grep -E "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)" "$log" | tr '\n' ' ' || true)
    echo "fuzz.sh: $t exit=$rc ${done_line:-} $stats"
    if [ $rc -ne 0 ]; then
        status=1
        grep -E "ERROR|property violated|Test unit written|SUMMARY" "$log" | head -20 >&2 || true
    fi
done
rmdir Fuzz/crashes/* Fuzz/crashes 2>/dev/null || true
exit $status
