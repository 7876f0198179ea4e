#!/usr/bin/env bash
# Cluster mode by hand: installs dependencies, builds the release binaries, starts one Redis
# (Config/redis.conf, AOF with appendfsync always) and three gateways a, b, c on it (storage engine redis),
# waits until all are ready, prints their URLs, and runs until Ctrl-C/SIGTERM, which stops the gateways
# (SIGTERM) and then Redis (SIGTERM: it fsyncs the AOF and exits; the data stays).
#   scripts/run-cluster.sh [gateway arguments...]   (the arguments go to each of the three gateways)
# Env: BASE_PORT (default 8081: gateways on BASE_PORT, +1, +2), REDIS_PORT (default 6390).
# Everything lives in ./data/cluster/{redis,node-a,node-b,node-c}, logs in redis/redis.log and node-X/gateway.log.
# Without GATEWAY_AUTH_HS256_SECRET it generates a random development secret once, stores it with mode 0600
# at ./data/cluster/dev-hs256-secret, and prints how to mint a token for it (any gateway accepts it).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_PORT="${BASE_PORT:-8081}"
REDIS_PORT="${REDIS_PORT:-6390}"
NODES=(a b c)
scripts/install-deps.sh
for tool in redis-server redis-cli curl setsid timeout; do
  command -v "$tool" >/dev/null || { echo "$tool not found on PATH" >&2; exit 1; }
done
swift build -c release --product gateway 2>&1 | { grep -v '^\[' || true; } | tail -n 20
swift build -c release --product gatewayctl 2>&1 | { grep -v '^\[' || true; } | tail -n 20
BIN="$(swift build -c release --show-bin-path)"
CLUSTER_DIR=./data/cluster
mkdir -p "$CLUSTER_DIR/redis" "${NODES[@]/#/$CLUSTER_DIR/node-}"
if [ -z "${GATEWAY_AUTH_HS256_SECRET:-}" ]; then
  SECRET_FILE="$CLUSTER_DIR/dev-hs256-secret"
  if [ ! -s "$SECRET_FILE" ]; then
    (umask 077 && openssl rand -hex 32 > "$SECRET_FILE")
  fi
  chmod 600 "$SECRET_FILE"
  GATEWAY_AUTH_HS256_SECRET="$(cat "$SECRET_FILE")"
  export GATEWAY_AUTH_HS256_SECRET
  MINT="GATEWAY_AUTH_HS256_SECRET=\$(cat $SECRET_FILE) $BIN/gatewayctl token mint"
  MINT+=" --role user --sub alice --session demo"
else
  MINT="$BIN/gatewayctl token mint --role user --sub alice --session demo   (GATEWAY_AUTH_HS256_SECRET as set)"
fi

# Children run in their own sessions (setsid), so a Ctrl-C in the terminal reaches only this script, which then
# stops the gateways before Redis (Redis would otherwise shut down on SIGINT while the gateways still use it).
REDIS_PID=""
GATEWAY_PIDS=()
stop_pid() { # pid, name, seconds: SIGTERM, bounded wait, SIGKILL
  local pid="$1" name="$2" limit="$3" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < limit * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name (pid $pid) still running after ${limit}s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  trap - INT TERM EXIT
  local i
  for i in "${!GATEWAY_PIDS[@]}"; do kill -TERM "${GATEWAY_PIDS[$i]}" 2>/dev/null || true; done
  for i in "${!GATEWAY_PIDS[@]}"; do stop_pid "${GATEWAY_PIDS[$i]}" "gateway ${NODES[$i]}" 20; done
  [ -z "$REDIS_PID" ] || stop_pid "$REDIS_PID" redis-server 15
  echo "cluster stopped (data kept in $CLUSTER_DIR)" >&2
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

tail_log() { echo "--- last lines of $1:" >&2; tail -n 30 "$1" >&2 || true; }

if timeout 2 redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo "something already answers on Redis port $REDIS_PORT; stop it or set REDIS_PORT" >&2
  exit 1
fi
REDIS_LOG="$CLUSTER_DIR/redis/redis.log"
setsid redis-server Config/redis.conf --port "$REDIS_PORT" --dir "$CLUSTER_DIR/redis" --daemonize no \
  >>"$REDIS_LOG" 2>&1 </dev/null &
REDIS_PID=$!
for ((i = 0; ; i++)); do
  [ "$(timeout 2 redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
  if ! kill -0 "$REDIS_PID" 2>/dev/null || ((i >= 100)); then
    echo "redis-server did not answer PING on port $REDIS_PORT within 10 s" >&2
    tail_log "$REDIS_LOG"
    exit 1
  fi
  sleep 0.1
done

for i in "${!NODES[@]}"; do
  node="${NODES[$i]}"
  GATEWAY_STORAGE_ENGINE=redis GATEWAY_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" GATEWAY_NODE_ID="$node" \
    GATEWAY_DATA_DIR="$CLUSTER_DIR/node-$node" GATEWAY_LISTEN_PORT="$((BASE_PORT + i))" \
    setsid "$BIN/gateway" --config Config/gateway.json "$@" >>"$CLUSTER_DIR/node-$node/gateway.log" 2>&1 </dev/null &
  GATEWAY_PIDS[$i]=$!
done
for i in "${!NODES[@]}"; do
  node="${NODES[$i]}"
  port="$((BASE_PORT + i))"
  for ((t = 0; ; t++)); do
    curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/readyz" 2>/dev/null && break
    if ! kill -0 "${GATEWAY_PIDS[$i]}" 2>/dev/null || ((t >= 300)); then
      echo "gateway $node did not become ready on port $port within 30 s" >&2
      tail_log "$CLUSTER_DIR/node-$node/gateway.log"
      exit 1
    fi
    sleep 0.1
  done
done

{
  printf '\nCluster mode: %d gateways on one Redis (Ctrl-C stops everything)\n\n' "${#NODES[@]}"
  printf '  %-8s %-32s %s\n' node url log
  for i in "${!NODES[@]}"; do
    printf '  %-8s %-32s %s\n' "${NODES[$i]}" "ws://127.0.0.1:$((BASE_PORT + i))/v1/ws" \
      "$CLUSTER_DIR/node-${NODES[$i]}/gateway.log"
  done
  printf '  %-8s %-32s %s\n\n' redis "redis://127.0.0.1:$REDIS_PORT" "$REDIS_LOG"
  printf 'Mint a token (valid on every node):\n  %s\n\n' "$MINT"
} >&2

# Run until a signal arrives (the traps exit, the EXIT trap stops everything) or a child ends on its own.
status=0
wait -n "$REDIS_PID" "${GATEWAY_PIDS[@]}" || status=$?
for i in "${!NODES[@]}"; do
  if ! kill -0 "${GATEWAY_PIDS[$i]}" 2>/dev/null; then
    echo "gateway ${NODES[$i]} exited" >&2
    tail_log "$CLUSTER_DIR/node-${NODES[$i]}/gateway.log"
  fi
done
kill -0 "$REDIS_PID" 2>/dev/null || { echo "redis-server exited" >&2; tail_log "$REDIS_LOG"; }
exit $((status == 0 ? 1 : status))
