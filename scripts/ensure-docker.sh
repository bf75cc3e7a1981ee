#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io and docker-compose where they
# are missing, start dockerd where it is not running (both as root). Silent when nothing needs
# doing. Where Docker cannot run here, one line says why, and the exit status is non-zero.
set -euo pipefail

say() { printf 'ensure-docker: %s\n' "$*"; }
die() { printf 'ensure-docker: cannot run Docker here: %s\n' "$*" >&2; exit 1; }

docker info >/dev/null 2>&1 && exit 0

[[ $(id -u) -eq 0 ]] || die "not root (dockerd and apt-get need root)"
if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null; then
    say "installing docker.io and docker-compose (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -qq docker.io docker-compose >/dev/null 2>&1; } \
        || die "apt-get install docker.io docker-compose failed"
fi
[[ -d /sys/fs/cgroup ]] || die "no cgroups mounted"

say "starting dockerd"
mkdir -p /var/log
nohup dockerd >/var/log/eventshop-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && exit 0
    kill -0 $! 2>/dev/null || die "dockerd exited: $(tail -n 1 /var/log/eventshop-dockerd.log)"
    sleep 0.5
done
die "dockerd did not answer within 30 s: $(tail -n 1 /var/log/eventshop-dockerd.log)"
