#!/usr/bin/env bash
# Control-plane benchmark on a PostgreSQL state store, with the services as
# separate processes (scheduler, API, 4 workers):
#
#   1. trigger latency: a run started through the API (`POST
#      /api/pipelines/{name}/runs`) → its first task starting on a worker;
#      idle workers wait on LISTEN/NOTIFY;
#   2. schedule latency: an `every = "1s"` trigger's due time → the run's
#      first task starting;
#   3. no-op throughput: many runs of 10 independent `empty` steps, queued at
#      once, run by 4 workers (4 slots each): tasks finished per second.
#
#   bench/orchestrate.sh                 # 200 triggers, 30 s of schedule, 300 runs × 10 tasks
#   TRIGGERS=500 RUNS=1000 bench/orchestrate.sh
#
# Times come from the state store (queued_at, scheduled_for, started_at,
# finished_at are written by the processes themselves, on one machine's clock).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
sluice=${SLUICE:-$repo/target/release/sluice}
triggers=${TRIGGERS:-200}
runs=${RUNS:-300}
sched_secs=${SCHEDULE_SECONDS:-30}
work=${WORK:-/tmp/sluice-bench-orchestrate}
schema=bench_orch
state="postgres://postgres@127.0.0.1:5432/test?schema=$schema${STATE_OPTIONS:-}"
port=${PORT:-18181}
addr="127.0.0.1:$port"

[ -x "$sluice" ] || (cd "$repo" && cargo build --release)
psql_() { psql -h 127.0.0.1 -U postgres -d test -qAt -v ON_ERROR_STOP=1 -c "SET search_path = $schema; $1"; }
psql -h 127.0.0.1 -U postgres -d test -qAt -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null

rm -rf "$work" && mkdir -p "$work/pipelines"
cat >"$work/sluice.toml" <<EOF
name = "bench_orchestrate"
[state]
url = "$state"
# The API listens on loopback only; the benchmark triggers without a token.
[auth]
anonymous = "trigger"
EOF
{
  echo 'description = "one no-op step"'
  printf '[[steps]]\nname = "only"\nkind = "empty"\n'
} >"$work/pipelines/one.toml"
{
  echo 'description = "ten independent no-op steps"'
  for i in $(seq 1 10); do printf '[[steps]]\nname = "s%02d"\nkind = "empty"\n' "$i"; done
} >"$work/pipelines/wide.toml"
printf '[[triggers]]\nevery = "1s"\ncatchup = "none"\n[[steps]]\nname = "only"\nkind = "empty"\n' >"$work/pipelines/tick.toml.off"

pids=()
workers=()
cleanup() { for p in "${pids[@]}" "${workers[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
start() { (cd "$work" && exec "$sluice" "$@" >>"$work/services.log" 2>&1) & pids+=($!); }
start_workers() {
  workers=()
  for i in 1 2 3 4; do
    (cd "$work" && exec "$sluice" worker --slots 4 --id "w$i-$1" >>"$work/services.log" 2>&1) & workers+=($!)
  done
}

start api --listen "$addr"
start_workers a
for _ in $(seq 1 100); do curl -sf "http://$addr/healthz" >/dev/null && break; sleep 0.1; done
sleep 1

echo "1. trigger latency: $triggers runs, one at a time" >&2
for _ in $(seq 1 "$triggers"); do
  curl -sf -XPOST "http://$addr/api/pipelines/one/runs" >/dev/null
  sleep 0.05
done
sleep 1
trigger_stats=$(psql_ "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d), percentile_cont(0.99) WITHIN GROUP (ORDER BY d), max(d), count(*)
  FROM (SELECT (t.started_at - r.queued_at) / 1000.0 AS d FROM sluice_runs r JOIN sluice_tasks t ON t.run_id = r.id WHERE r.pipeline = 'one') x")

echo "2. schedule latency: every 1s for ${sched_secs}s" >&2
mv "$work/pipelines/tick.toml.off" "$work/pipelines/tick.toml"
start scheduler --tick 1s
sleep "$sched_secs"
kill -TERM "${pids[-1]}"
sched_stats=$(psql_ "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d), percentile_cont(0.99) WITHIN GROUP (ORDER BY d), max(d), count(*)
  FROM (SELECT (t.started_at - r.scheduled_for) / 1000.0 AS d FROM sluice_runs r JOIN sluice_tasks t ON t.run_id = r.id WHERE r.pipeline = 'tick') x")

echo "3. throughput: $runs runs x 10 no-op tasks, 4 workers x 4 slots" >&2
# Queue them all with the workers stopped, then start 4 fresh workers: the
# time is the workers' alone, not the API's.
kill -TERM "${workers[@]}"
wait "${workers[@]}" 2>/dev/null || true
for _ in $(seq 1 "$runs"); do curl -sf -XPOST "http://$addr/api/pipelines/wide/runs" >/dev/null; done
start_workers b
for _ in $(seq 1 600); do
  left=$(psql_ "SELECT count(*) FROM sluice_runs WHERE pipeline = 'wide' AND status IN ('queued', 'running')")
  [ "$left" = 0 ] && break
  sleep 0.5
done
tp_stats=$(psql_ "SELECT count(*), (max(finished_at) - min(started_at)) / 1e6 FROM sluice_tasks WHERE pipeline = 'wide' AND status = 'success'")
failed=$(psql_ "SELECT count(*) FROM sluice_runs WHERE status <> 'success'")

python3 - "$trigger_stats" "$sched_stats" "$tp_stats" "$failed" <<'EOF'
import sys
def row(s): return [float(x) for x in s.split("|")]
t50, t99, tmax, tn = row(sys.argv[1])
s50, s99, smax, sn = row(sys.argv[2])
tasks, secs = row(sys.argv[3])
print("| measure | median | p99 | max | samples |")
print("|---|---:|---:|---:|---:|")
print(f"| API trigger → first task started | {t50:.1f} ms | {t99:.1f} ms | {tmax:.1f} ms | {int(tn)} |")
print(f"| due time → first task started | {s50:.1f} ms | {s99:.1f} ms | {smax:.1f} ms | {int(sn)} |")
print(f"\nno-op throughput: {int(tasks)} tasks in {secs:.2f} s = {tasks / secs:.0f} tasks/s (4 workers × 4 slots, one PostgreSQL)")
print(f"runs not successful: {sys.argv[4]}")
EOF
