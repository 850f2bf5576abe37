#!/usr/bin/env bash
# Generates the Python client of vault.v1 (messages and gRPC stubs) from the same .proto files
# as the Rust crate, with grpcio-tools. The output is not committed.
#
# Usage: proto/python/generate.sh OUT_DIR
# Needs: pip install grpcio grpcio-tools   (grpcio-tools bundles protoc and the well-known types)
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
out=$1
# The crate directory (proto/) is the include root, so imports read "vault/v1/common.proto".
crate_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

mkdir -p "$out"
python3 -m grpc_tools.protoc \
    -I "$crate_dir" \
    --python_out="$out" \
    --pyi_out="$out" \
    --grpc_python_out="$out" \
    "$crate_dir"/vault/v1/*.proto
echo "generated vault.v1 Python modules in $out/vault/v1/"
