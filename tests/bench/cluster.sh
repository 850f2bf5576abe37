#!/usr/bin/env bash
# Scale-out benchmark (BENCHMARKS.md, "Many daemons on PostgreSQL"): throughput of vaulted
# tokenize and detokenize through 1, 2 and 3 `vaultd` processes sharing one PostgreSQL vault,
# next to 1 `vaultd` on SQLite, in the same run, with the same load generator and settings.
#
#   bash tests/bench/cluster.sh                 # starts a throwaway PostgreSQL if needed
#   CONC=32 DUR=10 bash tests/bench/cluster.sh  # callers per run, measured seconds per scenario
#
# Every daemon is a release `vaultd serve --dev` (audit fsync per call, per-call info logs to a
# file), SQLite's data directory and PostgreSQL's cluster on the same disk. Daemons of a fleet
# share one caller registry (copied), so one API key works on all; the load generator spreads
# its connections over them round-robin, so most tokens are detokenized by another daemon than
# the one that made them.
set -euo pipefail
cd "$(dirname "$0")/../.."
conc="${CONC:-16}"
dur="${DUR:-6}"
cargo build --release -q -p vault-daemon --bin vaultd -p vault-tests --bin vault-loadgen
vaultd=target/release/vaultd
loadgen=target/release/vault-loadgen

started_pg=0
if [ -z "${VAULT_TEST_PG_URL:-}" ]; then
    eval "$(bash tests/pg/start.sh)"
    started_pg=1
fi
work=$(mktemp -d /tmp/vault-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "$started_pg" = 1 ]; then bash tests/pg/stop.sh; fi
    rm -rf "$work"
}
trap cleanup EXIT

# start_daemon DIR [SCHEMA]: starts vaultd on 127.0.0.1:0 (PostgreSQL when SCHEMA is given) and
# prints its endpoint; its pid is in DIR/pid (see `started`).
start_daemon() {
    local dir=$1 schema=${2:-}
    mkdir -p "$dir"
    if [ -n "$schema" ]; then
        VAULT_DATABASE_URL="$VAULT_TEST_PG_URL" VAULT_DATABASE_SCHEMA="$schema" \
            "$vaultd" serve --dev --listen 127.0.0.1:0 --data-dir "$dir" \
            >"$dir/stdout" 2>"$dir/vaultd.log" &
    else
        "$vaultd" serve --dev --listen 127.0.0.1:0 --data-dir "$dir" \
            >"$dir/stdout" 2>"$dir/vaultd.log" &
    fi
    # This runs in a command substitution (a subshell): the caller reads the pid from here.
    echo $! >"$dir/pid"
    for _ in $(seq 1 200); do
        if grep -q '^listening on ' "$dir/stdout" 2>/dev/null; then
            echo "http://$(sed -n 's/^listening on //p' "$dir/stdout" | head -n 1)"
            return
        fi
        sleep 0.05
    done
    echo "vaultd in $dir did not start:" >&2
    cat "$dir/vaultd.log" >&2
    exit 1
}

started() { pids+=("$(cat "$1/pid")"); }

stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}

# CPU time (clock ticks) of a process and its reaped children: utime stime cutime cstime.
ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# PostgreSQL's CPU: the postmaster, its reaped backends, and its live ones.
pg_ticks() {
    local pm t
    pm=$(head -n 1 "$VAULT_TEST_PG_DIR/data/postmaster.pid")
    t=$(ticks "$pm")
    for c in $(pgrep -P "$pm"); do t=$((t + $(ticks "$c"))); done
    echo "$t"
}
daemon_ticks() { local t=0; for p in "${pids[@]}"; do t=$((t + $(ticks "$p"))); done; echo "$t"; }

run_load() { # run_load LABEL KEYFILE ENDPOINTS [SCENARIOS]
    echo "== $1" >&2
    local only=${4:-seal-status,tokenize,tokenize-batch,detokenize,detokenize-batch}
    local d0 p0 t0 d1 p1 t1 lg
    d0=$(daemon_ticks); p0=$(pg_ticks); t0=$(date +%s.%N)
    # The load generator runs in a subshell so that its CPU time shows in the subshell's
    # reaped-children counters.
    lg=$(
        "$loadgen" --endpoint "$3" --api-key-file "$2" --concurrency "$conc" --duration "$dur" \
            --rounds 2 --warmup 1 --templates pan_vault --batch 100 --connections 3 \
            --only "$only" >"$work/$1.md"
        awk '{print $16 + $17}' "/proc/$BASHPID/stat"
    )
    d1=$(daemon_ticks); p1=$(pg_ticks); t1=$(date +%s.%N)
    cat "$work/$1.md" >&2
    local hz
    hz=$(getconf CLK_TCK)
    echo "$hz $((d1 - d0)) $((p1 - p0)) $lg" >"$work/$1.ticks"
    python3 - "$1" "$t0" "$t1" "$hz" "$((d1 - d0))" "$((p1 - p0))" "$lg" >>"$work/cpu.txt" <<'PY'
import sys
label, t0, t1, hz, d, p, l = sys.argv[1:]
wall = float(t1) - float(t0)
hz = float(hz)
d, p, l = int(d) / hz, int(p) / hz, int(l) / hz
print(f"| {label} | {wall:.0f} | {d:.0f} | {p:.0f} | {l:.0f} | {(d + p + l) / wall * 100:.0f}% |")
PY
}

