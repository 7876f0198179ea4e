#!/usr/bin/env bash
# Cluster-mode benchmark (docs/benchmarks.md, "Cluster mode"): the same generator against one node on the local
# engine, one node on Redis, and two nodes on one Redis, 1,000 subscribers spread over the nodes, 10 sessions,
# 10 agents. Per setup: a fixed 100k deliveries/s run (fan-out and publish->ack latency) and a ramp (saturation),
# plus Redis's CPU per durable event (its utime+stime over the run and INFO commandstats).
#   loadtest/cluster-bench.sh [out.jsonl]        (release build in $LT_BUILD, default .build/release)
# Everything on 127.0.0.1; every server is started here, refused if its port is taken, and killed by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
LT_BUILD="${LT_BUILD:-.build/release}"
OUT="${1:-${TMPDIR:-/tmp}/cluster-bench.jsonl}"
REDIS_PORT="${REDIS_PORT:-16390}"
BASE_PORT="${BASE_PORT:-18180}"
SETUPS="${SETUPS:-local-1 redis-1 redis-2}"
export GATEWAY_AUTH_HS256_SECRET="${GATEWAY_AUTH_HS256_SECRET:-loadtest-only-secret-0123456789abcdef0123456789}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/cluster-bench.XXXXXX")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_http() {  # port: bounded wait for /readyz
  for _ in $(seq 1 200); do
    curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "node on $1 not ready" >&2
  return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start_redis() {
  port_free "$REDIS_PORT" || { echo "port $REDIS_PORT taken" >&2; exit 1; }
  mkdir -p "$WORK/redis"
  redis-server Config/redis.conf --port "$REDIS_PORT" --dir "$WORK/redis" --bind 127.0.0.1 > "$WORK/redis/log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "redis did not start" >&2
  exit 1
}

start_node() {  # engine index
  local engine="$1" i="$2" port=$((BASE_PORT + $2))
  port_free "$port" || { echo "port $port taken" >&2; exit 1; }
  mkdir -p "$WORK/node-$i"
  env GATEWAY_STORAGE_ENGINE="$engine" GATEWAY_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" GATEWAY_NODE_ID="n$i" \
    GATEWAY_REDIS_KEY_PREFIX="b$RUN" GATEWAY_FSYNC=always GATEWAY_LISTEN_HOST=127.0.0.1 GATEWAY_LISTEN_PORT="$port" \
    GATEWAY_DATA_DIR="$WORK/node-$i" GATEWAY_LOG_LEVEL=warning GATEWAY_RATE_LIMITS_ROLES_USER_RATE_PER_SECOND=0 \
    "$LT_BUILD/gateway" --config Config/gateway.json > "$WORK/node-$i.log" 2>&1 &
  NODE_PIDS+=("$!")
  PIDS+=("$!")
  NODE_PORTS+=("$port")
  wait_http "$port"
}

RUN=0
start_redis
for setup in $SETUPS; do
  engine="${setup%-*}"
  count="${setup#*-}"
  RUN=$((RUN + 1))
  NODE_PIDS=()
  NODE_PORTS=()
  for i in $(seq 0 $((count - 1))); do start_node "$engine" "$i"; done
  ports="$(IFS=,; echo "${NODE_PORTS[*]}")"
  extra=("${NODE_PIDS[@]:1}")
  [ "$engine" = redis ] && extra+=("$REDIS_PID")
  extra_csv="$(IFS=,; echo "${extra[*]:-}")"
  for scenario in fanout ramp; do
    redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
    r0="$(cpu_ticks "$REDIS_PID")"
    args=(loadtest/scenarios/$scenario.json --port "${NODE_PORTS[0]}" --ports "$ports" --server-pid "${NODE_PIDS[0]}"
      --label "$setup" --note "fsync always, $setup")
    [ -n "$extra_csv" ] && args+=(--extra-pids "$extra_csv")
    "$LT_BUILD/gateway-loadtest" "${args[@]}" | tee -a "$OUT"
    r1="$(cpu_ticks "$REDIS_PID")"
    if [ "$engine" = redis ]; then
      calls="$(redis-cli -p "$REDIS_PORT" info commandstats | sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2/p')"
      set -- $calls
      tck="$(getconf CLK_TCK)"
      echo "{\"name\":\"redis-cpu\",\"label\":\"$setup\",\"scenario\":\"$scenario\",\"evalsha_calls\":${1:-0},\"evalsha_usec\":${2:-0},\"redis_cpu_s\":$(echo "($r1 - $r0) / $tck" | bc -l | sed 's/^\./0./'),\"redis_cpu_us_per_event\":$(echo "if (${1:-0} > 0) ($r1 - $r0) / $tck * 1000000 / ${1:-1} else 0" | bc -l | sed 's/^\./0./' | cut -c1-8)}" | tee -a "$OUT"
    fi
  done
  for p in "${NODE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${NODE_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
done
echo "results appended to $OUT" >&2
