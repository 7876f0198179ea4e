#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (sections 1-10; 12-13 need permessage-deflate, which is off)
# against the gateway's diagnostic echo endpoint (/v1/echo, enabled only here with GATEWAY_DIAG_ECHO=1).
# Usage: scripts/autobahn.sh [ws|wss]     Reports: ./autobahn-reports/ (gitignored). Exit 1 on FAILED cases.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-ws}"
SHARED="$(cd .. && pwd)/shared"
BIN="${GATEWAY_BIN:-$(swift build --show-bin-path)/gateway}"
[ -x "$BIN" ] || swift build --product gateway
WORK="$(mktemp -d)"
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
export GATEWAY_AUTH_HS256_SECRET="$(openssl rand -hex 32)"
export GATEWAY_DIAG_ECHO=1 GATEWAY_LISTEN_HOST=127.0.0.1 GATEWAY_LISTEN_PORT=0 GATEWAY_DATA_DIR="$WORK/data"
export GATEWAY_FSYNC=never GATEWAY_LOG_LEVEL=warning
# Section 9 sends messages of up to 16 MiB.
export GATEWAY_LIMITS_MAX_MESSAGE_BYTES=$((20 * 1024 * 1024)) GATEWAY_LIMITS_OUTBOUND_BUFFER_BYTES=$((64 * 1024 * 1024))
SCHEME=ws
if [ "$MODE" = wss ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
  export GATEWAY_TLS_CERT="$WORK/cert.pem" GATEWAY_TLS_KEY="$WORK/key.pem"
  SCHEME=wss
fi
"$BIN" > "$WORK/out.log" 2> "$WORK/err.log" &
PID=$!
PORT=""
for _ in $(seq 1 100); do
  PORT="$(sed -n 's/.* port=\([0-9]*\).*/\1/p' "$WORK/out.log" | head -n1)"
  [ -n "$PORT" ] && break
  sleep 0.1
done
[ -n "$PORT" ] || { echo "gateway did not start:" >&2; cat "$WORK/err.log" >&2; exit 2; }
AB_AGENT="gateway-$MODE" AB_EXCLUDE="${AB_EXCLUDE:-12.*,13.*}" AB_TIMEOUT="${AB_TIMEOUT:-900}" \
  "$SHARED/tools/autobahn/run.sh" "$SCHEME://127.0.0.1:$PORT/v1/echo"
