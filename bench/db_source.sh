#!/usr/bin/env bash
# Database source benchmark (issue 13): 1,000,000 rows from a PostgreSQL table
# into MariaDB, end to end. Sluice (`sluice run` of a two-step pipeline: an
# ingest step reading the table, landing it raw as CSV, then a load into
# MariaDB) against the native tools in the same run: `psql \copy (SELECT …)
# TO file` followed by `LOAD DATA LOCAL INFILE`.
#
#   bench/db_source.sh              # 1,000,000 rows, 3 runs each, medians
#   ROWS=200000 RUNS=5 bench/db_source.sh
#
# Needs: PostgreSQL on 127.0.0.1:5432 (user postgres, db test), MariaDB on
# 127.0.0.1:3306 (root, local_infile=1), python3. Uses its own schema and
# database (bench_dbsrc), so other benchmarks' tables are left alone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${SHARED:-$repo/../shared/bench}
rows=${ROWS:-1000000}
runs=${RUNS:-3}
work=${WORK:-/tmp/sluice-bench-dbsrc}
sluice=${SLUICE:-${CARGO_TARGET_DIR:-$repo/target}/release/sluice}
ns=bench_dbsrc
mkdir -p "$work"

[ -x "$sluice" ] || (cd "$repo" && cargo build --release)
[ -f "$shared/gen_sales.py" ] || { echo "no gen_sales.py under $shared (set SHARED=…)" >&2; exit 2; }

data="$work/sales_$rows.csv"
[ -f "$data" ] || python3 "$shared/gen_sales.py" -q "$rows" "$data"

psql_() { psql -h 127.0.0.1 -U postgres -d test -v ON_ERROR_STOP=1 -qAt "$@"; }
maria() { mariadb -h 127.0.0.1 -u root "$@"; }

# The source: the reference table definition, in its own schema, filled once.
psql_ -c "DROP SCHEMA IF EXISTS $ns CASCADE" -c "CREATE SCHEMA $ns"
sed -n '/^CREATE TABLE bench_sales /,/^);/p' "$shared/sql/pg_schema.sql" | sed "s/bench_sales/$ns.sales/" | psql_
psql_ -c "\\copy $ns.sales from '$data' csv header"
psql_ -c "ANALYZE $ns.sales"
# The target: the reference MariaDB table.
maria -e "DROP DATABASE IF EXISTS $ns; CREATE DATABASE $ns"
sed -n '/^CREATE TABLE bench_sales /,/;$/p' "$shared/sql/mysql_schema.sql" | sed "s/bench_sales/sales/" | maria "$ns"

# The Sluice project: ingest the table, load it (the target's own columns).
proj="$work/project"
rm -rf "$proj"; mkdir -p "$proj/pipelines"
cat > "$proj/sluice.toml" <<TOML
name = "bench-dbsrc"
[connections.wh]
url = "mysql://root@127.0.0.1:3306/$ns"
[connections.src]
url = "postgres://postgres@127.0.0.1:5432/test?schema=$ns"
TOML
cat > "$proj/pipelines/p.toml" <<TOML
[[steps]]
name = "ingest"
kind = "ingest"
connection = "src"
table = "sales"

[[steps]]
name = "load"
kind = "load"
from = "ingest"
connection = "wh"
table = "sales"
mode = "append"
TOML

# once LABEL RESET_CMD CMD...: one timed run, its wall seconds added to LABEL's list.
declare -A times
once() {
  local label=$1 reset=$2; shift 2
  eval "$reset"
  /usr/bin/time -o "$work/time" -f "%e %M" "$@" >"$work/stdout" 2>"$work/stderr" || { echo "$label failed:" >&2; cat "$work/stdout" "$work/stderr" >&2; exit 1; }
  local out; out=$(tail -n1 "$work/time")
  times[$label]+="${out% *} "
  printf '  %-16s %6ss  peak %6s KiB\n' "$label" "${out% *}" "${out#* }" >&2
}
median() { printf '%s\n' ${times[$1]} | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

copy_file="$work/copy_out.csv"
truncate_target="maria $ns -e 'TRUNCATE sales; DROP TABLE IF EXISTS _sluice_loads'"
# A fresh lake (the state store is kept, as in any deployment; the first run
# below creates it).
fresh_lake="$truncate_target; rm -rf '$proj/.sluice/lake'"

(cd "$proj" && SLUICE_NO_PROGRESS=1 "$sluice" run --step ingest >/dev/null)
# The runs are interleaved (one of each per round), so a noisy neighbour on a
# shared machine slows both sides alike.
echo "PostgreSQL → MariaDB, $rows rows, $runs rounds" >&2
for r in $(seq 1 "$runs"); do
  echo " round $r" >&2
  once psql_copy_to "rm -f '$copy_file'" psql -h 127.0.0.1 -U postgres -d test -qc "\\copy (SELECT * FROM $ns.sales) TO '$copy_file' CSV HEADER"
  once load_data_local "$truncate_target" mariadb --local-infile=1 -h 127.0.0.1 -u root "$ns" -e "LOAD DATA LOCAL INFILE '$copy_file' INTO TABLE sales CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' LINES TERMINATED BY '\\n' IGNORE 1 LINES"
  once sluice_run "$fresh_lake" env -C "$proj" SLUICE_NO_PROGRESS=1 "$sluice" run
  rows_loaded=$(maria -N "$ns" -e 'SELECT COUNT(*), COUNT(DISTINCT sale_id) FROM sales' | tr '\t' ' ')
  # The two steps alone, for the breakdown: the load of the landing just made,
  # then the ingest into a fresh lake.
  once sluice_load "$truncate_target" env -C "$proj" SLUICE_NO_PROGRESS=1 "$sluice" run --step load
  once sluice_ingest "$fresh_lake" env -C "$proj" SLUICE_NO_PROGRESS=1 "$sluice" run --step ingest
done
declare -A wall
for l in psql_copy_to load_data_local sluice_run sluice_load sluice_ingest; do wall[$l]=$(median $l); done

ref=$(awk -v a="${wall[psql_copy_to]}" -v b="${wall[load_data_local]}" 'BEGIN { printf "%.2f", a + b }')
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }
cat <<MD

| path | native tools | Sluice | speed-up |
|---|---|---|---|
| PostgreSQL → file | \`psql \\copy (SELECT …) TO\` ${wall[psql_copy_to]} s | ingest (table → raw CSV landing) ${wall[sluice_ingest]} s | $(ratio "${wall[sluice_ingest]}" "${wall[psql_copy_to]}")× |
| file → MariaDB | \`LOAD DATA LOCAL INFILE\` ${wall[load_data_local]} s | load (raw CSV landing → table) ${wall[sluice_load]} s | $(ratio "${wall[sluice_load]}" "${wall[load_data_local]}")× |
| end to end | sum ${ref} s | \`sluice run\` (ingest + load) ${wall[sluice_run]} s | **$(ratio "${wall[sluice_run]}" "$ref")×** |

Rows in the target after the last \`sluice run\` (count, distinct sale_id): $rows_loaded
MD
