#!/usr/bin/env bash
# HTTP benchmark: wrk at 64 connections against Sluice's API and the same
# endpoints written as the retail scenario's team did (bench/flask_app.py:
# Flask + psycopg2 under gunicorn), side by side in one run, on the same
# PostgreSQL data:
#
#   GET /api/data/sales_1k   a published model's first 1,000 rows as JSON
#   GET /api/runs            the latest 100 runs of a PostgreSQL state store
#
#   bench/serve.sh                       # 15 s per endpoint and server
#   SECONDS_EACH=30 CONNECTIONS=64 bench/serve.sh
#   CACHE=0s bench/serve.sh              # Sluice queries PostgreSQL for every request
#
# Prints requests/s, p99 latency, errors and the servers' RSS (after the
# load; gunicorn's master and workers added up). Needs wrk (Debian) and
# Flask, psycopg2 and gunicorn in .venv (installed from bench/requirements.txt).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
sluice=${SLUICE:-$repo/target/release/sluice}
secs=${SECONDS_EACH:-15}
conns=${CONNECTIONS:-64}
threads=${WRK_THREADS:-2}
gworkers=${GUNICORN_WORKERS:-5}
work=${WORK:-/tmp/sluice-bench-serve}
schema=bench_serve
pg="postgres://postgres@127.0.0.1:5432/test?schema=$schema"
sport=${SLUICE_PORT:-18281}
fport=${FLASK_PORT:-18282}

[ -x "$sluice" ] || (cd "$repo" && cargo build --release)
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk, or .ci/tools.sh)" >&2; exit 1; }
py=$repo/.venv/bin/python
[ -x "$py" ] || python3 -m venv "$repo/.venv"
"$py" -c 'import flask, psycopg2, gunicorn' 2>/dev/null || "$repo/.venv/bin/pip" install -q -r "$here/requirements.txt"

psql -h 127.0.0.1 -U postgres -d test -qAt -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null
rm -rf "$work" && mkdir -p "$work/pipelines" "$work/models" "$work/data"
"$py" "$here/serve_data.py" "$work/data/sales.csv"
cp "$here/serve_project/sluice.toml" "$here/serve_project/p.toml" "$work/"
mv "$work/p.toml" "$work/pipelines/p.toml"
cp "$here/serve_project/sales_1k.sql" "$here/serve_project/schema.toml" "$work/models/"
# CACHE=0s: every data request queries PostgreSQL (the default reuses a page for 1 s).
printf '[cache]\ndata = "%s"\n' "${CACHE:-1s}" >>"$work/sluice.toml"
(cd "$work" && SLUICE_BENCH_PG="$pg" "$sluice" run >/dev/null)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
(cd "$work" && SLUICE_BENCH_PG="$pg" exec "$sluice" api --listen "127.0.0.1:$sport" >"$work/sluice.log" 2>&1) &
spid=$!
pids+=("$spid")
(cd "$here" && BENCH_SCHEMA=$schema exec "$repo/.venv/bin/gunicorn" -w "$gworkers" -b "127.0.0.1:$fport" \
  --log-level warning flask_app:app >"$work/gunicorn.log" 2>&1) &
gpid=$!
pids+=("$gpid")
for p in $sport $fport; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$p/api/runs" >/dev/null && break; sleep 0.1; done
done
# 100 runs in the state store (queued: no worker runs here).
for _ in $(seq 1 99); do curl -sf -XPOST "http://127.0.0.1:$sport/api/pipelines/p/runs" >/dev/null || true; done

rss() { # total RSS in MiB of a process and its children
  local total=0 kb
  for p in $1 $(pgrep -P "$1" || true); do
    kb=$(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${kb:-0}))
  done
  echo $((total / 1024))
}
bench() { # bench NAME URL
  local out rps p99 errs file
  file=$work/$(echo "$1" | tr -c 'a-z0-9_\n' '_')
  curl -sf "$2" -o "$file.body"
  out=$(wrk -t"$threads" -c"$conns" -d"${secs}s" --latency "$2")
  echo "$out" >"$file.wrk"
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx|Socket errors/' <<<"$out" | tr '\n' ' ')
  printf '%-26s %10s req/s   p99 %9s   %s\n' "$1" "$rps" "$p99" "${errs:-no errors}"
}
echo "== $(date -u +%FT%TZ), $(nproc) cores, wrk -t$threads -c$conns -d${secs}s, gunicorn -w $gworkers (sync), sluice [cache] data = ${CACHE:-1s}"
bench "sluice /api/data/sales_1k" "http://127.0.0.1:$sport/api/data/sales_1k?limit=1000"
bench "flask /api/data/sales_1k" "http://127.0.0.1:$fport/api/data/sales_1k"
bench "sluice /api/runs" "http://127.0.0.1:$sport/api/runs"
bench "flask /api/runs" "http://127.0.0.1:$fport/api/runs"
echo "RSS after the load: sluice $(rss "$spid") MiB, gunicorn (master + $gworkers workers) $(rss "$gpid") MiB"
for s in sluice flask; do
  f=$work/${s}__api_data_sales_1k.body
  "$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], len(d["rows"]), "rows,", sum(1 for _ in open(sys.argv[1], "rb").read()), "bytes")' "$f" "$s"
done
