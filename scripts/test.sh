#!/usr/bin/env bash
# The test suite, from a fresh machine: installs what the tests need (database
# clients, the S3 test servers, Python tools), starts PostgreSQL and MariaDB
# when they are not running, then runs `cargo test` and checks that the Oracle
# feature builds. The README's test command; .ci/run calls it.
# Pass cargo test arguments through: bash scripts/test.sh landing::
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*"; }

need_apt=()
command -v sqlite3 >/dev/null || need_apt+=(sqlite3)
command -v psql >/dev/null || need_apt+=(postgresql-client)
command -v mariadb >/dev/null || need_apt+=(mariadb-client)
command -v python3 >/dev/null || need_apt+=(python3)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

wait_for() { # wait_for NAME COMMAND...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "$name did not come up" >&2
  return 1
}

log "PostgreSQL on 127.0.0.1:5432"
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432 -q
fi
psql -h 127.0.0.1 -U postgres -d test -qAtc 'select 1' >/dev/null

log "MariaDB on 127.0.0.1:3306"
if ! mariadb -h 127.0.0.1 -u root -e 'select 1' >/dev/null 2>&1; then
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_for MariaDB mariadb -h 127.0.0.1 -u root -e 'select 1'
fi
# LOAD DATA LOCAL needs the server to allow it.
mariadb -h 127.0.0.1 -u root -e 'SET GLOBAL local_infile = 1'

log "test tools (s3s-fs, moto)"
bash .ci/tools.sh

log "toolchain"
cargo --version
rustc --version

log "tests"
cargo test "$@"

# The Oracle backend is behind a feature (no Oracle server exists here): make
# sure it still builds; its live test runs with SLUICE_TEST_ORACLE_URL set.
log "oracle feature builds"
cargo check --features oracle --tests
