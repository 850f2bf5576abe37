#!/usr/bin/env bash
# The official Connect clients for Node (@connectrpc/connect-node, from npm, versions pinned in
# package-lock.json) against `vaultd serve --dev`: the Connect protocol (JSON, binary, HTTP/1.1
# and HTTP/2), gRPC-Web and gRPC (tests/connect-node/test.mjs). Installs the packages with
# `npm ci` when node_modules is missing. The last line is `connect-node: N passed, M failed`.
#
# Usage: tests/connect-node/run.sh     (needs node and npm, and cargo)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../dev-daemon.sh
source "$repo/tests/dev-daemon.sh"

echo "== connect-node: npm ci"
if [ ! -d "$here/node_modules/@connectrpc/connect-node" ]; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
start_dev_daemon

echo "== connect-node: tests"
status=0
log=$tmp/node.log
VAULT_ADDR=$addr VAULT_API_KEY_FILE=$data/dev-api-key \
    node --test --test-reporter=spec "$here/test.mjs" 2>&1 | tee "$log" || status=${PIPESTATUS[0]}
passed=$(grep -Eo '^ℹ pass [0-9]+' "$log" | grep -Eo '[0-9]+' || echo 0)
failed=$(grep -Eo '^ℹ fail [0-9]+' "$log" | grep -Eo '[0-9]+' || echo 1)
stop_dev_daemon || status=1
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1
fi
echo "connect-node: ${passed} passed, ${failed} failed"
exit "$status"
