#!/usr/bin/env bash
# What bounds the gateway: profiles a short fan-out run (bounded) against a fresh gateway.
#   1. perf record -e cpu-clock (software sampling: this VM has no hardware counters) of the server, hottest symbols;
#      perf stat of the server (task-clock, context switches, migrations, faults)
#   2. strace -c -f of the server on a second short run: syscalls per delivery (strace slows the server: its figures
#      are counts, not speeds)
# usage: loadtest/profile.sh [gateway-never|gateway-always|gateway-never-tls|gateway-always-tls] [RATE per publisher,
#        default 300] [OUTDIR]   (*-tls: the gateway with a TLS listener, the run over wss)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/servers.sh"
WHICH="${1:-gateway-never}"; RATE="${2:-300}"; OUTDIR="${3:-$HERE/results}"
mkdir -p "$OUTDIR"
P="$OUTDIR/profile-$WHICH-r$RATE"
trap stop_server EXIT
TOOL=("$LT_BUILD/gateway-loadtest" "$HERE/scenarios/fanout.json" --rate "$RATE" --warmup 1 --duration 6 --drain 1 --table false)

start_server "$WHICH"
grep -o 'libwebsockets-evlib[^ ]*' /proc/$SPID/maps | sort -u > "$P.evlib.txt" || true
"${TOOL[@]}" --target "$STARGET" --port "$SPORT" --server-pid "$SPID" --peer "$WHICH" --tls "$STLS" --note "perf" > "$P.run-perf.json" &
TP=$!
sleep 3   # connects done, publishing under way
perf stat -e task-clock,context-switches,cpu-migrations,page-faults -p "$SPID" -- sleep 5 2> "$P.perf-stat.txt" &
PS=$!
perf record -e cpu-clock -F 499 -g -p "$SPID" -o "$P.perf.data" -- sleep 5 2>"$P.perf-record.log" || true
wait $PS || true
wait $TP || true
perf report -i "$P.perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -v '^$' | grep '%' | head -60 \
  | swift demangle --simplified > "$P.perf-top.txt" || true
perf report -i "$P.perf.data" --no-children --sort dso --stdio 2>/dev/null | grep '%' | head -15 > "$P.perf-dso.txt" || true
rm -f "$P.perf.data"
stop_server

start_server "$WHICH"
"${TOOL[@]}" --target "$STARGET" --port "$SPORT" --server-pid "$SPID" --peer "$WHICH" --tls "$STLS" --note "strace" --rate "$((RATE / 3 + 1))" > "$P.run-strace.json" &
TP=$!
sleep 3
timeout 5 strace -c -f -p "$SPID" -o "$P.strace.txt" || true
wait $TP || true
stop_server
echo "wrote $P.*" >&2
