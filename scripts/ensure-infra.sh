#!/usr/bin/env bash
# Make sure the local infrastructure eventshop needs is installed, running on
# loopback and provisioned:
#   RabbitMQ   127.0.0.1:5672  vhost "eventshop" (its users: `eventshop up`), guest for the
#              tests' own vhosts, all feature flags on
#   PostgreSQL 127.0.0.1:5432  role root (superuser, trust), databases eventshop(_test)
#   Redis      127.0.0.1:6379
#   promtool   the suite checks deploy/prometheus/alerts.yml with it (Debian's `prometheus`
#              package; its server is left stopped and disabled)
#   libfaketime `eventshop chaos clock-skew` runs a service with its clock skewed (Debian's
#              `faketime` package)
#
# Idempotent. Silent when everything is already in place; prints one line per
# action it takes. Installing or starting anything needs root (or passwordless
# sudo); it fails with a clear message otherwise.
set -euo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

PG_HOST=127.0.0.1 PG_PORT=5432 PG_ROLE=root
RABBIT_PORT=5672 RABBIT_VHOST=eventshop RABBIT_USER=guest
REDIS_PORT=6379
PG_ETC=/etc/postgresql
DATABASES=(eventshop eventshop_test)

# fd 3 = the script's real stderr, so die() is seen even inside a captured command.
exec 3>&2
say() { printf 'ensure-infra: %s\n' "$*"; }
die() { printf 'ensure-infra: ERROR: %s\n' "$*" >&3; exit 1; }

TMP=$(mktemp -d)
cleanup() {
    # Remove the policy-rc.d we may have put in place to stop apt auto-starting services.
    if [[ -n "${OUR_POLICY_RC:-}" ]]; then rm -f /usr/sbin/policy-rc.d; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

# --- helpers -----------------------------------------------------------------

is_root() { [[ $EUID -eq 0 ]]; }
can_root() { is_root || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; }

# Run a command as root: directly, or through passwordless sudo, else fail clearly.
as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        die "need root to run '$*' (run this script as root or configure passwordless sudo)"
    fi
}

# Run a command with its output captured in $TMP/out (returns its status).
try() { "$@" >"$TMP/out" 2>&1; }
# Run a command quietly; show its output only if it fails.
quiet() {
    local rc=0
    try "$@" || rc=$?
    if ((rc != 0)); then cat "$TMP/out" >&2; fi
    return "$rc"
}

port_open() { timeout 2 bash -c ": <>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

pkg_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

# wait_for <what> <seconds> <command...>: poll (every 0.5 s) until the command succeeds.
wait_for() {
    local what=$1 secs=$2; shift 2
    local start=$SECONDS deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then return 1; fi
        sleep 0.5
    done
    say "$what is up (after $((SECONDS - start)) s)"
}

APT_UPDATED=
apt_install() {
    is_root || die "package(s) $* not installed; installing needs root: run this script as root or 'sudo apt-get install -y $*'"
    command -v apt-get >/dev/null || die "package(s) $* not installed and apt-get is not available"
    # Keep the package's maintainer scripts from auto-starting the service with
    # its default configuration; we configure it first, then start it ourselves.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        OUR_POLICY_RC=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [[ -z "$APT_UPDATED" ]]; then
        say "apt-get update"
        quiet apt-get update || die "apt-get update failed"
        APT_UPDATED=1
    fi
    say "installing $*"
    quiet apt-get install -y --no-install-recommends "$@" \
        || die "apt-get install $* failed"
}

# --- PostgreSQL --------------------------------------------------------------

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

pg_version() {
    local v
    v=$(ls "$PG_ETC" 2>/dev/null | sort -V | tail -n1)
    [[ -n "$v" ]] || v=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n1)
    [[ -n "$v" ]] || die "PostgreSQL is installed but no version found under /usr/lib/postgresql"
    printf '%s\n' "$v"
}

# Configure the cluster like the reference machine: listen on 127.0.0.1:5432,
# trust auth for host connections from 127.0.0.1. Sets PG_CHANGED=1 if it changed
# anything that needs a reload.
PG_TRUST_LINE='host    all             all             127.0.0.1/32            trust'
pg_configure() {
    local v=$1
    local confdir=$PG_ETC/$v/main
    PG_CHANGED=
    if [[ ! -d $confdir ]]; then
        say "creating PostgreSQL $v cluster 'main'"
        quiet as_root pg_createcluster --port "$PG_PORT" "$v" main || die "pg_createcluster failed"
    fi
    local hba=$confdir/pg_hba.conf
    if ! as_root grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        say "adding trust auth for 127.0.0.1 to $hba"
        # First matching rule wins: put ours before the first existing rule.
        as_root sed -i "0,/^[[:space:]]*[^#[:space:]]/s//${PG_TRUST_LINE//\//\\/}\\n&/" "$hba"
        as_root grep -qxF "$PG_TRUST_LINE" "$hba" || printf '%s\n' "$PG_TRUST_LINE" | as_root tee -a "$hba" >/dev/null
        PG_CHANGED=1
    fi
    if ! as_root grep -rqsE "^[[:space:]]*listen_addresses[[:space:]]*=[[:space:]]*'(127\.0\.0\.1|localhost|\*)" \
        "$confdir/postgresql.conf" "$confdir/conf.d"; then
        say "configuring PostgreSQL to listen on $PG_HOST:$PG_PORT"
        as_root mkdir -p "$confdir/conf.d"
        printf "listen_addresses = '%s'\nport = %s\n" "$PG_HOST" "$PG_PORT" \
            | as_root tee "$confdir/conf.d/90-eventshop.conf" >/dev/null
        PG_CHANGED=1
    fi
}

