#!/usr/bin/env bash
# Runs one scenario with the same client, schedule and clock against the gateway and reference peers, one server at a
# time (each started fresh and killed by PID), and prints ratios to the first target.
# usage: loadtest/compare.sh [-o results.jsonl] SCENARIO.json [TARGET...] [-- extra gateway-loadtest flags]
#   TARGET: gateway-never gateway-always gateway-never-tls gateway-always-tls lws-batch lws lws-ev node python hummingbird
#   The target decides ws or wss: *-tls targets run the scenario over wss (--tls true), every other one over ws
#   (--tls false, whatever the scenario says); extra flags after -- come last and win (e.g. -- --tls-fraction 0.5).
#   default targets: lws-batch gateway-never gateway-always node python lws
# Needs: swift build -c release --product gateway --scratch-path .build-lt (and --product gateway-loadtest),
#        ../shared/peers/build.sh (into ./.peers-build). resume-storm runs against the gateway only.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/servers.sh"
OUT="$LT_ROOT/loadtest/results/compare-$(date +%Y%m%dT%H%M%S).jsonl"
if [[ "${1:-}" == "-o" ]]; then OUT="$2"; shift 2; fi
SCEN="$1"; shift
TARGETS=(); EXTRA=()
while [[ $# -gt 0 ]]; do
  if [[ "$1" == "--" ]]; then shift; EXTRA=("$@"); break; fi
  TARGETS+=("$1"); shift
done
[[ ${#TARGETS[@]} -eq 0 ]] && TARGETS=(lws-batch gateway-never gateway-always node python lws)
mkdir -p "$(dirname "$OUT")"
TOOL="$LT_BUILD/gateway-loadtest"
KIND=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("kind","fanout"))' "$SCEN")
trap stop_server EXIT
TMPOUT=$(mktemp)
for t in "${TARGETS[@]}"; do
  if [[ "$KIND" == "resume-storm" && "$t" != gateway-* ]]; then echo "skip $t: rooms have no resume" >&2; continue; fi
  start_server "$t" || continue
  bg=$(wait_quiet)
  echo "== $(basename "$SCEN" .json) on $t (pid $SPID, port $SPORT), machine busy $bg% before, load avg $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  timeout 900 "$TOOL" "$SCEN" --target "$STARGET" --port "$SPORT" --server-pid "$SPID" --peer "$t" --tls "$STLS" \
    ${SNOTE:+--note "$SNOTE"} ${EXTRA[@]+"${EXTRA[@]}"} | tee -a "$OUT" >> "$TMPOUT" || echo "run on $t failed" >&2
  stop_server
  sleep 1
done
python3 - "$TMPOUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if not rows: sys.exit(0)
def last_by_peer(kind_filter):
    d = {}
    for r in rows:
        if kind_filter(r): d[r.get("peer", "?")] = r
    return d
kind = rows[0]["kind"]
if kind in ("ramp", "ramp-summary"):
    d = last_by_peer(lambda r: r["kind"] == "ramp-summary")
    metrics = [("saturation deliveries/s", lambda r: r["saturation_delivered_msgs_s"], True)]
elif kind == "idle":
    d = last_by_peer(lambda r: True)
    metrics = [("RSS KiB/conn", lambda r: r["rss_per_conn_kb"], False), ("connects/s", lambda r: r["connect_rate_s"], True),
               ("handshake p99 ms", lambda r: r["handshake_us"].get("p99", 0) / 1000, False)]
elif kind == "resume-storm":
    d = last_by_peer(lambda r: True)
    metrics = [("storm total ms", lambda r: r["storm_total_ms"], False), ("caught up", lambda r: r["caught_up"], True)]
else:
    d = last_by_peer(lambda r: True)
    metrics = [("delivered/s", lambda r: r["delivered_msgs_s"], True), ("ratio", lambda r: r["delivery_ratio"], True),
               ("p50 ms", lambda r: r["lat_us"].get("p50", 0) / 1000, False), ("p99 ms", lambda r: r["lat_us"].get("p99", 0) / 1000, False),
               ("server µs/delivery", lambda r: r["server_cpu_us_per_delivery"], False),
               ("frames/send", lambda r: r.get("frames_per_send", -1), True)]
    if kind == "churn":
        metrics += [("lost", lambda r: r.get("lost", 0), False), ("gaps", lambda r: r["gaps"], False)]
peers = list(d)
ref = peers[0]
print(f"\n{kind}: ratios to {ref} (x = value / {ref}'s)")
print("| target | " + " | ".join(m[0] for m in metrics) + " | load avg |")
print("|---" * (len(metrics) + 2) + "|")
for p in peers:
    cells = []
    for name, f, _ in metrics:
        v, rv = f(d[p]), f(d[ref])
        ratio = f" ({v / rv:.2f}x)" if rv and rv > 0 and v >= 0 and p != ref else ""
        cells.append(f"{v:,.2f}{ratio}" if isinstance(v, float) and v < 100 else f"{v:,.0f}{ratio}")
    print(f"| {p} | " + " | ".join(cells) + f" | {d[p].get('loadavg_end', '')} (foreign {d[p].get('foreign_cpu_pct', '-')}%) |")
PY
rm -f "$TMPOUT"
echo "results appended to $OUT" >&2
