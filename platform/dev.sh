#!/usr/bin/env bash
# The platform on a developer's machine, or in CI, from a fresh clone.
#
#   platform/dev.sh run     web :$WEB_PORT (8000) + worker + beat in this terminal; Ctrl-C stops
#                           them all, and so does any one of them exiting (then `run` fails)
#   platform/dev.sh test    lint, types, boundaries, the API contract (openapi/), the migration lint
#                           (squawk) and the test
#                           suite against real services
#   platform/dev.sh pytest  the test suite alone (pytest arguments pass through)
#   platform/dev.sh setup   install, start services, create roles and database, migrate
#   platform/dev.sh stop    stop the PostgreSQL and Redis this script started (none other)
#   platform/dev.sh citus   the TaskFlow API suite, the isolation state machine and a fan-out
#                           against a Citus coordinator and two workers on local ports
#                           ($CITUS_PORT, +1, +2; own data folders); needs an installed Citus
#                           extension (README, "Citus"); pytest arguments pass through
#   platform/dev.sh citus-start / citus-stop  start / stop that Citus cluster alone
#
# PostgreSQL and Redis at DATABASE_URL / REDIS_URL are used when they answer; otherwise they are
# started from Debian's binaries (installed with apt-get when missing) into .data/ of this checkout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DATA="$ROOT/.data"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
mkdir -p "$DATA"

export DJANGO_SETTINGS_MODULE=control_plane.settings
DB_NAME=${DB_NAME:-taskflow}
DB_HOST=${DB_HOST:-127.0.0.1}
DB_PORT=${DB_PORT:-5432}
OWNER_ROLE=${OWNER_ROLE:-taskflow_owner}
OWNER_PASSWORD=${OWNER_PASSWORD:-taskflow_owner}
APP_ROLE=${APP_ROLE:-taskflow_app}
APP_PASSWORD=${APP_PASSWORD:-taskflow_app}
REDIS_PORT=${REDIS_PORT:-6379}
TEST_PROCESSES=${TEST_PROCESSES:-2}  # xdist workers of `test` (tests/parallel.py)
export WEB_PORT=${WEB_PORT:-8000}

# shellcheck source=platform/supervise.sh
source "$ROOT/platform/supervise.sh"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  command -v apt-get >/dev/null || die "$* missing and no apt-get to install it"
  log "installing $* (Debian packages)"
  # Another checkout's dev.sh (or apt itself) may hold dpkg's lock: wait for it, not fail.
  # DPkg::Lock::Timeout covers dpkg's lock but not `update`'s lists lock, so dev.sh runs of
  # several checkouts also take turns through a lock file of their own.
  as_root flock -w 900 /var/lock/taskflow-dev-apt sh -c '
    apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
  ' apt_install "$@"
}

# --- Python environment ------------------------------------------------------------------------
ensure_venv() {
  local stamp="$VENV/.installed" want
  want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
  command -v python3.11 >/dev/null || die "Python 3.11 is required (python3.11 not on PATH)"
  [ -x "$PY" ] || { log "creating $VENV"; python3.11 -m venv "$VENV"; }
  log "installing dependencies (pinned by constraints.txt)"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -c constraints.txt -e ".[dev]"
  echo "$want" >"$stamp"
}

# --- PostgreSQL ------------------------------------------------------------------------------
pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  if [ -z "$dir" ]; then apt_install postgresql; dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1); fi
  echo "$dir"
}

pg_answers() { pg_isready -q -h "$DB_HOST" -p "$DB_PORT" 2>/dev/null; }

# Superuser used only to create roles and databases. A cluster we start ourselves is owned by
# 'postgres' with trust auth on 127.0.0.1; an existing one is reached as PGSUPERUSER.
PGSUPERUSER=${PGSUPERUSER:-postgres}

# As root the server runs as 'postgres', which must be able to reach its data folder; when the
# checkout is private to root (a mktemp clone, say), the folder moves under /var/tmp.
pg_data_dir() {
  local dir="$DATA/pg"
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$DATA"; then
    dir="/var/tmp/taskflow-pg-$(printf '%s' "$ROOT" | sha1sum | cut -c1-10)"
  fi
  echo "$dir"
}

