#!/usr/bin/env bash
# Stops the cluster tests/pg/start.sh started and removes its directory.
set -euo pipefail
dir="${VAULT_TEST_PG_DIR:?run tests/pg/start.sh first}"
bin="${VAULT_TEST_PG_BIN:?run tests/pg/start.sh first}"
as_owner=()
if [ "$(id -u)" -eq 0 ]; then as_owner=(runuser -u postgres --); fi
"${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
rm -rf "$dir"
