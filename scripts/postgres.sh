#!/usr/bin/env bash
# Local PostgreSQL 15 server for CI and development (e.g. the Optuna storage), without systemd.
# Must run as root.
#   scripts/postgres.sh start   # install Debian `postgresql` if missing, start cluster 15/main
#   scripts/postgres.sh stop    # fast shutdown of the cluster
#   scripts/postgres.sh status  # pg_lsclusters / pg_isready
# Listens on 127.0.0.1:5432; creates role `sesemi` (password `sesemi`) and database
# `sesemi_optuna` owned by it:  postgresql://sesemi:sesemi@127.0.0.1:5432/sesemi_optuna
# `start` is idempotent. Log: /var/log/postgresql/postgresql-15-main.log
set -euo pipefail

PG_VERSION=${PG_VERSION:-15}
PG_CLUSTER=main
PG_HOST=127.0.0.1
PG_PORT=5432
DB_USER=sesemi
DB_PASS=sesemi
DB_NAME=sesemi_optuna
PG_CONF_DIR=/etc/postgresql/$PG_VERSION/$PG_CLUSTER
PG_LOG=/var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log

log() { echo "[postgres] $*" >&2; }

die() {
    log "ERROR: $*"
    if [[ -s $PG_LOG ]]; then
        log "---- last lines of $PG_LOG"
        tail -n 20 "$PG_LOG" >&2 || true
    fi
    exit 1
}

install_packages() {
    if [[ -x /usr/lib/postgresql/$PG_VERSION/bin/postgres ]] && command -v pg_ctlcluster >/dev/null; then
        return 0
    fi
    log "installing postgresql"
    # Keep the maintainer scripts from starting the server themselves: this script does it.
    local policy=/usr/sbin/policy-rc.d added_policy=0 rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        added_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; } || rc=$?
    ((added_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install postgresql failed"
    [[ -x /usr/lib/postgresql/$PG_VERSION/bin/postgres ]] || die "PostgreSQL $PG_VERSION not installed by apt"
}

ensure_cluster() {
    if ! pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c {found = 1} END {exit !found}'; then
        log "creating cluster $PG_VERSION/$PG_CLUSTER"
        pg_createcluster "$PG_VERSION" "$PG_CLUSTER" --port="$PG_PORT" >/dev/null
    fi
    local conf=$PG_CONF_DIR/conf.d/sesemi.conf
    mkdir -p "$PG_CONF_DIR/conf.d"
    printf "# Written by scripts/postgres.sh\nlisten_addresses = '%s'\nport = %s\n" "$PG_HOST" "$PG_PORT" >"$conf.tmp"
    if cmp -s "$conf.tmp" "$conf"; then
        rm -f "$conf.tmp"
    else
        mv "$conf.tmp" "$conf"
        chown postgres:postgres "$conf"
        if pg_running; then
            log "configuration changed: restarting"
            pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" restart -m fast || die "restart failed"
        fi
    fi
}

pg_running() {
    pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c && $4 == "online" {found = 1} END {exit !found}'
}

start_server() {
    install -d -o postgres -g postgres -m 2775 /run/postgresql
    if ! pg_running; then
        log "starting PostgreSQL $PG_VERSION/$PG_CLUSTER on $PG_HOST:$PG_PORT"
        pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start || die "pg_ctlcluster start failed"
    fi
    local deadline=$((SECONDS + 60))
    until pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; do
        ((SECONDS < deadline)) || die "server not accepting connections on $PG_HOST:$PG_PORT"
        sleep 0.5
    done
}

psql_admin() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" "$@"; }

ensure_role_and_db() {
    psql_admin -d postgres <<EOF || die "could not create role $DB_USER"
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
        CREATE ROLE $DB_USER LOGIN PASSWORD '$DB_PASS';
    ELSE
        ALTER ROLE $DB_USER LOGIN PASSWORD '$DB_PASS';
    END IF;
END
\$\$;
EOF
    if [[ -z $(psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") ]]; then
        log "creating database $DB_NAME"
        psql_admin -d postgres -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" || die "could not create database $DB_NAME"
    fi
}

cmd_start() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    local t0=$SECONDS
    install_packages
    ensure_cluster
    start_server
    ensure_role_and_db
    log "ready in $((SECONDS - t0)) s: postgresql://$DB_USER:$DB_PASS@$PG_HOST:$PG_PORT/$DB_NAME"
}

cmd_stop() {
    if command -v pg_ctlcluster >/dev/null && pg_running; then
        log "stopping PostgreSQL $PG_VERSION/$PG_CLUSTER"
        pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop -m fast || die "pg_ctlcluster stop failed"
    fi
    log "stopped"
}

cmd_status() {
    pg_lsclusters || true
    pg_isready -h "$PG_HOST" -p "$PG_PORT" || true
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 {start|stop|status}" >&2
        exit 2
        ;;
esac