ensure_postgres() {
  command -v pg_isready >/dev/null || apt_install postgresql-client
  if pg_answers; then return; fi
  local bin pgdata run_as=()
  bin=$(pg_bin)
  pgdata=$(pg_data_dir)
  [ "$(id -u)" = 0 ] && run_as=(runuser -u postgres --)
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    log "initialising a PostgreSQL cluster in $pgdata"
    mkdir -p "$pgdata"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$pgdata"
    (cd / && "${run_as[@]}" "$bin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 >/dev/null)
  fi
  log "starting PostgreSQL on $DB_HOST:$DB_PORT from $pgdata"
  (cd / && "${run_as[@]}" "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w \
    -o "-h $DB_HOST -p $DB_PORT -k /tmp -c max_connections=300" start >/dev/null)
  pg_answers || die "PostgreSQL did not start; see $pgdata/server.log"
}

psql_super() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -h "$DB_HOST" -p "$DB_PORT" -U "$PGSUPERUSER" "$@"; }

ensure_roles_and_database() {
  local db=$1
  psql_super -d postgres -v owner_role="$OWNER_ROLE" -v owner_password="$OWNER_PASSWORD" \
    -v app_role="$APP_ROLE" -v app_password="$APP_PASSWORD" -v db_name="$db" \
    -f platform/postgres/init.sql >/dev/null
}

drop_database() {
  psql_super -d postgres -c "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null
}

# --- Redis -----------------------------------------------------------------------------------
redis_answers() { "$PY" - "$REDIS_URL" <<'PY' 2>/dev/null
import sys, redis
redis.Redis.from_url(sys.argv[1], socket_connect_timeout=1).ping()
PY
}

ensure_redis() {
  if redis_answers; then return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting Redis on 127.0.0.1:$REDIS_PORT (data in $DATA/redis)"
  mkdir -p "$DATA/redis"
  # Append-only file in $DATA/redis: a restart keeps queued job messages.
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly yes \
    --appendfsync everysec \
    --dir "$DATA/redis" --logfile "$DATA/redis/redis.log" --pidfile "$DATA/redis/redis.pid"
  for _ in $(seq 50); do redis_answers && return; sleep 0.1; done
  die "Redis did not start; see $DATA/redis/redis.log"
}

# --- Browser (tests only): Debian's Chromium, driven by Playwright; never a downloaded browser ---
ensure_chromium() {
  [ -x /usr/bin/chromium ] || apt_install chromium
}

# --- openapi-diff (tests only): the API contract's breaking-change gate, pinned, from npm -------
OPENAPI_DIFF_VERSION=0.24.1
TOOLS="$DATA/tools"

ensure_openapi_diff() {
  command -v npm >/dev/null || apt_install nodejs npm
  if grep -qs "\"version\": \"$OPENAPI_DIFF_VERSION\"" "$TOOLS/node_modules/openapi-diff/package.json"; then
    return
  fi
  log "installing openapi-diff $OPENAPI_DIFF_VERSION (npm) into $TOOLS"
  mkdir -p "$TOOLS"
  npm install --prefix "$TOOLS" --no-audit --no-fund --save-exact --loglevel=error \
    "openapi-diff@$OPENAPI_DIFF_VERSION" >/dev/null
}

# --- PgBouncer (tests only): the isolation tests run through real transaction pooling ----------
ensure_pgbouncer() {
  command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || apt_install pgbouncer
}

# --- Commands --------------------------------------------------------------------------------
use_database() {
  DB_NAME=$1
  export DATABASE_URL="postgres://$APP_ROLE:$APP_PASSWORD@$DB_HOST:$DB_PORT/$DB_NAME"
  export MIGRATION_DATABASE_URL="postgres://$OWNER_ROLE:$OWNER_PASSWORD@$DB_HOST:$DB_PORT/$DB_NAME"
}

prepare() {
  ensure_venv
  ensure_postgres
  ensure_redis
  ensure_roles_and_database "$DB_NAME"
}

use_run_environment() {
  use_database "${DB_NAME}"
  export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/0}
}

cmd_setup() {
  use_run_environment
  prepare
  local password_file="$DATA/admin_password"
  [ -s "$password_file" ] || "$PY" -c "import secrets; print(secrets.token_urlsafe(12))" >"$password_file"
  "$PY" manage.py setup_platform --demo --admin-password="$(cat "$password_file")"
}

web_answers() { "$PY" - "http://127.0.0.1:$WEB_PORT/healthz" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1)
PY
}

cmd_run() {
  local logins
  use_run_environment  # here, not only in the subshell below: the processes need it too
  # The admin login and the demo token are printed once the processes are up, below their banners.
  logins=$(cmd_setup)
  grep -v -e '^admin:' -e '^demo tenant:' <<<"$logins" || true
  trap supervise_stop EXIT
  supervise_start web "$PY" manage.py runserver "0.0.0.0:$WEB_PORT" --noreload
  supervise_start worker "$VENV/bin/celery" -A control_plane worker -Q default,migrations,imports \
    -c 2 -l info -n "worker@%h"
  supervise_start beat "$VENV/bin/celery" -A control_plane beat -l info -s "$DATA/celerybeat-schedule"
  for _ in $(seq 240); do
    supervise_running || break
    if web_answers; then
      sleep 1  # the worker's and beat's banners, if they are slower than the web
      log "web http://localhost:$WEB_PORT  demo tenant http://demo.localhost:$WEB_PORT  (Ctrl-C stops all)"
      grep -e '^admin:' -e '^demo tenant:' <<<"$logins" || true
      break
    fi
    sleep 0.5
  done
  supervise
}

