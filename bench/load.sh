#!/usr/bin/env bash
# Load benchmark: Sluice against each database's own bulk tool, on the same
# table definitions (../shared/bench/sql/), in the same run.
#
#   bench/load.sh                # 1,000,000 rows (~120 MB), 3 runs each
#   ROWS=200000 RUNS=5 bench/load.sh
#   BIG=1 bench/load.sh          # also peak memory on a ~1.2 GB file (10M rows)
#
# Needs: PostgreSQL on 127.0.0.1:5432 (user postgres, db test), MariaDB on
# 127.0.0.1:3306 (root, local_infile=1), sqlite3, python3. Prints a Markdown
# table of medians and ratios (higher ratio = Sluice faster).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
shared=${SHARED:-$repo/../shared/bench}
rows=${ROWS:-1000000}
runs=${RUNS:-3}
py_rows=${PY_ROWS:-100000}
work=${WORK:-/tmp/sluice-bench}
sluice=${SLUICE:-$repo/target/release/sluice}
pg="postgres://postgres@127.0.0.1:5432/test"
my_db=sluice_bench
my="mysql://root@127.0.0.1:3306/$my_db"
mkdir -p "$work"

[ -x "$sluice" ] || (cd "$repo" && cargo build --release)
[ -f "$shared/gen_sales.py" ] || { echo "no gen_sales.py under $shared (set SHARED=…)" >&2; exit 2; }

data="$work/sales_$rows.csv"
dirty="$work/dirty_$rows.csv"
[ -f "$data" ] || python3 "$shared/gen_sales.py" -q "$rows" "$data"
[ -f "$dirty" ] || python3 "$shared/gen_sales.py" -q --dirty "$rows" "$dirty"
bytes=$(stat -c %s "$data")

psql_() { psql -h 127.0.0.1 -U postgres -d test -qAt "$@"; }
maria() { mariadb -h 127.0.0.1 -u root "$@"; }

psql_ -f "$shared/sql/pg_schema.sql" 2>/dev/null
maria -e "CREATE DATABASE IF NOT EXISTS $my_db"
maria "$my_db" < "$shared/sql/mysql_schema.sql"
sq="$work/bench.db"
rm -f "$sq" "$sq-wal" "$sq-shm"
sqlite3 "$sq" "CREATE TABLE bench_sales (sale_id BIGINT, sale_ts TIMESTAMP, store_id INTEGER, channel TEXT, product_id INTEGER, product_name TEXT, category TEXT, quantity INTEGER, unit_price DECIMAL(12,2), customer_email TEXT)"

