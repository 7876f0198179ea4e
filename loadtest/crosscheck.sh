#!/usr/bin/env bash
# Cross-check: the independent C generator (../shared/peers wsload, raw epoll engine) and gateway-loadtest against
# the same lws-batch server with the same parameters, alternating, REPS times per rate. Prints deliveries/s of both
# and their ratio (they must agree within 10%).
# usage: loadtest/crosscheck.sh [-o out.jsonl] [RATES (per publisher), default "100 1000 3200"] ; env REPS (default 2)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/servers.sh"
OUT="$LT_ROOT/loadtest/results/crosscheck-$(date +%Y%m%dT%H%M%S).jsonl"
if [[ "${1:-}" == "-o" ]]; then OUT="$2"; shift 2; fi
RATES="${1:-100 1000 3200}"
mkdir -p "$(dirname "$OUT")"
trap stop_server EXIT
start_server lws-batch
COMMON=(--subs 1000 --rooms 10 --pubs 10 --size 128 --duration 5 --warmup 1 --drain 1 --procs "${PROCS:-1}")
foreign() { python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(int(max(0, r["machine_busy_pct"]*r["cores"] - r["server_cpu_pct"] - r["gen_cpu_pct"])))' "$1"; }
for rate in $RATES; do
  for rep in $(seq "${REPS:-2}"); do
    for try in 1 2 3; do   # a pair disturbed by other tenants' CPU (> FOREIGN_MAX core-%) is run again
      bg=$(wait_quiet)
      w=$(timeout 120 "$PEERS_BUILD/wsload" --port "$SPORT" --server-pid "$SPID" --rate "$rate" --label crosscheck "${COMMON[@]}")
      g=$(timeout 120 "$LT_BUILD/gateway-loadtest" --target room --port "$SPORT" --server-pid "$SPID" --rate "$rate" \
          --label crosscheck --peer lws-batch --table false "${COMMON[@]}")
      fw=$(foreign "$w"); fg=$(foreign "$g")
      (( fw <= ${FOREIGN_MAX:-25} && fg <= ${FOREIGN_MAX:-25} )) && break
      echo "rate $rate: disturbed (foreign CPU wsload $fw%, gateway-loadtest $fg%), again" >&2
    done
    echo "$w" | sed "s/^{/{\"tool\":\"wsload\",\"peer\":\"lws-batch\",\"foreign_cpu_pct\":$fw,\"bg_busy_pct\":$bg,\"loadavg_end\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",/" >> "$OUT"
    echo "$g" >> "$OUT"
    python3 - "$w" "$g" "$rate" "$fw" "$fg" <<'PY'
import json, sys
w, g, rate = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
a, b = w["delivered_msgs_s"], g["delivered_msgs_s"]
print(f"rate {rate}/pub: wsload {a:,.0f}/s (p99 {w['lat_us']['p99']/1000:.1f} ms, gen CPU {w['gen_cpu_pct']:.0f}%, foreign {sys.argv[4]}%)  "
      f"gateway-loadtest {b:,.0f}/s (p99 {g['lat_us']['p99']/1000:.1f} ms, gen CPU {g['gen_cpu_pct']:.0f}%, foreign {sys.argv[5]}%)  "
      f"ratio {b / a if a else 0:.3f}  load {g['loadavg_end']}")
PY
  done
done
echo "results appended to $OUT" >&2
