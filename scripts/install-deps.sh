#!/usr/bin/env bash
# Installs the system packages the gateway builds and tests against (Debian 12).
# Idempotent: skips apt when everything is already present.
# redis-server, redis-tools and libhiredis-dev are for cluster mode (storage engine redis) and its tests; the
# package's attempt to start a systemd service is harmless where there is no systemd (CI containers).
set -euo pipefail
PKGS=(libwebsockets-dev libwebsockets-evlib-ev libssl-dev pkg-config openssl iproute2 ca-certificates
  redis-server redis-tools libhiredis-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "swift toolchain not found on PATH" >&2; exit 1; }