# time_it LABEL RESET_CMD -- CMD...: median wall seconds and max peak KiB of RUNS runs.
declare -A wall peak
time_it() {
  local label=$1 reset=$2; shift 3
  local ws=() p=0
  for _ in $(seq 1 "$runs"); do
    eval "$reset"
    local out
    /usr/bin/time -o "$work/time" -f "%e %M" "$@" >/dev/null 2>"$work/stderr" || { echo "$label failed:" >&2; cat "$work/stderr" >&2; exit 1; }
    out=$(tail -n1 "$work/time")
    ws+=("${out% *}")
    [ "${out#* }" -gt "$p" ] && p=${out#* }
  done
  wall[$label]=$(printf '%s\n' "${ws[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  peak[$label]=$p
  printf '  %-22s %6ss  %6s KiB\n' "$label" "${wall[$label]}" "$p" >&2
}

echo "loading $rows rows ($bytes bytes), $runs runs each" >&2
pg_reset="psql_ -c 'TRUNCATE bench_sales'"
my_reset="maria $my_db -e 'TRUNCATE bench_sales'"
sq_reset="sqlite3 $sq 'DELETE FROM bench_sales'"

time_it psql_copy "$pg_reset" -- psql -h 127.0.0.1 -U postgres -d test -qc "\\copy bench_sales from '$data' csv header"
time_it sluice_pg "$pg_reset" -- "$sluice" load "$data" "$pg" --table bench_sales
time_it sluice_pg_text "$pg_reset" -- "$sluice" load "$data" "$pg?copy=text" --table bench_sales
time_it load_data_local "$my_reset" -- mariadb --local-infile=1 -h 127.0.0.1 -u root "$my_db" -e "LOAD DATA LOCAL INFILE '$data' INTO TABLE bench_sales CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' LINES TERMINATED BY '\\n' IGNORE 1 LINES"
time_it sluice_mariadb "$my_reset" -- "$sluice" load "$data" "$my" --table bench_sales
time_it sqlite3_import "$sq_reset" -- sqlite3 "$sq" ".import --csv --skip 1 $data bench_sales"
time_it sluice_sqlite "$sq_reset" -- "$sluice" load "$data" "sqlite://$sq" --table bench_sales

# The row-by-row Python loader, on a prefix of the file (it is slow).
venv="$repo/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import psycopg2' 2>/dev/null || "$venv/bin/pip" install -q psycopg2-binary
head -n $((py_rows + 1)) "$data" > "$work/py_$py_rows.csv"
runs_saved=$runs; runs=1
time_it py_executemany "psql_ -c 'TRUNCATE bench_sales_py'" -- "$venv/bin/python" "$here/py_executemany.py" "$work/py_$py_rows.csv" bench_sales_py
runs=$runs_saved

# The dirty file, quarantined: every defect at its manifest line.
rm -f "$work/rejects.tsv"
psql_ -c 'TRUNCATE bench_sales'
/usr/bin/time -o "$work/time" -f "%e" "$sluice" load "$dirty" "$pg" --table bench_sales --on-error quarantine --rejects "$work/rejects.tsv" >/dev/null
dirty_t=$(tail -n1 "$work/time")
psql_ -c 'SELECT sale_id FROM bench_sales' > "$work/ids"
check=$(python3 "$shared/check_load.py" "$dirty" "$work/rejects.tsv" "$work/ids" | tr '\n' ' ')

rate() { awk -v r="$1" -v s="$2" 'BEGIN { printf "%.0f", r / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }
py_rate=$(rate "$py_rows" "${wall[py_executemany]}")
cat <<MD

| target | reference tool | reference | Sluice | Sluice rows/s | speed-up | Sluice peak RSS |
|---|---|---|---|---|---|---|
| PostgreSQL (binary COPY) | \`psql \\copy … csv\` | ${wall[psql_copy]} s | ${wall[sluice_pg]} s | $(rate "$rows" "${wall[sluice_pg]}") | **$(ratio "${wall[sluice_pg]}" "${wall[psql_copy]}")×** | $((peak[sluice_pg] / 1024)) MiB |
| PostgreSQL (text COPY) | \`psql \\copy … csv\` | ${wall[psql_copy]} s | ${wall[sluice_pg_text]} s | $(rate "$rows" "${wall[sluice_pg_text]}") | $(ratio "${wall[sluice_pg_text]}" "${wall[psql_copy]}")× | $((peak[sluice_pg_text] / 1024)) MiB |
| MariaDB | \`LOAD DATA LOCAL INFILE\` | ${wall[load_data_local]} s | ${wall[sluice_mariadb]} s | $(rate "$rows" "${wall[sluice_mariadb]}") | **$(ratio "${wall[sluice_mariadb]}" "${wall[load_data_local]}")×** | $((peak[sluice_mariadb] / 1024)) MiB |
| SQLite | \`sqlite3 .import --csv\` | ${wall[sqlite3_import]} s | ${wall[sluice_sqlite]} s | $(rate "$rows" "${wall[sluice_sqlite]}") | **$(ratio "${wall[sluice_sqlite]}" "${wall[sqlite3_import]}")×** | $((peak[sluice_sqlite] / 1024)) MiB |
| PostgreSQL | Python \`executemany\` ($py_rows rows) | $py_rate rows/s | | $(rate "$rows" "${wall[sluice_pg]}") | **$(awk -v a="$(rate "$rows" "${wall[sluice_pg]}")" -v b="$py_rate" 'BEGIN { printf "%.0f", a / b }')×** | |

Dirty file ($rows rows, quarantine into PostgreSQL): ${dirty_t} s; check_load.py: $check
MD

if [ "${BIG:-0}" = 1 ]; then
  big="$work/sales_10000000.csv"
  [ -f "$big" ] || python3 "$shared/gen_sales.py" -q 10000000 "$big"
  psql_ -c 'TRUNCATE bench_sales'
  /usr/bin/time -o "$work/time" -f "%e %M" "$sluice" load "$big" "$pg" --table bench_sales >/dev/null
  out=$(tail -n1 "$work/time")
  echo "1 GB file ($(stat -c %s "$big") bytes) into PostgreSQL: ${out% *} s, peak RSS $(( ${out#* } / 1024 )) MiB"
  rm -f "$sq"; sqlite3 "$sq" "CREATE TABLE bench_sales (sale_id BIGINT, sale_ts TIMESTAMP, store_id INTEGER, channel TEXT, product_id INTEGER, product_name TEXT, category TEXT, quantity INTEGER, unit_price DECIMAL(12,2), customer_email TEXT)"
  /usr/bin/time -o "$work/time" -f "%e %M" "$sluice" load "$big" "sqlite://$sq" --table bench_sales >/dev/null
  out=$(tail -n1 "$work/time")
  echo "1 GB file into SQLite: ${out% *} s, peak RSS $(( ${out#* } / 1024 )) MiB"
  psql_ -c 'TRUNCATE bench_sales'
fi
