#!/usr/bin/env bash
# Conformance against real dbt (not in CI): builds dbt projects with
# `dbt seed && dbt run` (dbt-core 1.11 + dbt-postgres, installed from PyPI into
# the repository's .venv-dbt) and with `sluice seed && sluice transform`, each
# in its own PostgreSQL schema, from the same unchanged project folder and
# profiles.yml, then compares every model's and seed's rows (all columns,
# sorted, as text).
#
#   bench/dbt_conformance.sh                       # the projects under tests/cases/dbt-*
#   PROJECTS="path/to/jaffle_shop" bench/dbt_conformance.sh
#
# A project's profiles.yml must have a `pg` target whose schema is
# "{{ env_var('JAFFLE_SCHEMA') }}" (as tests/cases/dbt-jaffle's has); the
# script sets it per tool. Needs PostgreSQL on 127.0.0.1:5432 (user
# postgres, db test) and psql. Exits 1 when any relation differs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
sluice=${SLUICE:-$repo/target/release/sluice}
venv="${VENV:-$repo/.venv-dbt}"
work=${WORK:-/tmp/sluice-dbt-conformance}
projects=${PROJECTS:-$(ls -d "$repo"/tests/cases/dbt-*)}

[ -x "$sluice" ] || (cd "$repo" && cargo build --release)
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import dbt.adapters.postgres' 2>/dev/null ||
  "$venv/bin/pip" install -q "dbt-core>=1.11,<1.12" "dbt-postgres"
dbt="$venv/bin/dbt"
export DBT_SEND_ANONYMOUS_USAGE_STATS=false

psql_() { psql -h 127.0.0.1 -U postgres -d test -v ON_ERROR_STOP=1 -qAt "$@"; }

status=0
for proj in $projects; do
  name=$(basename "$proj")
  echo "== $name"
  for tool in dbt sluice; do
    schema="conf_${tool}_$(echo "$name" | tr -c 'a-z0-9\n' '_')"
    psql_ -c "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema"
    rm -rf "$work/$tool/$name"
    mkdir -p "$work/$tool"
    cp -r "$proj" "$work/$tool/$name"
    cd "$work/$tool/$name"
    export JAFFLE_SCHEMA=$schema DBT_PROFILES_DIR="$work/$tool/$name"
    start=$(date +%s.%N)
    if [ "$tool" = dbt ]; then
      "$dbt" seed --target pg -q && "$dbt" run --target pg -q
    else
      "$sluice" seed --target pg >/dev/null && "$sluice" transform --target pg >/dev/null
    fi
    end=$(date +%s.%N)
    printf '%-7s built in %.2fs\n' "$tool" "$(echo "$end - $start" | bc)"
  done
  dbt_schema="conf_dbt_$(echo "$name" | tr -c 'a-z0-9\n' '_')"
  sl_schema="conf_sluice_$(echo "$name" | tr -c 'a-z0-9\n' '_')"
  relations=$(psql_ -c "SELECT table_name FROM information_schema.tables WHERE table_schema = '$dbt_schema' ORDER BY 1")
  same=0
  differ=0
  for rel in $relations; do
    a=$(psql_ -c "SELECT t::text FROM $dbt_schema.\"$rel\" t ORDER BY 1" 2>&1 || true)
    b=$(psql_ -c "SELECT t::text FROM $sl_schema.\"$rel\" t ORDER BY 1" 2>&1 || true)
    if [ "$a" = "$b" ]; then
      same=$((same + 1))
    else
      differ=$((differ + 1))
      status=1
      echo "DIFFERS $rel"
      diff <(echo "$a") <(echo "$b") | head -10 || true
    fi
  done
  echo "$name: $same relations with the same rows, $differ differ"
done
exit $status
