#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the PostgreSQL tests and prints the variables that
# point the tests at it:
#
#   eval "$(bash tests/pg/start.sh)"     # sets VAULT_TEST_PG_URL, _DIR, _BIN (and _CA: TLS)
#   cargo test --workspace
#   bash tests/pg/stop.sh                # stops it and removes its directory
#
# The cluster lives under a temporary directory, listens on a free loopback port only (and a
# Unix socket in that directory), uses password (SCRAM) authentication with a random password,
# and keeps fsync and synchronous_commit on (the store refuses to run without them). PostgreSQL
# is installed from the distribution's packages when no server binaries are found.
set -euo pipefail

find_bin() {
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
        return
    fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$d" ] && [ -x "$d/pg_ctl" ]; then
        echo "$d"
    fi
}

bin=$(find_bin)
if [ -z "$bin" ]; then
    echo "tests/pg/start.sh: installing PostgreSQL from the distribution's packages" >&2
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        postgresql >&2
    bin=$(find_bin)
fi
if [ -z "$bin" ]; then
    echo "tests/pg/start.sh: no PostgreSQL server binaries found" >&2
    exit 1
fi

dir=$(mktemp -d /tmp/vault-pg.XXXXXX)
chmod 0755 "$dir"
# initdb refuses to run as root: run the cluster as the packages' postgres user then.
as_owner=()
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$dir"
    as_owner=(runuser -u postgres --)
fi
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=' )
printf '%s\n' "$password" >"$dir/pwfile"
chmod 0600 "$dir/pwfile"
[ "$(id -u)" -eq 0 ] && chown postgres "$dir/pwfile"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

"${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U vault --auth=scram-sha-256 \
    --pwfile="$dir/pwfile" -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
rm -f "$dir/pwfile"
# In the cluster's own configuration, so that a plain `pg_ctl start` (the durability test's
# restart after an immediate shutdown) brings it back the same.
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
fsync = on
synchronous_commit = on
shared_buffers = 128MB
CONF
# TLS for the store's `sslmode=require` test: a throwaway CA and a server certificate for
# 127.0.0.1/localhost (skipped, and the TLS test says so, where openssl is missing).
ca=""
if command -v openssl >/dev/null 2>&1; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=vault-test-ca -keyout "$dir/ca.key" -out "$dir/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
        >/dev/null 2>&1
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout "$dir/data/server.key" -out "$dir/server.csr" >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' \
        >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/data/server.crt" \
        >/dev/null 2>&1
    chmod 0600 "$dir/data/server.key"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir/data/server.key" "$dir/data/server.crt"; fi
    rm -f "$dir/ca.key" "$dir/server.csr"
    echo "ssl = on" >>"$dir/data/postgresql.conf"
    ca="$dir/ca.pem"
fi
"${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >&2 \
    || { cat "$dir/server.log" >&2; exit 1; }

# The tests give each store its own schema in the `postgres` database.
echo "export VAULT_TEST_PG_URL='postgres://vault:${password}@127.0.0.1:${port}/postgres'"
echo "export VAULT_TEST_PG_DIR='$dir'"
echo "export VAULT_TEST_PG_BIN='$bin'"
if [ -n "$ca" ]; then echo "export VAULT_TEST_PG_CA='$ca'"; fi
