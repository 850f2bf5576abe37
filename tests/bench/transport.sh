#!/usr/bin/env bash
# The transport side by side (BENCHMARKS.md, "Transport: tonic's server against our own"):
# the same load generator, in the same run, against two release `vaultd serve --dev` binaries:
# BASE, built from a git revision whose daemon serves on tonic's `Server` (default 0235de4, the
# commit before the change), and HEAD, this checkout (`server/listen.rs`: hyper and
# tokio-rustls directly). The rpcs are the ones the change touches and nothing else: the
# unaudited Health/Check (transport only), Admin/GetSealStatus (the whole request path, an audit
# event) and FPE Tokenize `pan` (the path plus FF1); data directories on tmpfs, so the figures
# are CPU, not fsync. Rounds alternate BASE, HEAD, BASE, HEAD.
#
#   bash tests/bench/transport.sh                # ~15 minutes of builds the first time
#   BASE=<rev> CONC=1,8,32 DUR=4 ROUNDS=2 bash tests/bench/transport.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
base_rev="${BASE:-0235de4}"
conc="${CONC:-1,8,32}"
dur="${DUR:-4}"
rounds="${ROUNDS:-2}"
work=$(mktemp -d /tmp/vault-transport.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    git worktree remove --force "$work/base" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== building HEAD and BASE ($base_rev) release vaultd" >&2
cargo build --release -q --locked -p vault-daemon --bin vaultd -p vault-tests --bin vault-loadgen
git worktree add -q --detach "$work/base" "$base_rev"
base_target="${BASE_TARGET_DIR:-target/bench-base}"
(cd "$work/base" && CARGO_TARGET_DIR="$OLDPWD/$base_target" cargo build --release -q --locked \
    -p vault-daemon --bin vaultd)
declare -A bin=([HEAD]=target/release/vaultd [BASE]="$base_target/release/vaultd")

# start NAME: vaultd serve --dev on a free port, data on tmpfs; prints its endpoint.
start() {
    local name=$1 dir
    dir=$(mktemp -d /dev/shm/vault-transport-"$name".XXXXXX)
    VAULT_LOG=info "${bin[$name]}" serve --dev --listen 127.0.0.1:0 --data-dir "$dir" \
        >"$dir/stdout" 2>"$dir/vaultd.log" &
    echo $! >"$dir/pid"
    for _ in $(seq 1 200); do
        if grep -q '^listening on ' "$dir/stdout" 2>/dev/null; then
            echo "$dir http://$(sed -n 's/^listening on //p' "$dir/stdout" | head -n 1)"
            return
        fi
        sleep 0.05
    done
    cat "$dir/vaultd.log" >&2
    return 1
}

for round in $(seq 1 "$rounds"); do
    for name in BASE HEAD; do
        read -r dir endpoint < <(start "$name")
        pids+=("$(cat "$dir/pid")")
        echo "== round $round: $name (${bin[$name]})"
        target/release/vault-loadgen --endpoint "$endpoint" --api-key-file "$dir/dev-api-key" \
            --concurrency "$conc" --duration "$dur" --rounds 1 --warmup 1 \
            --only check,seal-status,tokenize --templates pan
        kill "$(cat "$dir/pid")"
        wait "$(cat "$dir/pid")" 2>/dev/null || true
        rm -rf "$dir"
    done
done
