# Sourced by compare.sh and crosscheck.sh: start and stop one server by name, always by PID, on 127.0.0.1.
#   gateway-never | gateway-always      the gateway (release build in $LT_BUILD), fsync never/always, fresh data dir
#   gateway-never-tls | gateway-always-tls   the same with a TLS listener (wss, port $GATEWAY_TLS_PORT or 18443) and a
#                                       throwaway self-signed certificate (scripts/dev-cert.sh into a temp dir)
#   lws-batch | lws | lws-ev | node | python | hummingbird   reference relays from ../shared/peers (built by build.sh)
# Sets SPID (server pid), SPORT (port), STARGET (gateway|room), STLS (true: speak wss to it), SNOTE. Logs go to $LT_LOGS.
LT_ROOT="${LT_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
LT_BUILD="${LT_BUILD:-$LT_ROOT/.build-lt/release}"
PEERS_DIR="${PEERS_DIR:-$LT_ROOT/../shared/peers}"
PEERS_BUILD="${PEERS_BUILD:-$LT_ROOT/.peers-build}"
LT_LOGS="${LT_LOGS:-${TMPDIR:-/tmp}/loadtest-logs}"
mkdir -p "$LT_LOGS"
# A benchmark-only secret (never a real one): the tool mints its tokens from it.
export GATEWAY_AUTH_HS256_SECRET="${GATEWAY_AUTH_HS256_SECRET:-loadtest-only-secret-0123456789abcdef0123456789}"
SPID=""; SDATA=""; SCERT=""; STLS=false

start_server() {
  local name="$1" cmd=() tlsenv=() fsync
  STARGET=room; SNOTE=""; STLS=false
  case "$name" in
    gateway-never|gateway-always|gateway-never-tls|gateway-always-tls)
      fsync=${name#gateway-}; fsync=${fsync%-tls}
      STARGET=gateway; SPORT=${GATEWAY_PORT:-18080}; SNOTE="fsync $fsync"
      if [[ "$name" == *-tls ]]; then
        STLS=true; SPORT=${GATEWAY_TLS_PORT:-18443}; SNOTE="$SNOTE, wss"
        SCERT=$(mktemp -d "${TMPDIR:-/tmp}/lt-gw-cert.XXXXXX")
        bash "$LT_ROOT/scripts/dev-cert.sh" "$SCERT" >/dev/null \
          || { rm -rf "$SCERT"; SCERT=""; echo "dev-cert.sh failed" >&2; return 1; }
        tlsenv=(GATEWAY_TLS_CERT="$SCERT/dev.crt" GATEWAY_TLS_KEY="$SCERT/dev.key")
      fi
      SDATA=$(mktemp -d "${TMPDIR:-/tmp}/lt-gw-data.XXXXXX")
      cmd=(env GATEWAY_FSYNC="$fsync" GATEWAY_LISTEN_HOST=127.0.0.1 GATEWAY_LISTEN_PORT="$SPORT"
           GATEWAY_DATA_DIR="$SDATA" GATEWAY_LOG_LEVEL=warning GATEWAY_RATE_LIMITS_ROLES_USER_RATE_PER_SECOND=0
           ${tlsenv[@]+"${tlsenv[@]}"} "$LT_BUILD/gateway" --config "$LT_ROOT/Config/gateway.json") ;;
    node)        SPORT=19001; cmd=(env NODE_PATH=/usr/share/nodejs node "$PEERS_DIR/servers/node-ws-room.js" $SPORT) ;;
    python)      SPORT=19002; cmd=(python3 "$PEERS_DIR/servers/py-websockets-room.py" $SPORT) ;;
    hummingbird) SPORT=19004; cmd=("$PEERS_BUILD/hb-room" $SPORT) ;;
    lws)         SPORT=19005; cmd=("$PEERS_BUILD/lws-room" $SPORT) ;;
    lws-ev)      SPORT=19007; cmd=(env LWS_EVLIB=ev "$PEERS_BUILD/lws-room" $SPORT) ;;
    lws-batch)   SPORT=19009; cmd=(env LWS_EVLIB=ev LWS_ROOM_BATCH=1 "$PEERS_BUILD/lws-room" $SPORT) ;;
    *) echo "unknown server $name" >&2; return 2 ;;
  esac
  if (exec 3<>/dev/tcp/127.0.0.1/$SPORT) 2>/dev/null; then
    echo "port $SPORT is already in use: not measuring someone else's server" >&2; return 1
  fi
  (cd "$LT_ROOT" && exec "${cmd[@]}") >"$LT_LOGS/server-$name.log" 2>&1 &
  SPID=$!
  for _ in $(seq 150); do
    (exec 3<>/dev/tcp/127.0.0.1/$SPORT) 2>/dev/null && break
    kill -0 "$SPID" 2>/dev/null || { echo "server $name died: $(tail -3 "$LT_LOGS/server-$name.log")" >&2; SPID=""; return 1; }
    sleep 0.1
  done
  # env/cd wrappers exec, so $! is the server itself. (The probe above is a bare TCP connect: a TLS gateway logs
  # "adopting an accepted socket failed" for it once.)
  sleep "${SETTLE_S:-1}"
  kill -0 "$SPID" 2>/dev/null || { echo "server $name exited: $(tail -3 "$LT_LOGS/server-$name.log")" >&2; SPID=""; return 1; }
}

stop_server() {
  [[ -z "${SPID:-}" ]] && return 0
  kill "$SPID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
  SPID=""
  [[ -n "${SDATA:-}" ]] && rm -rf "$SDATA"
  [[ -n "${SCERT:-}" ]] && rm -rf "$SCERT"
  SDATA=""; SCERT=""
}

# Waits (at most QUIET_WAIT_S, default 60 s) until the machine's busy % over 1 s is at most QUIET_PCT (default 15):
# other engineers' builds on these 2 cores skew every number. Prints the busy % it settled at.
busy_pct() {
  read -r _ a b c d e f g h _ < /proc/stat; local t0=$((a+b+c+d+e+f+g+h)) i0=$((d+e))
  sleep 1
  read -r _ a b c d e f g h _ < /proc/stat; local t1=$((a+b+c+d+e+f+g+h)) i1=$((d+e))
  echo $(( ( (t1-t0) - (i1-i0) ) * 100 / (t1-t0) ))
}
wait_quiet() {
  local waited=0 bg; bg=$(busy_pct)
  while (( bg > ${QUIET_PCT:-15} && waited < ${QUIET_WAIT_S:-60} )); do sleep 2; waited=$((waited+3)); bg=$(busy_pct); done
  echo "$bg"
}
