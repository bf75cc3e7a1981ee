#!/usr/bin/env bash
# Make sure .venv (Python 3.11) exists at the repo root and has the project
# installed (editable, with the dev extras). Reinstalls only when pyproject.toml
# (or requirements.lock, if present) changed since the last successful install;
# the hash of those inputs is kept in .venv/.installed-hash.
# Silent when nothing needs doing; prints one line per action it takes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

VENV=.venv
HASH_FILE=$VENV/.installed-hash
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

say() { printf 'ensure-venv: %s\n' "$*"; }
die() { printf 'ensure-venv: ERROR: %s\n' "$*" >&2; exit 1; }

# Serialise concurrent runs (e.g. make -j) on the repo directory itself.
if command -v flock >/dev/null; then
    exec 9<"$ROOT"
    flock 9
fi

# apt-get install, output shown only on failure.
apt_install() {
    local log
    log=$(mktemp)
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq "$@"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "apt-get install $* failed"
    fi
    rm -f "$log"
}

is_py311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; }

find_python() {
    local c
    for c in ${PYTHON:-} python3.11 python3 /usr/bin/python3.11 /usr/bin/python3; do
        if command -v "$c" >/dev/null 2>&1 && is_py311 "$c"; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

create_venv() {
    local py out
    py=$(find_python) || {
        if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
            say "no python3.11 found: installing python3 python3-venv"
            apt_install python3 python3-venv
            py=$(find_python) || die "python3.11 still not found after installing python3"
        else
            die "python3.11 not found (set PYTHON=/path/to/python3.11)"
        fi
    }
    say "creating $VENV with $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))"
    rm -rf "$VENV"
    if ! out=$("$py" -m venv "$VENV" 2>&1); then
        rm -rf "$VENV"
        # Debian splits ensurepip/venv out into python3-venv.
        if grep -qiE 'ensurepip|python3(\.[0-9]+)?-venv' <<<"$out"; then
            [[ $EUID -eq 0 ]] || die "creating the venv needs the Debian package python3-venv: sudo apt-get install -y python3-venv"
            say "installing python3-venv (ensurepip is missing)"
            local pkgs=(python3-venv)
            local ver
            ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
            # Versioned package too, when the interpreter is a Debian one.
            if apt-cache show "python$ver-venv" >/dev/null 2>&1; then pkgs+=("python$ver-venv"); fi
            apt_install "${pkgs[@]}"
            out=$("$py" -m venv "$VENV" 2>&1) || { rm -rf "$VENV"; printf '%s\n' "$out" >&2; die "python -m venv failed"; }
        else
            printf '%s\n' "$out" >&2
            die "python -m venv failed"
        fi
    fi
}

# A venv is usable if its interpreter runs and pip is there (an interrupted or
# ensurepip-less creation leaves a venv without pip).
if [[ ! -x $VENV/bin/python || ! -e $VENV/bin/pip ]] || ! is_py311 "$VENV/bin/python"; then
    create_venv
fi

inputs=(pyproject.toml)
[[ -f requirements.lock ]] && inputs+=(requirements.lock)
want=$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)
have=$(cat "$HASH_FILE" 2>/dev/null || true)

if [[ "$want" != "$have" ]]; then
    rm -f "$HASH_FILE"
    if [[ -f requirements.lock ]]; then
        say "installing requirements.lock + project (editable) into $VENV"
        "$VENV/bin/pip" install -q -r requirements.lock
        "$VENV/bin/pip" install -q --no-deps -e .
    else
        say "installing project (editable, [dev]) into $VENV"
        "$VENV/bin/pip" install -q -e '.[dev]'
    fi
    printf '%s\n' "$want" >"$HASH_FILE"
fi