pg_start() {
    local v=$1
    say "starting PostgreSQL $v"
    quiet as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    wait_for "PostgreSQL" 30 pg_ready \
        || die "PostgreSQL did not come up on $PG_HOST:$PG_PORT within 30 s (see /var/log/postgresql/)"
}

pg_sql() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_ROLE" -d postgres -c "$1"; }

# Create role root (superuser) through the postgres OS user (peer auth on the socket).
pg_create_role() {
    say "creating PostgreSQL superuser role '$PG_ROLE'"
    quiet as_root runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres -c \
        "DO \$\$BEGIN
           IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
             CREATE ROLE \"$PG_ROLE\" SUPERUSER LOGIN;
           ELSE
             ALTER ROLE \"$PG_ROLE\" SUPERUSER LOGIN;
           END IF;
         END\$\$;" || die "could not create PostgreSQL role '$PG_ROLE'"
}

ensure_postgres() {
    local v
    if ! pg_ready; then
        local fresh=
        if ! pkg_installed postgresql && ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
            apt_install postgresql
            fresh=1
        fi
        v=$(pg_version)
        if [[ -n $fresh || ! -d $PG_ETC/$v/main ]]; then pg_configure "$v"; fi
        pg_start "$v"
    fi

    local dbs
    if ! dbs=$(pg_sql "SELECT datname FROM pg_database" 2>"$TMP/psql.err"); then
        # Up, but we cannot log in as root with trust auth: fix pg_hba + role.
        v=$(pg_version)
        pg_configure "$v"
        if [[ -n $PG_CHANGED ]]; then
            say "reloading PostgreSQL $v"
            quiet as_root pg_ctlcluster --skip-systemctl-redirect "$v" main reload || die "reload failed"
        fi
        pg_create_role
        dbs=$(pg_sql "SELECT datname FROM pg_database" 2>"$TMP/psql.err") \
            || die "cannot connect as '$PG_ROLE' to $PG_HOST:$PG_PORT: $(cat "$TMP/psql.err")"
    fi

    local db
    for db in "${DATABASES[@]}"; do
        if ! grep -qx "$db" <<<"$dbs"; then
            say "creating PostgreSQL database '$db'"
            # Tolerate a concurrent creator: fine as long as it exists afterwards.
            try pg_sql "CREATE DATABASE \"$db\" OWNER \"$PG_ROLE\"" \
                || [[ "$(pg_sql "SELECT 1 FROM pg_database WHERE datname = '$db'")" == 1 ]] \
                || { cat "$TMP/out" >&2; die "could not create database '$db'"; }
        fi
    done
}

# --- Redis -------------------------------------------------------------------

