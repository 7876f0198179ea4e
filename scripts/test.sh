#!/usr/bin/env bash
# The README's test command: installs dependencies, builds everything, runs every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests 2>&1 | { grep -v '^\[' || true; } | tail -n 50
swift test --skip-build --parallel 2>&1 | tail -n 200
