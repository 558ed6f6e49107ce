#!/usr/bin/env bash
# Deployment figures that do not depend on an image (no Docker engine here):
#   - the release binary's size, as built (line tables) and stripped (what
#     the Dockerfile ships: CARGO_PROFILE_RELEASE_STRIP=symbols, no debug);
#   - cold start to ready, per role: from exec to the first 200 from
#     /readyz (serve and api on --listen, scheduler and worker on
#     --health-addr), the median of RUNS starts; serve on a fresh embedded
#     project (SQLite), the others on a PostgreSQL state store;
#   - idle RSS per role, 2 s after it is ready.
#   bench/deploy.sh                  # SLUICE=target/release/sluice RUNS=7
# Needs PostgreSQL on 127.0.0.1:5432 (scripts/test.sh starts it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
sluice=${SLUICE:-$repo/target/release/sluice}
runs=${RUNS:-7}
work=$(mktemp -d /tmp/sluice-bench-deploy.XXXXXX)
trap 'rm -rf "$work"' EXIT
[ -x "$sluice" ] || { echo "no $sluice: cargo build --release" >&2; exit 2; }

cp "$sluice" "$work/sluice-stripped"
strip "$work/sluice-stripped"
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1000000 }'; }
echo "binary: $(mb "$(stat -c %s "$sluice")") as built, $(mb "$(stat -c %s "$work/sluice-stripped")") stripped"

psql -h 127.0.0.1 -U postgres -d test -q -v ON_ERROR_STOP=1 -c 'SET client_min_messages = warning' -c 'DROP SCHEMA IF EXISTS bench_deploy CASCADE; CREATE SCHEMA bench_deploy' >/dev/null
"$sluice" init "$work/demo" >/dev/null

python3 - "$work/sluice-stripped" "$work/demo" "$runs" <<'PY'
import os, socket, statistics, subprocess, sys, time

sluice, project, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
pg = "postgres://postgres@127.0.0.1:5432/test?schema=bench_deploy"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def ready(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
            c.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return c.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False

def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

def start(role, port):
    if role == "serve":
        args, env = ["serve", "--listen", f"127.0.0.1:{port}"], {}
    elif role == "api":
        args, env = ["api", "--listen", f"127.0.0.1:{port}"], {"SLUICE_STATE_URL": pg}
    else:
        args, env = [role, "--health-addr", f"127.0.0.1:{port}"], {"SLUICE_STATE_URL": pg}
    e = dict(os.environ, SLUICE_NO_PROGRESS="1", **env)
    t0 = time.perf_counter()
    p = subprocess.Popen([sluice] + args, cwd=project, env=e,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not ready(port):
        if p.poll() is not None:
            raise SystemExit(f"{role} exited with {p.returncode}")
        if time.perf_counter() - t0 > 30:
            raise SystemExit(f"{role} not ready in 30 s")
        time.sleep(0.0005)
    return p, (time.perf_counter() - t0) * 1000

print(f"{'role':<10} {'start to ready (median of %d)' % runs:>30} {'idle RSS':>10}")
for role in ["serve", "scheduler", "worker", "api"]:
    times, rss = [], []
    for i in range(runs):
        port = free_port()
        p, ms = start(role, port)
        times.append(ms)
        if i == runs - 1:
            time.sleep(2)
            rss.append(rss_mb(p.pid))
        p.terminate()
        try:
            p.wait(timeout=45)
        except subprocess.TimeoutExpired:
            p.kill(); p.wait()
    print(f"{role:<10} {statistics.median(times):>27.1f} ms {rss[0]:>7.1f} MB  (min {min(times):.1f}, max {max(times):.1f} ms)")
PY
psql -h 127.0.0.1 -U postgres -d test -q -v ON_ERROR_STOP=1 -c 'SET client_min_messages = warning' -c 'DROP SCHEMA IF EXISTS bench_deploy CASCADE' >/dev/null
