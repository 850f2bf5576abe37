# Sourced by the client suites (tests/python/run.sh, tests/connect-node/run.sh): builds `vaultd`
# and starts `vaultd serve --dev` on 127.0.0.1:0 in a temporary data directory, stopped on exit.
#
#   source tests/dev-daemon.sh; start_dev_daemon    # sets addr, data, tmp; daemon_pid
#   ...; stop_dev_daemon                            # non-zero if vaultd did not stop cleanly
#
# Environment given to vaultd is the caller's (VAULT_HTTP_READ_TIMEOUT_MS, VAULT_METRICS_LISTEN).
dev_repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d)
daemon_pid=
dev_daemon_cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap dev_daemon_cleanup EXIT

start_dev_daemon() {
    echo "== building vaultd"
    (cd "$dev_repo" && cargo build --locked -p vault-daemon --bin vaultd)
    local target=${CARGO_TARGET_DIR:-$dev_repo/target}
    echo "== starting vaultd serve --dev"
    data=$tmp/data
    mkfifo "$tmp/out"
    VAULT_LOG=${VAULT_LOG:-warn} "$target/debug/vaultd" serve --dev --data-dir "$data" \
        --listen 127.0.0.1:0 >"$tmp/out" 2>"$tmp/vaultd.log" &
    daemon_pid=$!
    # The first stdout line is `listening on <addr>`; the rest is drained so vaultd never blocks.
    exec 3<"$tmp/out"
    local first
    if ! IFS= read -r -t 60 first <&3; then
        echo "vaultd did not start; its log:" >&2
        cat "$tmp/vaultd.log" >&2
        exit 1
    fi
    cat <&3 >/dev/null &
    addr=${first#listening on }
    if [ "$addr" = "$first" ]; then
        echo "unexpected first line from vaultd: $first" >&2
        exit 1
    fi
    echo "vaultd listening on $addr"
}

stop_dev_daemon() {
    kill -TERM "$daemon_pid"
    local ok=0
    if ! wait "$daemon_pid"; then
        echo "vaultd did not stop cleanly; its log:" >&2
        cat "$tmp/vaultd.log" >&2
        ok=1
    fi
    daemon_pid=
    return "$ok"
}
