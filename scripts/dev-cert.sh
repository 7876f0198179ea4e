#!/usr/bin/env bash
# Makes a self-signed development certificate for localhost / 127.0.0.1 / ::1 (valid 30 days).
# Usage: scripts/dev-cert.sh [DIR]   (default ./data/tls) -> DIR/dev.crt, DIR/dev.key (0600)
set -euo pipefail
DIR="${1:-./data/tls}"
mkdir -p "$DIR"
(umask 077 && openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
  -keyout "$DIR/dev.key" -out "$DIR/dev.crt" 2>/dev/null)
echo "certificate: $DIR/dev.crt"
echo "key:         $DIR/dev.key"
echo "start with:  GATEWAY_TLS_CERT=$DIR/dev.crt GATEWAY_TLS_KEY=$DIR/dev.key scripts/run-gateway.sh"
