#!/usr/bin/env bash
# Check a built bundle: packaging/smoke_test.sh DIST_DIR   (DIST_DIR holds slimscope/, as build.sh makes it)
#
# Runs the bundle as a clean machine would: an empty environment (no venv, no PYTHONPATH, a fresh HOME and
# temporary folder) and an empty working folder, offscreen. Checks that
#   1. `slimscope --version` answers;
#   2. `slimscope --smoke-test` opens the window on the bundled demo model, and the first comparison
#      numbers arrive from the worker process (multiprocessing spawn children of the frozen app);
#   3. `slimscope inspect DEMO` prints the demo's layer table (the command line in the bundle).
# Exits 0 when all pass; each failure prints its output.
set -uo pipefail
dist="$(cd "${1:?usage: smoke_test.sh DIST_DIR}" && pwd)"
app="$dist/slimscope/slimscope"
demo="$dist/slimscope/_internal/slimscope/resources/demo/digits_net.onnx"
[ -x "$app" ] || { echo "smoke_test.sh: no executable at $app (build it with packaging/build.sh)" >&2; exit 2; }

scratch="$(mktemp -d "${TMPDIR:-/tmp}/slimscope-smoke.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/home" "$scratch/tmp" "$scratch/cwd"
passed=0
failed=0

# check NAME TIMEOUT_S EXPECTED_TEXT COMMAND...: run COMMAND in the clean environment, pass when it exits 0
# within the timeout and its output contains EXPECTED_TEXT.
check() {
  local name="$1" limit="$2" expected="$3" started=$SECONDS status
  shift 3
  (cd "$scratch/cwd" && env -i PATH=/usr/bin:/bin HOME="$scratch/home" TMPDIR="$scratch/tmp" LANG=C.UTF-8 \
    QT_QPA_PLATFORM=offscreen timeout --kill-after=10 "$limit" "$@") >"$scratch/out" 2>&1
  status=$?
  if [ "$status" -eq 0 ] && grep -qF -- "$expected" "$scratch/out"; then
    passed=$((passed + 1))
    echo "ok    $name ($((SECONDS - started)) s)"
  else
    failed=$((failed + 1))
    echo "FAIL  $name (exit code $status after $((SECONDS - started)) s; expected output containing '$expected'):"
    sed 's/^/      /' "$scratch/out" | grep -v "does not support propagateSizeHints" | tail -40
  fi
}

check "slimscope --version" 60 "slimscope " "$app" --version
check "the window opens the demo model and compares it" 300 "smoke test: OK" "$app" --smoke-test --timeout 240
check "slimscope inspect on the demo model" 120 "17 layers" "$app" inspect "$demo"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