# SQLite: one daemon (a SQLite file serves one daemon).
e=$(start_daemon "$work/sqlite")
started "$work/sqlite"
run_load sqlite-1 "$work/sqlite/dev-api-key" "$e"
for sc in tokenize detokenize; do
    run_load "cpu-sqlite-$sc" "$work/sqlite/dev-api-key" "$e" "$sc"
done
stop_all

for n in 1 2 3; do
    schema="bench_${n}_$$"
    endpoints=$(start_daemon "$work/pg$n-0" "$schema")
    started "$work/pg$n-0"
    for i in $(seq 1 $((n - 1))); do
        d="$work/pg$n-$i"
        mkdir -p "$d"
        cp -p "$work/pg$n-0/root.key" "$work/pg$n-0/callers.json" "$work/pg$n-0/callers.key" \
            "$work/pg$n-0/dev-api-key" "$d/"
        endpoints="$endpoints,$(start_daemon "$d" "$schema")"
        started "$d"
    done
    run_load "postgres-$n" "$work/pg$n-0/dev-api-key" "$endpoints"
    if [ "$n" = 1 ]; then
        # CPU per call by component, one scenario at a time (the scaling model in BENCHMARKS.md).
        for sc in tokenize detokenize; do
            run_load "cpu-postgres-$sc" "$work/pg1-0/dev-api-key" "$endpoints" "$sc"
        done
    fi
    stop_all
done

echo
echo "CPU seconds used during each setup's load run (2 cores = 200% at most)"
echo
echo "| setup | wall s | vaultd | PostgreSQL | load generator | busy |"
echo "|---|---|---|---|---|---|"
cat "$work/cpu.txt"

echo
echo "CPU milliseconds per single-item call, by component (one scenario per run)"
echo
echo "| setup | calls | vaultd | PostgreSQL | load generator |"
echo "|---|---|---|---|---|"
python3 - "$work" <<'PY'
import sys
work = sys.argv[1]
for label in ["cpu-sqlite-tokenize", "cpu-postgres-tokenize", "cpu-sqlite-detokenize", "cpu-postgres-detokenize"]:
    calls = 0
    for line in open(f"{work}/{label}.md"):
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if len(c) > 3 and c[0].isdigit():
            calls += int(c[2])
    raw = open(f"{work}/{label}.ticks").read().split()
    hz, d, p, l = (float(x) for x in raw)
    ms = lambda t: f"{t / hz * 1000 / calls:.3f}" if calls else "-"
    print(f"| {label[4:]} | {calls} | {ms(d)} | {ms(p)} | {ms(l)} |")
PY

# Summary: items/s per scenario and setup, and the ratio to one daemon on SQLite.
python3 - "$work" "$conc" "$dur" <<'PY'
import sys
work, conc, dur = sys.argv[1:4]
setups = ["sqlite-1", "postgres-1", "postgres-2", "postgres-3"]
rows = {}
order = []
for s in setups:
    for line in open(f"{work}/{s}.md"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 6 or not cells[0].isdigit():
            continue
        rpc, items = cells[1], float(cells[5])
        if rpc not in rows:
            rows[rpc] = {}
            order.append(rpc)
        rows[rpc][s] = items
print()
print(f"{conc} callers, {dur} s per scenario: items/s (ratio to one daemon on SQLite)")
print()
print("| rpc | SQLite ×1 | PostgreSQL ×1 | PostgreSQL ×2 | PostgreSQL ×3 |")
print("|---|---|---|---|---|")
for rpc in order:
    base = rows[rpc].get("sqlite-1", 0)
    cells = []
    for s in setups:
        v = rows[rpc].get(s, 0)
        cells.append(f"{v:.0f} ({v / base:.2f})" if base else f"{v:.0f}")
    print(f"| {rpc} | " + " | ".join(cells) + " |")
PY
