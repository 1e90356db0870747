#!/usr/bin/env bash
# Runs the whole suite: unit tests (no privileges) then integration tests (root, own namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t unit < <(find dist/src dist/bench -name '*.test.js' | sort)
mapfile -t integ < <(find dist/test -name '*.test.js' | sort)
status=0
node --test --test-concurrency=2 "${unit[@]}" || status=1
# Integration tests share the kernel; run them one file at a time.
node --test --test-concurrency=1 "${integ[@]}" || status=1
exit $status
