#!/usr/bin/env bash
# Export benchmark: `sluice export` of a PostgreSQL table to TSV against
# `psql \copy (SELECT …) TO`, in the same run, on the same table, turn about
# (psql, sluice, psql, sluice, …) so both see the same machine load.
#
#   bench/export.sh                 # 1,000,000 rows, 3 runs each, medians
#   ROWS=200000 RUNS=5 bench/export.sh
#
# Needs: PostgreSQL on 127.0.0.1:5432 (user postgres, db test), psql,
# python3. Uses its own table (bench_export_sales), so a concurrent
# bench/load.sh does not disturb it. Prints a Markdown table of medians and
# ratios (ratio = psql time / Sluice time: above 1 Sluice is faster).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${SHARED:-$repo/../shared/bench}
rows=${ROWS:-1000000}
runs=${RUNS:-3}
work=${WORK:-/tmp/sluice-bench-export}
sluice=${SLUICE:-$repo/target/release/sluice}
pg="postgres://postgres@127.0.0.1:5432/test"
table=bench_export_sales
mkdir -p "$work"

[ -x "$sluice" ] || (cd "$repo" && cargo build --release)
[ -f "$shared/gen_sales.py" ] || { echo "no gen_sales.py under $shared (set SHARED=…)" >&2; exit 2; }

psql_() { psql -h 127.0.0.1 -U postgres -d test -qAt "$@"; }

data="$work/sales_$rows.csv"
[ -f "$data" ] || python3 "$shared/gen_sales.py" -q "$rows" "$data"
# The reference table definition (../shared/bench/sql/pg_schema.sql), under our own name.
psql_ -c "DROP TABLE IF EXISTS $table" -c "CREATE TABLE $table (sale_id bigint, sale_ts timestamp, store_id integer, channel text, product_id integer, product_name text, category text, quantity integer, unit_price numeric(12,2), customer_email text)"
psql_ -c "\\copy $table from '$data' csv header"
psql_ -c "VACUUM ANALYZE $table"
echo "exporting $rows rows of $table, $runs runs each, turn about" >&2

declare -A times
# run LABEL CMD...: one timed run, appended to LABEL's times.
run() {
  local label=$1; shift
  rm -f "$work/out.tsv"
  /usr/bin/time -o "$work/time" -f "%e %M" "$@" >/dev/null 2>"$work/stderr" || { echo "$label failed:" >&2; cat "$work/stderr" >&2; exit 1; }
  local t; t=$(tail -n1 "$work/time")
  times[$label]="${times[$label]:-} ${t% *}"
  peak[$label]=${t#* }
  size[$label]=$(stat -c %s "$work/out.tsv")
}
declare -A peak size
median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

q="SELECT * FROM $table"
# Warm the cache once (both read the same heap).
psql_ -c "\\copy ($q) TO '/dev/null'"
for _ in $(seq 1 "$runs"); do
  # TSV, PostgreSQL text format (backslash escapes): psql's default.
  run psql_text psql -h 127.0.0.1 -U postgres -d test -qc "\\copy ($q) TO '$work/out.tsv' WITH (FORMAT text, HEADER)"
  run sluice_text "$sluice" export "$pg" --table "$table" -o "$work/out.tsv" --quoting backslash
  # TSV with CSV-style quoting (Sluice's default TSV dialect).
  run psql_csv psql -h 127.0.0.1 -U postgres -d test -qc "\\copy ($q) TO '$work/out.tsv' WITH (FORMAT csv, DELIMITER E'\\t', HEADER)"
  run sluice_csv "$sluice" export "$pg" --table "$table" -o "$work/out.tsv"
done
# The same bytes as psql's: both outputs compared once.
psql_ -c "\\copy ($q) TO '$work/psql.tsv' WITH (FORMAT csv, DELIMITER E'\\t', HEADER)"
"$sluice" export "$pg" --table "$table" -o "$work/sluice.tsv" 2>/dev/null
same=$(cmp -s "$work/psql.tsv" "$work/sluice.tsv" && echo "identical" || echo "DIFFERENT")
# Other formats, for the record (no reference tool).
declare -A other
for f in ndjson parquet; do
  /usr/bin/time -o "$work/time" -f "%e %M" "$sluice" export "$pg" --table "$table" -o "$work/out.$f" 2>/dev/null
  t=$(tail -n1 "$work/time"); other[$f]="${t% *} s, $(( $(stat -c %s "$work/out.$f") / 1048576 )) MiB, peak RSS $(( ${t#* } / 1024 )) MiB"
done
rm -f "$work/out.tsv" "$work/psql.tsv" "$work/sluice.tsv" "$work/out.ndjson" "$work/out.parquet"
psql_ -c "DROP TABLE $table"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }
pt=$(median "${times[psql_text]}"); st=$(median "${times[sluice_text]}")
pc=$(median "${times[psql_csv]}"); sc=$(median "${times[sluice_csv]}")
cat <<MD

| TSV dialect | \`psql \\copy (SELECT …) TO\` | \`sluice export\` | ratio | Sluice peak RSS | runs (psql / sluice) |
|---|---|---|---|---|---|
| backslash (PostgreSQL text) | $pt s | $st s | **$(ratio "$st" "$pt")×** | $((peak[sluice_text] / 1024)) MiB | ${times[psql_text]} / ${times[sluice_text]} |
| csv quoting (the default) | $pc s | $sc s | **$(ratio "$sc" "$pc")×** | $((peak[sluice_csv] / 1024)) MiB | ${times[psql_csv]} / ${times[sluice_csv]} |

Output $((size[sluice_csv] / 1048576)) MiB; Sluice's TSV and psql's CSV-in-TSV are $same.
NDJSON: ${other[ndjson]}. Parquet (zstd): ${other[parquet]}.
MD
