#!/usr/bin/env bash
# Makes a self-signed development certificate (ECDSA P-256: a TLS handshake costs the server far less CPU than
# with RSA-2048, which sets the wss connect rate) for localhost / 127.0.0.1 / ::1 (valid 30 days).
# Usage: scripts/dev-cert.sh [DIR]   (default ./data/tls) -> DIR/dev.crt, DIR/dev.key (0600)
set -euo pipefail
DIR="${1:-./data/tls}"
mkdir -p "$DIR"
(umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
  -keyout "$DIR/dev.key" -out "$DIR/dev.crt" 2>/dev/null)
echo "certificate: $DIR/dev.crt"
echo "key:         $DIR/dev.key"
echo "start with:  GATEWAY_TLS_CERT=$DIR/dev.crt GATEWAY_TLS_KEY=$DIR/dev.key scripts/run-gateway.sh"
