#!/usr/bin/env bash
# Build eventshop's one image (deploy/Dockerfile), offline, as `eventshop:<tag>` (default dev).
#
#   scripts/build-image.sh [tag]
#
# 1. Docker: scripts/ensure-docker.sh installs and starts it where it is missing (as root).
# 2. The base: debian:bookworm-slim if it is there or can be pulled; else (no registry reachable,
#    as on these machines) the same Debian 12 made here with debootstrap --variant=minbase and
#    `docker import`ed as eventshop/debian:bookworm (about 25 s, once; said when it happens).
#    EVENTSHOP_BASE_IMAGE names another base.
# 3. The context, var/image/: the wheelhouse of the pinned runtime dependencies, built on the
#    host (`pip wheel`, constrained by requirements.lock; pip inside a container cannot reach
#    an index here) and eventshop's own wheel. The wheelhouse is rebuilt only when
#    requirements.lock or pyproject.toml change, so a code change rebuilds one wheel and the
#    image's last layer.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TAG=${1:-dev}
IMAGE=eventshop:$TAG
LOCAL_BASE=eventshop/debian:bookworm
CONTEXT=var/image
PY=.venv/bin/python

say() { printf 'build-image: %s\n' "$*"; }
die() { printf 'build-image: ERROR: %s\n' "$*" >&2; exit 1; }

scripts/ensure-docker.sh

base=${EVENTSHOP_BASE_IMAGE:-debian:bookworm-slim}
if ! docker image inspect "$base" >/dev/null 2>&1 && ! timeout 30 docker pull -q "$base" >/dev/null 2>&1; then
    if [[ -n ${EVENTSHOP_BASE_IMAGE:-} ]]; then
        die "base image $base is neither here nor pullable"
    fi
    if ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
        say "no registry answers: making $LOCAL_BASE with debootstrap (Debian 12, minbase)"
        command -v debootstrap >/dev/null || {
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
        }
        rootfs=$(mktemp -d /var/tmp/eventshop-rootfs.XXXXXX)
        trap 'rm -rf "$rootfs"' EXIT
        debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null \
            || die "debootstrap failed"
        # the image's apt reads the same mirror; no caches, no docs
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -c . | docker import - "$LOCAL_BASE" >/dev/null
        rm -rf "$rootfs"
        trap - EXIT
    fi
    base=$LOCAL_BASE
fi

# the wheelhouse: runtime dependencies only, pinned; kept while its inputs are unchanged
inputs=$(cat requirements.lock pyproject.toml "$0" | sha256sum | cut -c1-16)
if [[ ! -f $CONTEXT/wheels/.inputs || $(cat "$CONTEXT/wheels/.inputs") != "$inputs" ]]; then
    say "building the wheelhouse (requirements.lock)"
    rm -rf "$CONTEXT/wheels"
    mkdir -p "$CONTEXT/wheels"
    # + what the image's Python (Debian's 3.11.2) needs beside the host's: redis asks for
    # async-timeout below 3.11.3
    "$PY" -m pip wheel -q --wheel-dir "$CONTEXT/wheels" --constraint requirements.lock . \
        "async-timeout>=4.0.3" || die "pip wheel failed"
    rm -f "$CONTEXT"/wheels/eventshop-*.whl
    printf '%s' "$inputs" >"$CONTEXT/wheels/.inputs"
fi
rm -rf "$CONTEXT/app"
mkdir -p "$CONTEXT/app"
"$PY" -m pip wheel -q --no-deps --wheel-dir "$CONTEXT/app" . || die "pip wheel (eventshop) failed"

docker build -q -f deploy/Dockerfile --build-arg "BASE=$base" -t "$IMAGE" "$CONTEXT" >/dev/null \
    || die "docker build failed"
say "$IMAGE built on $base ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
