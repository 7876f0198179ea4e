#!/usr/bin/env bash
# The README's start command: installs dependencies, builds the release binaries and starts the gateway on
# the default configuration (Config/gateway.json: ws://127.0.0.1:8080/v1/ws, data in ./data).
# Without GATEWAY_AUTH_HS256_SECRET it generates a random development secret once, stores it with mode 0600
# at ./data/dev-hs256-secret, and prints how to mint a token for it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product gateway 2>&1 | { grep -v '^\[' || true; } | tail -n 20
swift build -c release --product gatewayctl 2>&1 | { grep -v '^\[' || true; } | tail -n 20
BIN="$(swift build -c release --show-bin-path)"
DATA_DIR="${GATEWAY_DATA_DIR:-./data}"
mkdir -p "$DATA_DIR"
if [ -z "${GATEWAY_AUTH_HS256_SECRET:-}" ]; then
  SECRET_FILE="$DATA_DIR/dev-hs256-secret"
  if [ ! -s "$SECRET_FILE" ]; then
    (umask 077 && openssl rand -hex 32 > "$SECRET_FILE")
  fi
  chmod 600 "$SECRET_FILE"
  GATEWAY_AUTH_HS256_SECRET="$(cat "$SECRET_FILE")"
  export GATEWAY_AUTH_HS256_SECRET
  cat >&2 <<MSG
Development secret: $SECRET_FILE (mode 0600). Mint a token for it with:
  GATEWAY_AUTH_HS256_SECRET=\$(cat $SECRET_FILE) $BIN/gatewayctl token mint --role user --sub alice --session demo
MSG
fi
exec "$BIN/gateway" --config Config/gateway.json "$@"
