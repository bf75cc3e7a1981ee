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

# A dockerd killed with -9 (the end of a session, a crashed host) leaves its pid files behind, and
# a new dockerd refuses to start beside them: remove each one whose process is gone (or whose
# number now belongs to another program).
for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile" 2>/dev/null || true)
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    if [[ -z $pid || ( $comm != dockerd && $comm != containerd ) ]]; then
        say "removing stale $pidfile"
        rm -f "$pidfile"
    fi
done

say "starting dockerd"
mkdir -p /var/log
nohup dockerd >/var/log/eventshop-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && exit 0
    kill -0 $! 2>/dev/null || die "dockerd exited: $(tail -n 1 /var/log/eventshop-dockerd.log)"
    sleep 0.5
done
die "dockerd did not answer within 30 s: $(tail -n 1 /var/log/eventshop-dockerd.log)"
