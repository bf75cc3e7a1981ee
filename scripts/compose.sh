#!/usr/bin/env bash
# The platform in containers (deploy/docker-compose.yml).
#
#   scripts/compose.sh up      Docker (installed and started where missing), the images, the
#                              passwords (var/compose/.env, 0600), then up, and wait until the
#                              gateway answers ready on 127.0.0.1:18000
#   scripts/compose.sh demo    the shopping demo through that gateway, invariants included
#   scripts/compose.sh ops status | dlq list | trace <id> | ...   an operator's command on the
#                              containers (trace reads the spans every service writes into the
#                              `traces` volume)
#   scripts/compose.sh scale inventory=3 [...]   that many containers of a service (competing
#                              consumers of its one queue), the others left as they are
#   scripts/compose.sh down    stop and remove the containers (KEEP_VOLUMES=1 keeps the data)
#   scripts/compose.sh <docker-compose arguments...>   anything else, on the same project
#
# Where Docker cannot run, ensure-docker.sh says why in one line and this exits non-zero.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PROJECT=${EVENTSHOP_COMPOSE_PROJECT:-eventshop}
ENV_FILE=var/compose/.env
GATEWAY_PORT=${EVENTSHOP_GATEWAY_PORT:-18000}

say() { printf 'compose: %s\n' "$*"; }
die() { printf 'compose: ERROR: %s\n' "$*" >&2; exit 1; }
compose() { docker-compose -p "$PROJECT" --env-file "$ENV_FILE" -f deploy/docker-compose.yml "$@"; }

infra_images() {
    local base=debian:bookworm-slim
    docker image inspect "$base" >/dev/null 2>&1 || base=eventshop/debian:bookworm
    for image in rabbitmq postgres redis prometheus; do
        docker build -q --build-arg "BASE=$base" -t "eventshop/$image:dev" "deploy/images/$image" \
            >/dev/null || die "building eventshop/$image failed"
    done
}

wait_ready() {
    local deadline=$((SECONDS + ${1:-240}))
    until curl -fsS "http://127.0.0.1:$GATEWAY_PORT/health/ready?scope=platform" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { compose ps >&2; die "the platform was not ready in time"; }
        sleep 2
    done
}

case ${1:-up} in
up)
    scripts/ensure-docker.sh
    command -v docker-compose >/dev/null || die "docker-compose is missing"
    scripts/build-image.sh dev
    infra_images
    .venv/bin/eventshop compose-env --output "$ENV_FILE"
    compose up -d --remove-orphans
    wait_ready 300
    say "ready: API http://127.0.0.1:$GATEWAY_PORT/api/v1, RabbitMQ UI http://127.0.0.1:${EVENTSHOP_RABBITMQ_UI_PORT:-15673}, Prometheus http://127.0.0.1:${EVENTSHOP_PROMETHEUS_PORT:-19090}, mail http://127.0.0.1:${EVENTSHOP_MAILBOX_PORT:-18026}"
    ;;
ops)
    # an operator's command (eventshop status, dlq ...) inside the compose network, as the
    # operator's broker user and the database's superuser: neither is published to the host
    pg=$(grep '^EVENTSHOP_POSTGRES_PASSWORD=' "$ENV_FILE" | cut -d= -f2-)
    op=$(grep '^EVENTSHOP_OPERATOR_AMQP_PASSWORD=' "$ENV_FILE" | cut -d= -f2-)
    urls=$(.venv/bin/python -c 'import json; from eventshop.services import PORTS; print(json.dumps({n: f"http://{n}:{p}" for n, p in PORTS.items()}))')
    # the values go through docker-compose's environment (`-e NAME`), never its command line,
    # which every user of the host can read
    EVENTSHOP_SERVICE_URLS=$urls \
        EVENTSHOP_DATABASE_URL="postgresql://postgres:$pg@postgres:5432/eventshop" \
        EVENTSHOP_AMQP_URL="amqp://eventshop-operator:$op@rabbitmq:5672/eventshop" \
        EVENTSHOP_TRACE_DIR=/home/eventshop/traces \
        compose run --rm --no-deps -T -e EVENTSHOP_SERVICE_URLS -e EVENTSHOP_DATABASE_URL \
        -e EVENTSHOP_AMQP_URL -e EVENTSHOP_TRACE_DIR provision eventshop "${@:2}"
    ;;
demo)
    wait_ready 30
    # inside the compose network: the demo checks its invariants in PostgreSQL, not published
    pg=$(grep '^EVENTSHOP_POSTGRES_PASSWORD=' "$ENV_FILE" | cut -d= -f2-)
    op=$(grep '^EVENTSHOP_OPERATOR_AMQP_PASSWORD=' "$ENV_FILE" | cut -d= -f2-)
    EVENTSHOP_API=http://gateway:8000/api/v1 \
        EVENTSHOP_DATABASE_URL="postgresql://postgres:$pg@postgres:5432/eventshop" \
        EVENTSHOP_AMQP_URL="amqp://eventshop-operator:$op@rabbitmq:5672/eventshop" \
        compose run --rm --no-deps -e EVENTSHOP_API -e EVENTSHOP_DATABASE_URL -e EVENTSHOP_AMQP_URL \
        provision eventshop demo --no-start "${@:2}"
    ;;
scale)
    shift
    (($#)) || die "scale what? e.g. scale inventory=3"
    args=()
    for wanted in "$@"; do args+=(--scale "$wanted"); done
    compose up -d --no-recreate "${args[@]}"
    wait_ready 120
    ;;
down)
    flags=(--remove-orphans)
    [[ ${KEEP_VOLUMES:-0} == 1 ]] || flags+=(-v)
    # Docker may still be releasing the last endpoints of the network: try again shortly
    for attempt in 1 2 3 4 5; do
        compose down "${flags[@]}" 2>/dev/null && exit 0
        ((attempt < 5)) && sleep 2
    done
    # Docker 20.10 sometimes keeps a dead endpoint on the network after a container restart;
    # the network then outlives the project, harmlessly: what matters is that nothing runs
    left=$(docker ps -a -q --filter "label=com.docker.compose.project=$PROJECT")
    [[ -z $left ]] || { compose down "${flags[@]}"; exit 1; }
    if [[ ${KEEP_VOLUMES:-0} != 1 ]]; then  # compose stopped at the network, before these
        docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT" \
            | xargs -r docker volume rm >/dev/null
    fi
    say "containers and volumes removed; Docker kept the network ${PROJECT}_default (a stale endpoint)"
    ;;
*)
    compose "$@"
    ;;
esac
