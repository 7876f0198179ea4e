#!/usr/bin/env bash
# Client tests against the real gateway: JavaScript (node --test), Python (pytest) and browser (Chromium).
#
#   clients/run-tests.sh            install what is missing, build the gateway, run everything
#
# Environment:
#   GATEWAY_BIN           gateway binary to test (default: build it with `swift build --product gateway`)
#   GATEWAY_SCRATCH_PATH  swift build scratch path used when GATEWAY_BIN is unset (default: .build)
#   CLIENTS_SKIP_INSTALL  set to 1 to skip apt-get/pip
#   TEST_ARTIFACTS        where screenshots go (default: test-artifacts/)
#
# Prints one summary line `N passed, M failed[, K skipped]` at the end; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PYTHONDONTWRITEBYTECODE=1
export NODE_PATH=/usr/share/nodejs${NODE_PATH:+:$NODE_PATH}
export TEST_ARTIFACTS=${TEST_ARTIFACTS:-$ROOT/test-artifacts}
PY=${PYTHON:-python3}
LOGDIR=$(mktemp -d /tmp/clients-tests.XXXXXX)
trap 'rm -rf "$LOGDIR"' EXIT

say() { printf '== %s\n' "$*"; }

# ---- install ------------------------------------------------------------------------------------------------
install_deps() {
  local missing=() pkg
  for pkg in nodejs node-ws chromium chromium-driver openssl; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ! "$PY" -m pip --version >/dev/null 2>&1; then missing+=(python3-pip); fi
  if ((${#missing[@]})); then
    say "apt-get install ${missing[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >"$LOGDIR/apt.log" 2>&1; then
      tail -n 20 "$LOGDIR/apt.log"
      say "warning: apt-get failed; tests needing these packages will fail or skip"
    fi
  fi
  if ! "$PY" - <<'EOF' 2>/dev/null
import jwt, pytest, selenium, websockets
assert int(websockets.__version__.split(".")[0]) >= 13
EOF
  then
    say "pip install websockets pytest pyjwt selenium"
    "$PY" -m pip install -q --disable-pip-version-check 'websockets>=13' pytest pyjwt 'selenium>=4.11' 2>&1 | grep -v 'Running pip as' | tail -n 5
  fi
}
if [[ "${CLIENTS_SKIP_INSTALL:-0}" != 1 ]]; then install_deps; fi

# ---- gateway ------------------------------------------------------------------------------------------------
if [[ -z "${GATEWAY_BIN:-}" ]]; then
  SCRATCH=${GATEWAY_SCRATCH_PATH:-.build}
  say "swift build --product gateway --scratch-path $SCRATCH"
  if ! timeout 1800 swift build --product gateway --scratch-path "$SCRATCH" >"$LOGDIR/build.log" 2>&1; then
    grep -E 'error|warning: unre' "$LOGDIR/build.log" | head -n 30
    tail -n 5 "$LOGDIR/build.log"
    echo "clients: 0 passed, 1 failed"
    exit 1
  fi
  export GATEWAY_BIN=$ROOT/$SCRATCH/debug/gateway
fi
export GATEWAY_BIN
if [[ ! -x "$GATEWAY_BIN" ]]; then
  echo "gateway binary not found: $GATEWAY_BIN"
  echo "clients: 0 passed, 1 failed"
  exit 1
fi

# ---- run ----------------------------------------------------------------------------------------------------
PASSED=0
FAILED=0
SKIPPED=0
START=$SECONDS

# node's TAP totals: "# pass N", "# fail N", "# cancelled N", "# skipped N".
run_js() {
  say "JavaScript: node --test clients/js-tests/"
  local out=$LOGDIR/js.tap rc
  timeout 240 node --test --test-reporter=tap clients/js-tests/ >"$out" 2>&1
  rc=$?
  grep -E '^ *(not )?ok [0-9]+ - |^# (tests|pass|fail|cancelled|skipped|duration_ms) ' "$out" || true
  local p f c s
  p=$(awk '/^# pass /{print $3}' "$out" | tail -n1)
  f=$(awk '/^# fail /{print $3}' "$out" | tail -n1)
  c=$(awk '/^# cancelled /{print $3}' "$out" | tail -n1)
  s=$(awk '/^# skipped /{print $3}' "$out" | tail -n1)
  p=${p:-0} f=${f:-0} c=${c:-0} s=${s:-0}
  if ((rc != 0 && f + c == 0)); then
    f=1
    tail -n 30 "$out"
  fi
  if ((f + c > 0)); then grep -B2 -A30 'not ok' "$out" | head -n 120; fi
  PASSED=$((PASSED + p)) FAILED=$((FAILED + f + c)) SKIPPED=$((SKIPPED + s))
}

# pytest's last line: "3 passed, 1 failed, 2 skipped, 1 error in 4.2s".
run_pytest() {
  local name=$1 dir=$2 out=$LOGDIR/$1.log rc
  say "$name: pytest $dir"
  timeout 240 "$PY" -m pytest "$dir" -q -rs -p no:cacheprovider >"$out" 2>&1
  rc=$?
  local summary p f e s
  summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error|errors)' "$out" | tail -n1)
  p=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+')
  f=$(grep -oE '[0-9]+ failed' <<<"$summary" | grep -oE '[0-9]+')
  e=$(grep -oE '[0-9]+ errors?' <<<"$summary" | grep -oE '[0-9]+')
  s=$(grep -oE '[0-9]+ skipped' <<<"$summary" | grep -oE '[0-9]+')
  p=${p:-0} f=${f:-0} e=${e:-0} s=${s:-0}
  if ((rc != 0 && f + e == 0)); then e=1; fi
  if ((rc != 0)); then tail -n 80 "$out"; else grep -E '^SKIPPED' "$out" || true; echo "$summary"; fi
  PASSED=$((PASSED + p)) FAILED=$((FAILED + f + e)) SKIPPED=$((SKIPPED + s))
}

run_js
run_pytest python clients/python/tests
run_pytest browser clients/browser-tests

say "client tests took $((SECONDS - START)) s; screenshots in $TEST_ARTIFACTS"
echo "clients: $PASSED passed, $FAILED failed, $SKIPPED skipped"
((FAILED == 0))
