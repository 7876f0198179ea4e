#!/usr/bin/env bash
# The README's test command: installs dependencies, builds everything, runs every test suite:
# the Swift suites (unit, integration, process, fault, soak short profile), the Autobahn conformance run,
# 60 s of fuzzing per target, and the client libraries' tests (JS, Python, headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests 2>&1 | { grep -v '^\[' || true; } | tail -n 50
# The cluster tests run on their own below (they start Redis and several gateways; beside the other suites they
# would starve the timing-sensitive ones on a 2-core machine).
swift test --skip-build --skip ClusterTests 2>&1 | tee swift-test.log | tail -n 120
swift_passed="$(sed -n 's/.*Test run with \([0-9]*\) tests\{0,1\} in .* passed.*/\1/p' swift-test.log | tail -n1)"

# Cluster mode (docs/scaling.md). First the cluster tests proper (three nodes, kill -9 of nodes and of Redis, CLIENT
# KILL of the subscribers); they start their own redis-server on ephemeral loopback ports.
swift test --skip-build --filter ClusterTests 2>&1 | tee swift-test-cluster.log | tail -n 30
cluster_passed="$(sed -n 's/.*Test run with \([0-9]*\) tests\{0,1\} in .* passed.*/\1/p' swift-test-cluster.log | tail -n1)"
[ -n "$cluster_passed" ] || { echo "cluster tests failed"; echo "0 passed, 1 failed"; exit 1; }
# Then the v1 contract suite (and the session rules, the HTTP API, the v1.1 frames and token streams) again, every gateway under test on a real Redis
# (Config/redis.conf, an ephemeral loopback port, a key prefix per gateway).
redis_dir="$(mktemp -d)"
redis_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server Config/redis.conf --port "$redis_port" --dir "$redis_dir" --bind 127.0.0.1 > "$redis_dir/redis.log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true; rm -rf "$redis_dir"' EXIT
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
SAMOKODER_TEST_REDIS_URL="redis://127.0.0.1:$redis_port" swift test --skip-build --filter 'ContractTests|SessionRulesTests|HTTPAPITests|ProtocolV11Tests/|TokenStreamTests/' 2>&1 \
  | tee swift-test-redis.log | tail -n 30
redis_passed="$(sed -n 's/.*Test run with \([0-9]*\) tests\{0,1\} in .* passed.*/\1/p' swift-test-redis.log | tail -n1)"
[ -n "$redis_passed" ] || { echo "cluster-mode contract pass failed"; echo "0 passed, 1 failed"; exit 1; }
kill "$redis_pid" 2>/dev/null || true

# WebSocket conformance: Autobahn sections 1-10 against the diagnostic echo endpoint (docs/conformance.md).
# Cases 2.10/2.11 (several pings in a row) are a documented libwebsockets behaviour: it keeps one pending pong and
# drops a ping that arrives meanwhile, which RFC 6455 permits; whether 2.11 trips depends on timing. Any other
# FAILED case fails the run.
autobahn=0
if scripts/autobahn.sh ws > autobahn.log 2>&1; then
  autobahn=1
else
  failing="$(sed -n 's/.*failing cases ([0-9]*): //p' autobahn.log | tail -n1)"
  if [ -n "$failing" ] && [ -z "$(echo "$failing" | tr ' ' '\n' | grep -Ev '^(2\.10|2\.11)$' || true)" ]; then
    autobahn=1
  fi
fi
grep -E "agent|behavior|failing" autobahn.log || tail -n 20 autobahn.log
[ "$autobahn" = 1 ] || { echo "Autobahn: unexpected failures"; echo "0 passed, 1 failed"; exit 1; }

# Fuzzing (libFuzzer + ASan): the frame decoder and the log reader, 60 s each (docs/reliability.md).
scripts/fuzz.sh 60 2>&1 | tail -n 12

clients_passed=0
if [ -x clients/run-tests.sh ]; then
  GATEWAY_BIN="$(swift build --show-bin-path)/gateway" clients/run-tests.sh 2>&1 | tee clients-test.log | tail -n 60
  clients_passed="$(sed -n 's/^clients: \([0-9]*\) passed, 0 failed.*/\1/p' clients-test.log | tail -n1)"
fi
echo "tests: $(( ${swift_passed:-0} + ${cluster_passed:-0} + ${redis_passed:-0} + 2 + ${clients_passed:-0} )) passed, 0 failed"
