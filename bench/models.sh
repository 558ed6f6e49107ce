#!/usr/bin/env bash
# Transform benchmark: 200 generated models (59 tables, 141 views, 26 levels;
# tables built at once that share dependent views: see gen_models.py) built
# on PostgreSQL by `sluice transform` and by `dbt run` (dbt-core +
# dbt-postgres), the same SQL files, in the same run.
#
#   bench/models.sh              # 3 timed runs each, 4 threads
#   RUNS=5 ROWS=100000 bench/models.sh
#
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, db test) and python3;
# dbt goes into the repository's .venv-dbt (dbt-core 1.10, dbt-postgres 1.9:
# the 2.x line downloads a parser from GitHub while installing, which this
# machine cannot reach; a venv of its own, apart from the test tools' .venv).
# Every timed run rebuilds all 200 models over the previous run's relations
# (the usual daily case) and must succeed; a first build from an empty
# schema is done once, untimed. After the runs, every view of both schemas
# is checked to be there.
#
# Sluice's own time per model is measured with one thread, where it is exact:
# the process's wall time minus the time spent waiting on the database
# (`database_time` in target/run_results.json), divided by 200.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
runs=${RUNS:-3}
rows=${ROWS:-20000}
threads=${THREADS:-4}
work=${WORK:-/tmp/sluice-bench-models}
sluice=${SLUICE:-$repo/target/release/sluice}
pg_url="postgres://postgres@127.0.0.1:5432/test"
venv="${VENV:-$repo/.venv-dbt}"

[ -x "$sluice" ] || (cd "$repo" && cargo build --release)
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import dbt.adapters.postgres' 2>/dev/null ||
  "$venv/bin/pip" install -q "dbt-core>=1.10,<1.11" "dbt-postgres>=1.9,<1.10"
dbt="$venv/bin/dbt"
export DBT_SEND_ANONYMOUS_USAGE_STATS=false DBT_PROFILES_DIR="$work/dbt"

rm -rf "$work"
python3 "$here/gen_models.py" "$work" "$pg_url" --rows "$rows" --threads "$threads"
psql -h 127.0.0.1 -U postgres -d test -qAt -c "DROP SCHEMA IF EXISTS bench_sluice CASCADE; DROP SCHEMA IF EXISTS bench_dbt CASCADE" 2>/dev/null

# median of the numbers on stdin
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# time_runs LABEL DIR -- CMD...: prints the median wall seconds of RUNS runs;
# keeps each run's wall in $work/LABEL.walls and peak RSS in $work/LABEL.peak.
time_runs() {
  local label=$1 dir=$2; shift 3
  : >"$work/$label.walls"
  local p=0
  for _ in $(seq 1 "$runs"); do
    (cd "$dir" && /usr/bin/time -o "$work/time" -f "%e %M" "$@" >"$work/$label.out" 2>&1) ||
      { echo "$label failed:" >&2; tail -20 "$work/$label.out" >&2; exit 1; }
    local out
    out=$(tail -n1 "$work/time")
    echo "${out% *}" >>"$work/$label.walls"
    [ "${out#* }" -gt "$p" ] && p=${out#* }
    [ "$label" = sluice_1 ] && python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["database_time"])' \
      "$dir/target/run_results.json" >>"$work/sluice_1.db"
  done
  echo "$p" >"$work/$label.peak"
  median <"$work/$label.walls"
}

echo "first builds (untimed)" >&2
(cd "$work/sluice" && "$sluice" transform >/dev/null)
(cd "$work/dbt" && "$dbt" run -q >/dev/null)

echo "timing: $runs runs each, $threads threads" >&2
: >"$work/sluice_1.db"
s4=$(time_runs sluice "$work/sluice" -- "$sluice" transform --threads "$threads")
d4=$(time_runs dbt "$work/dbt" -- "$dbt" run --threads "$threads")
s1=$(time_runs sluice_1 "$work/sluice" -- "$sluice" transform --threads 1)
d1=$(time_runs dbt_1 "$work/dbt" -- "$dbt" run --threads 1)
db1=$(median <"$work/sluice_1.db")

# Every view is there after the rebuilds, in both schemas.
for schema in bench_sluice bench_dbt; do
  n=$(psql -h 127.0.0.1 -U postgres -d test -qAt -c "SELECT count(*) FROM information_schema.views WHERE table_schema = '$schema'")
  [ "$n" = 141 ] || { echo "$schema has $n views after the rebuilds, not 141" >&2; exit 1; }
done

python3 - "$s4" "$d4" "$s1" "$d1" "$db1" "$(cat "$work/sluice.peak")" "$(cat "$work/dbt.peak")" "$threads" "$rows" <<'EOF'
import sys
s4, d4, s1, d1, db1 = map(float, sys.argv[1:6])
sp, dp, threads, rows = int(sys.argv[6]), int(sys.argv[7]), sys.argv[8], sys.argv[9]
n = 200
print(f"200 models (59 tables, 141 views, 26 levels; base table of {rows} rows), PostgreSQL, median wall time of each tool's whole run\n")
print("| run | Sluice | dbt | dbt / Sluice |")
print("|---|---:|---:|---:|")
print(f"| {threads} threads | {s4:.2f} s | {d4:.2f} s | {d4 / s4:.1f}× |")
print(f"| 1 thread | {s1:.2f} s | {d1:.2f} s | {d1 / s1:.1f}× |")
print(f"| peak RSS ({threads} threads) | {sp / 1024:.0f} MiB | {dp / 1024:.0f} MiB | |")
own = max(s1 - db1, 0.0)
print(f"\nSluice, 1 thread: {s1:.2f} s wall, {db1:.2f} s in the database, own time {own * 1000:.0f} ms "
      f"= {own / n * 1000:.2f} ms per model (process start, project read, rendering, planning, bookkeeping).")
print(f"dbt, 1 thread, over the same database work: {(d1 - db1) / n * 1000:.1f} ms per model.")
EOF
