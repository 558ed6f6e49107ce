#!/usr/bin/env bash
# Conformance against real dbt (not in CI): builds dbt projects with
# `dbt build` (dbt-core 1.11 + dbt-postgres, installed from PyPI into the
# repository's .venv-dbt) and with `sluice build`, each in its own PostgreSQL
# schema, from the same unchanged project folder, then compares every
# relation either tool made — in the target's schema and in the custom
# schemas beside it (`<schema>_<custom>`) — row by row (all columns, sorted,
# as JSON; a snapshot's timestamps and dbt_scd_id left out, since they record
# when each tool ran).
#
#   bench/dbt_conformance.sh                       # the projects under tests/cases/dbt-*
#   PROJECTS="path/to/jaffle_shop other/project" bench/dbt_conformance.sh
#
# Each project runs against a profile this script writes (the project's
# `profile:` name, one postgres target `conformance`), so public projects
# without a profiles.yml run unchanged. Needs PostgreSQL on 127.0.0.1:5432
# (user postgres, db test) and psql. Exits 1 when any relation differs or
# exists for one tool only.
set -euo pipefail
invoked=$(pwd)
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
sluice=${SLUICE:-$repo/target/release/sluice}
venv="${VENV:-$repo/.venv-dbt}"
work=${WORK:-/tmp/sluice-dbt-conformance}
projects=${PROJECTS:-$(ls -d "$repo"/tests/cases/dbt-*)}

[ -x "$sluice" ] || (cd "$repo" && cargo build --release)
sluice=$(realpath "$sluice")
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import dbt.adapters.postgres' 2>/dev/null ||
  "$venv/bin/pip" install -q "dbt-core>=1.11,<1.12" "dbt-postgres"
dbt="$venv/bin/dbt"
export DBT_SEND_ANONYMOUS_USAGE_STATS=false

psql_() { psql -h 127.0.0.1 -U postgres -d test -v ON_ERROR_STOP=1 -qAt "$@"; }

# The schemas a run made: the target's and `<target>_*`.
schemas_of() {
  psql_ -c "SELECT nspname FROM pg_namespace WHERE nspname = '$1' OR nspname LIKE '$1\\_%' ORDER BY 1"
}

status=0
total_same=0
total_differ=0
for proj in $projects; do
  proj=$(cd "$invoked" && cd "$proj" && pwd)
  name=$(basename "$proj")
  slug=$(echo "$name" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9\n' '_')
  profile=$(sed -n "s/^profile:[[:space:]]*['\"]\{0,1\}\([^'\"]*\)['\"]\{0,1\}[[:space:]]*$/\1/p" "$proj/dbt_project.yml" | head -1)
  echo "== $name (profile $profile)"
  for tool in dbt sluice; do
    schema="conf_${tool}_$slug"
    for s in $(schemas_of "$schema"); do psql_ -c "SET client_min_messages = warning; DROP SCHEMA \"$s\" CASCADE"; done
    psql_ -c "CREATE SCHEMA $schema"
    dir="$work/$tool/$name"
    rm -rf "$dir" "$work/$tool/$name.profiles"
    mkdir -p "$work/$tool" "$work/$tool/$name.profiles"
    cp -r "$proj" "$dir"
    rm -rf "$dir/target" "$dir/logs"
    cat > "$work/$tool/$name.profiles/profiles.yml" <<EOF
$profile:
  target: conformance
  outputs:
    conformance:
      type: postgres
      host: 127.0.0.1
      port: 5432
      user: postgres
      password: ""
      dbname: test
      schema: $schema
      threads: 4
EOF
    cd "$dir"
    start=$(date +%s.%N)
    if [ "$tool" = dbt ]; then
      # Seeds first: a source over a seed's table has no edge to the seed.
      { "$dbt" seed --profiles-dir "$work/$tool/$name.profiles" --target conformance -q &&
        "$dbt" build --profiles-dir "$work/$tool/$name.profiles" --target conformance -q; } > "$work/$tool/$name.log" 2>&1 ||
        echo "dbt build failed (see $work/$tool/$name.log)"
    else
      { "$sluice" seed --profiles-dir "$work/$tool/$name.profiles" --target conformance &&
        "$sluice" build --profiles-dir "$work/$tool/$name.profiles" --target conformance; } > "$work/$tool/$name.log" 2>&1 ||
        echo "sluice build failed (see $work/$tool/$name.log)"
    fi
    end=$(date +%s.%N)
    printf '%-7s built in %.2fs\n' "$tool" "$(echo "$end - $start" | bc)"
  done
  # Every relation either tool made, as `.<schema suffix>\t<relation>`.
  list() {
    psql_ -F "$(printf '\t')" -c "SELECT '.' || substr(table_schema, length('$1') + 1), table_name FROM information_schema.tables
      WHERE table_schema = '$1' OR table_schema LIKE '$1\\_%' ORDER BY 1, 2"
  }
  dbt_rels=$(list "conf_dbt_$slug")
  sl_rels=$(list "conf_sluice_$slug")
  if [ "$dbt_rels" != "$sl_rels" ]; then
    status=1
    echo "RELATIONS DIFFER (< dbt, > sluice):"
    diff <(echo "$dbt_rels") <(echo "$sl_rels") | grep '^[<>]' || true
  fi
  same=0
  differ=0
  while IFS=$'\t' read -r suffix rel; do
    [ -n "$rel" ] || continue
    suffix=${suffix#.}
    q="(to_jsonb(t) - 'dbt_scd_id' - 'dbt_updated_at' - 'dbt_valid_from' - 'dbt_valid_to')::text"
    # (Each tool's schema name, where a model writes it into a row, reads the same.)
    a=$(psql_ -c "SELECT $q FROM \"conf_dbt_$slug$suffix\".\"$rel\" t ORDER BY 1" 2>&1 | sed 's/conf_dbt_/conf_TOOL_/g' || true)
    b=$(psql_ -c "SELECT $q FROM \"conf_sluice_$slug$suffix\".\"$rel\" t ORDER BY 1" 2>&1 | sed 's/conf_sluice_/conf_TOOL_/g' || true)
    if [ "$a" = "$b" ]; then
      same=$((same + 1))
    else
      differ=$((differ + 1))
      status=1
      echo "DIFFERS ${suffix#_}${suffix:+.}$rel"
      diff <(echo "$a") <(echo "$b") | head -10 || true
    fi
  done <<< "$dbt_rels"
  total_same=$((total_same + same))
  total_differ=$((total_differ + differ))
  echo "$name: $same relations with the same rows, $differ differ"
done
echo "all projects: $total_same relations with the same rows, $total_differ differ"
exit $status
