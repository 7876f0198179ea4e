#!/usr/bin/env bash
# The benchmark matrix behind docs/benchmarks.md: every scenario against the gateway (fsync never and always) and the
# reference peers, appended to one JSONL file; then the charts. Takes about 15-20 minutes on the 2-core machine.
# usage: loadtest/bench.sh [OUT.jsonl]      env: PEERS (default "lws-batch node python lws"), QUIET_WAIT_S, QUIET_PCT
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:-$HERE/results/bench-$(date +%Y%m%dT%H%M%S).jsonl}"
S="$HERE/scenarios"
C=("$HERE/compare.sh" -o "$OUT")
GW=(gateway-never gateway-always)
"${C[@]}" "$S/fanout.json" lws-batch "${GW[@]}" node python lws
"${C[@]}" "$S/product.json" lws-batch "${GW[@]}" node python
"${C[@]}" "$S/ramp.json" lws-batch "${GW[@]}" node python
"${C[@]}" "$S/idle-10k.json" lws-batch "${GW[@]}" node python
"${C[@]}" "$S/idle-10k-tls.json" gateway-never-tls   # the peers serve no TLS
for n in 1000 2500 5000; do   # RSS vs connections
  "${C[@]}" "$S/idle-10k.json" lws-batch gateway-never node -- --subs "$n" --rooms $((n / 10)) --label "idle-$n"
done
"${C[@]}" "$S/resume-storm.json" "${GW[@]}"
"${C[@]}" "$S/churn.json" lws-batch "${GW[@]}"
python3 "$HERE/plot.py" "$OUT" --out "$HERE/../docs" || echo "plot failed (pip install matplotlib?)" >&2
echo "matrix in $OUT" >&2
