#!/usr/bin/env bash
# Make sure the Node.js tools the tests use are installed: the official AsyncAPI parser
# (tools/asyncapi, pinned by its package-lock.json). Installs Debian's nodejs and npm when
# node is missing (as root); runs `npm ci` only when the lock file changed since the last
# successful install (its hash is kept in tools/asyncapi/node_modules/.installed-hash).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOL=$ROOT/tools/asyncapi
HASH_FILE=$TOOL/node_modules/.installed-hash

say() { printf 'ensure-node-tools: %s\n' "$*"; }
die() { printf 'ensure-node-tools: ERROR: %s\n' "$*" >&2; exit 1; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null || die "node and npm are needed (apt-get install nodejs npm)"
    say "installing nodejs and npm"
    log=$(mktemp)
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; } >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"; die "apt-get install nodejs npm failed"
    fi
    rm -f "$log"
fi

want=$(sha256sum "$TOOL/package-lock.json" | cut -d' ' -f1)
have=$(cat "$HASH_FILE" 2>/dev/null || true)
if [[ "$want" != "$have" ]]; then
    say "installing the AsyncAPI parser (npm ci in tools/asyncapi)"
    (cd "$TOOL" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    printf '%s\n' "$want" >"$HASH_FILE"
fi
