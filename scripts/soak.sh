#!/usr/bin/env bash
# Load, soak, slow-consumer and crash-under-load tests (Tests/GatewayIntegrationTests/SoakTests.swift) against the
# real gateway binary as a child process.
#   scripts/soak.sh            short profile (what CI runs inside `swift test`; about 80 s for the three tests)
#   scripts/soak.sh long [N]   GATEWAY_SOAK=1: 1,000 connections / 100 sessions / 200 events/s for N minutes
#                              (default 30), slow consumer for 5 minutes, kill -9 every 30 s x 10; against a
#                              release build of the gateway (the debug build restarts slower: 2.3 s vs 1.6 s at the 10th kill)
# Env: SCRATCH (default .build-soak), FILTER (default SoakTests; e.g. SoakTests/slowConsumer),
#      GATEWAY_SOAK_BINARY (the gateway to test; default: the debug build, or in `long` a release build).
# Results are printed per test; copy them into docs/reliability.md ("Load and soak").
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-short}"
scratch="${SCRATCH:-.build-soak}"
if [ "$profile" = long ]; then
    export GATEWAY_SOAK=1
    export GATEWAY_SOAK_MINUTES="${2:-30}"
    if [ -z "${GATEWAY_SOAK_BINARY:-}" ]; then
        swift build -c release --product gateway --scratch-path "$scratch-rel" 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\]' || true
        export GATEWAY_SOAK_BINARY="$PWD/$scratch-rel/release/gateway"
    fi
fi
# Many client sockets in the test process (and the gateway inherits the limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
swift build --build-tests --scratch-path "$scratch" 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\]' || true
echo "soak.sh: profile=$profile load=$(cut -d' ' -f1-3 /proc/loadavg) cores=$(nproc)"
swift test --skip-build --scratch-path "$scratch" --filter "${FILTER:-SoakTests}" 2>&1 \
    | grep -Ev '^\[[0-9]+/[0-9]+\]|^↳ ///' 