# Only what this script started: a cluster running from its data directory, a Redis server
# whose working directory is its .data/redis. Services that were already there are left alone.
cmd_stop() {
  local pgdata bin run_as=()
  pgdata=$(pg_data_dir)
  [ "$(id -u)" = 0 ] && run_as=(runuser -u postgres --)
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  if [ -n "$bin" ] && [ -f "$pgdata/PG_VERSION" ] \
    && (cd / && "${run_as[@]}" "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1); then
    log "stopping PostgreSQL from $pgdata"
    (cd / && "${run_as[@]}" "$bin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null)
  else
    log "no PostgreSQL of ours running (from $pgdata)"
  fi
  # Redis runs in its --dir: the pid file's process counts only if that is ours.
  local pid
  pid=$(cat "$DATA/redis/redis.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$(realpath "$DATA/redis")" ]; then
    log "stopping Redis (pid $pid, data in $DATA/redis)"
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  else
    log "no Redis of ours running (from $DATA/redis)"
  fi
  rm -f "$DATA/redis/redis.pid"
}

use_test_environment() {
  use_database "${TEST_DB_NAME:-taskflow_test}"
  export REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT/15}
  export DJANGO_ENV=test
  ensure_venv
  ensure_postgres
  ensure_redis
  ensure_chromium
  ensure_pgbouncer
  ensure_openapi_diff
}

fresh_database() {
  log "database $DB_NAME (fresh)"
  drop_database "$DB_NAME"
  ensure_roles_and_database "$DB_NAME"
  "$PY" manage.py setup_platform >/dev/null
}

run_pytest() {
  fresh_database
  log "pytest"
  "$PY" -m pytest "$@"
}

cmd_test() {
  use_test_environment
  log "ruff";          "$VENV/bin/ruff" check .
  "$VENV/bin/ruff" format --check .
  log "mypy";          "$VENV/bin/mypy" .
  log "import-linter"; "$VENV/bin/lint-imports"
  log "API contract";  "$PY" manage.py api_contract --check
  fresh_database  # the migration lint's sqlmigrate needs a database to connect to
  log "squawk (migrations)"; "$PY" -m migrations_sqla.lint
  # Whole files over TEST_PROCESSES xdist workers, each on a platform of its own (tests/parallel.py),
  # in the order they are collected (xdist would start the largest files first).
  log "pytest ($TEST_PROCESSES processes)"
  "$PY" -m pytest -p tests.parallel -n "$TEST_PROCESSES" --dist loadfile --no-loadscope-reorder "$@"
}

# --- Citus (on demand, never the default): a coordinator and two workers on local ports -------
# Uses a Citus extension already installed for the local PostgreSQL (README, "Citus"); this
# script never builds one. Each node has its own data folder; the shared cluster is not touched.
CITUS_PORT=${CITUS_PORT:-9700}
CITUS_NODES=3  # the coordinator, then two workers

citus_data_dir() {
  local dir="$DATA/citus"
  if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$DATA"; then
    dir="/var/tmp/taskflow-citus-$(printf '%s' "$ROOT" | sha1sum | cut -c1-10)"
  fi
  echo "$dir"
}

ensure_citus_cluster() {
  local bin base port i options run_as=()
  bin=$(pg_bin)
  [ -f "$("$bin/pg_config" --pkglibdir)/citus.so" ] \
    || die "no Citus extension installed for $("$bin/postgres" --version); see README, \"Citus\""
  base=$(citus_data_dir)
  [ "$(id -u)" = 0 ] && run_as=(runuser -u postgres --)
  for i in $(seq 0 $((CITUS_NODES - 1))); do
    port=$((CITUS_PORT + i))
    if pg_isready -q -h 127.0.0.1 -p "$port" 2>/dev/null; then continue; fi
    if [ ! -f "$base/node$i/PG_VERSION" ]; then
      log "initialising Citus node $i in $base/node$i"
      mkdir -p "$base/node$i"
      [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$base"
      (cd / && "${run_as[@]}" "$bin/initdb" -D "$base/node$i" -U postgres --auth=trust -E UTF8 >/dev/null)
    fi
    log "starting Citus node $i on 127.0.0.1:$port"
    # SET LOCAL of app.* settings reaches the workers only with propagate_set_commands = local;
    # two-phase commit and logical replication (citus_schema_move) need the other two.
    options="-h 127.0.0.1 -p $port -k /tmp -c max_connections=300"
    options+=" -c shared_preload_libraries=citus -c citus.propagate_set_commands=local"
    options+=" -c max_prepared_transactions=200 -c wal_level=logical"
    (cd / && "${run_as[@]}" "$bin/pg_ctl" -D "$base/node$i" -l "$base/node$i/server.log" -w \
      -o "$options" start >/dev/null)
  done
}

# A fresh database on every node (roles made on every node too: a role made while connected to
# `postgres` never reaches the workers), the extension in each, the workers added.
fresh_citus_database() {
  local port i
  log "database $DB_NAME (fresh) on the Citus coordinator and its workers"
  for i in $(seq 0 $((CITUS_NODES - 1))); do
    port=$((CITUS_PORT + i))
    DB_PORT=$port drop_database "$DB_NAME"
    DB_PORT=$port ensure_roles_and_database "$DB_NAME"
    DB_PORT=$port psql_super -d "$DB_NAME" -c "CREATE EXTENSION IF NOT EXISTS citus" >/dev/null
  done
  psql_super -d "$DB_NAME" -c "SELECT citus_set_coordinator_host('127.0.0.1', $CITUS_PORT)" >/dev/null
  for i in $(seq 1 $((CITUS_NODES - 1))); do
    psql_super -d "$DB_NAME" -c "SELECT citus_add_node('127.0.0.1', $((CITUS_PORT + i)))" >/dev/null
  done
  "$PY" manage.py setup_platform >/dev/null
}

# The TaskFlow API suite, the isolation state machine, purge, moves, the placement check, a fan-out.
CITUS_SUITE=(tests/taskflow/test_api.py tests/taskflow/test_isolation.py tests/taskflow/test_purge.py
  tests/tenants/test_moving.py tests/tenants/test_distribution.py tests/fanout/test_runs.py
  tests/migrations_sqla/test_backfill.py tests/migrations_sqla/test_migrator_lock_order.py)

cmd_citus() {
  DB_PORT=$CITUS_PORT
  # Distributed as the platform runs on Citus: tenant schemas at onboarding, the shared tables
  # by tenant_id at set-up (either can be turned off with =false for a run of local tables).
  export CITUS_DISTRIBUTE_SCHEMAS=${CITUS_DISTRIBUTE_SCHEMAS:-true}
  export CITUS_DISTRIBUTE_SHARED=${CITUS_DISTRIBUTE_SHARED:-true}
  ensure_citus_cluster
  use_test_environment
  fresh_citus_database
  log "pytest against Citus (coordinator 127.0.0.1:$CITUS_PORT)"
  export CITUS_TESTS=1  # the tests marked `citus` run here only (tests/citus.py)
  # Test paths given replace the suite; options alone (-q, -x, -k ...) apply to it.
  local arg named=0
  for arg in "$@"; do [ -e "${arg%%::*}" ] && named=1; done
  [ "$named" = 1 ] || set -- "${CITUS_SUITE[@]}" "$@"
  "$PY" -m pytest "$@"
}

cmd_citus_stop() {
  local bin base i run_as=()
  bin=$(pg_bin)
  base=$(citus_data_dir)
  [ "$(id -u)" = 0 ] && run_as=(runuser -u postgres --)
  for i in $(seq 0 $((CITUS_NODES - 1))); do
    if [ -f "$base/node$i/PG_VERSION" ] \
      && (cd / && "${run_as[@]}" "$bin/pg_ctl" -D "$base/node$i" status >/dev/null 2>&1); then
      log "stopping Citus node $i"
      (cd / && "${run_as[@]}" "$bin/pg_ctl" -D "$base/node$i" -m fast -w stop >/dev/null)
    fi
  done
}

case "${1:-}" in
  run) shift; cmd_run "$@" ;;
  test) shift; cmd_test "$@" ;;
  pytest) shift; use_test_environment; run_pytest "$@" ;;  # tests only, without the linters
  setup) shift; cmd_setup "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  citus) shift; cmd_citus "$@" ;;
  citus-start) shift; DB_PORT=$CITUS_PORT; ensure_citus_cluster ;;
  citus-stop) shift; cmd_citus_stop "$@" ;;
  *) echo "usage: platform/dev.sh run|test|pytest|setup|stop|citus|citus-start|citus-stop" >&2; exit 2 ;;
esac