redis_ready() {
    if command -v redis-cli >/dev/null; then
        [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
    else
        port_open "$REDIS_PORT"
    fi
}

ensure_redis() {
    redis_ready && return 0
    if ! pkg_installed redis-server && ! command -v redis-server >/dev/null; then
        apt_install redis-server
    fi
    say "starting Redis"
    as_root mkdir -p /var/lib/redis /var/log/redis
    quiet as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
        --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    wait_for "Redis" 30 redis_ready \
        || die "Redis did not come up on 127.0.0.1:$REDIS_PORT within 30 s (see /var/log/redis/ci.log)"
}

# --- RabbitMQ ----------------------------------------------------------------

rmqctl() { as_root rabbitmqctl "$@"; }

# Fresh install only: same node name / loopback-only setup as the reference machine
# (rabbit@localhost avoids depending on the hostname resolving).
rabbit_configure() {
    if [[ ! -s /etc/rabbitmq/rabbitmq-env.conf ]] || ! grep -q '^NODENAME=' /etc/rabbitmq/rabbitmq-env.conf; then
        say "configuring RabbitMQ node rabbit@localhost on loopback"
        as_root mkdir -p /etc/rabbitmq
        as_root tee -a /etc/rabbitmq/rabbitmq-env.conf >/dev/null <<'EOF'
NODENAME=rabbit@localhost
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
    fi
    if ! grep -qs '^listeners\.tcp\.' /etc/rabbitmq/rabbitmq.conf; then
        printf 'listeners.tcp.local = 127.0.0.1:%s\n' "$RABBIT_PORT" | as_root tee -a /etc/rabbitmq/rabbitmq.conf >/dev/null
    fi
}

ensure_rabbitmq() {
    if ! port_open "$RABBIT_PORT"; then
        if ! pkg_installed rabbitmq-server && ! command -v rabbitmq-server >/dev/null; then
            apt_install rabbitmq-server
            rabbit_configure
        fi
        if try as_root timeout 15 rabbitmqctl -q ping; then
            # Erlang node alive but the app is stopped (stop_app) or still booting.
            say "starting RabbitMQ app"
            quiet as_root timeout 60 rabbitmqctl start_app || true
        else
            say "starting RabbitMQ"
            quiet as_root rabbitmq-server -detached || true
        fi
        wait_for "RabbitMQ" 60 port_open "$RABBIT_PORT" \
            || die "RabbitMQ did not come up on 127.0.0.1:$RABBIT_PORT within 60 s (see /var/log/rabbitmq/)"
        quiet as_root timeout 30 rabbitmqctl await_startup || die "rabbitmqctl await_startup failed"
    fi

    if ! can_root; then
        # rabbitmqctl needs root (or the rabbitmq user's Erlang cookie).
        say "WARNING: not root: cannot check RabbitMQ vhost '$RABBIT_VHOST' / feature flags, assuming they are set up"
        return 0
    fi

    # Three independent queries, run concurrently (each rabbitmqctl call costs ~0.5 s).
    rmqctl list_users -s >"$TMP/users" 2>"$TMP/users.err" &
    local users_pid=$!
    rmqctl list_vhosts -s name >"$TMP/vhosts" 2>"$TMP/vhosts.err" &
    local vhosts_pid=$!
    rmqctl list_feature_flags -s name state >"$TMP/ff" 2>"$TMP/ff.err" &
    local ff_pid=$!
    local users_rc=0 vhosts_rc=0 ff_rc=0
    wait "$users_pid" || users_rc=$?
    wait "$vhosts_pid" || vhosts_rc=$?
    wait "$ff_pid" || ff_rc=$?
    ((users_rc == 0)) || { cat "$TMP/users.err" >&2; die "rabbitmqctl list_users failed"; }
    ((vhosts_rc == 0)) || { cat "$TMP/vhosts.err" >&2; die "rabbitmqctl list_vhosts failed"; }

    if ((ff_rc != 0)); then
        cat "$TMP/ff.err" >&2
        die "rabbitmqctl list_feature_flags failed"
    fi
    if grep -q $'\tdisabled' "$TMP/ff"; then
        say "enabling RabbitMQ feature flags: $(awk -F'\t' '$2=="disabled"{print $1}' "$TMP/ff" | paste -sd, -)"
        quiet rmqctl enable_feature_flag all || die "rabbitmqctl enable_feature_flag all failed"
    fi

    # guest stays RabbitMQ's loopback-only development user: the tests give it a throwaway
    # vhost each. It has no rights on the platform's vhost: `eventshop up` makes one user per
    # service and an operator's user there, with passwords of this installation.
    if ! cut -f1 "$TMP/users" | grep -qxF "$RABBIT_USER"; then
        say "creating RabbitMQ user '$RABBIT_USER' (for the tests' own vhosts)"
        try rmqctl add_user "$RABBIT_USER" guest || grep -qi 'already exists' "$TMP/out" \
            || { cat "$TMP/out" >&2; die "rabbitmqctl add_user failed"; }
        quiet rmqctl set_user_tags "$RABBIT_USER" administrator || die "rabbitmqctl set_user_tags failed"
    fi
    if ! grep -qxF "$RABBIT_VHOST" "$TMP/vhosts"; then
        say "creating RabbitMQ vhost '$RABBIT_VHOST'"
        try rmqctl add_vhost "$RABBIT_VHOST" || grep -qi 'already exists' "$TMP/out" \
            || { cat "$TMP/out" >&2; die "rabbitmqctl add_vhost failed"; }
    fi
}

# --- promtool ----------------------------------------------------------------

# Only the tool is wanted: apt_install's policy-rc.d keeps the package from starting its server
# (0.0.0.0:9090, scraping nothing of ours), and it is disabled so that a boot does not start it.
ensure_promtool() {
    command -v promtool >/dev/null && return 0
    apt_install prometheus
    command -v promtool >/dev/null || die "the prometheus package is installed but promtool is not on PATH"
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        quiet as_root systemctl disable --now prometheus || true
    elif command -v update-rc.d >/dev/null; then
        quiet as_root update-rc.d prometheus disable || true
    fi
}

# --- libfaketime ---------------------------------------------------------------

ensure_faketime() {
    compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null && return 0
    apt_install faketime
}

# --- main --------------------------------------------------------------------

main() {
    ensure_postgres
    ensure_redis
    ensure_rabbitmq
    ensure_promtool
    ensure_faketime
}

# Sourcing the file (for tests) defines the functions without running anything.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then main "$@"; fi
