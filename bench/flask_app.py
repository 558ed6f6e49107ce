"""The same two endpoints as the retail scenario's team wrote them: Flask +
psycopg2 under gunicorn, one query per request, rows as a list of dicts.

  GET /api/data/sales_1k   the published model's first 1,000 rows (JSON)
  GET /api/runs            the latest 100 runs of the state store (JSON)

Configured by BENCH_PG (a libpq connection string) and BENCH_SCHEMA.
"""
import os

import psycopg2
import psycopg2.extras
from flask import Flask, jsonify

app = Flask(__name__)
DSN = os.environ.get("BENCH_PG", "host=127.0.0.1 user=postgres dbname=test")
SCHEMA = os.environ.get("BENCH_SCHEMA", "bench_serve")
_conn = None


def conn():
    # One connection per worker process, opened on first use (as the
    # original app did with a module-level connection).
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg2.connect(DSN, options=f"-c search_path={SCHEMA}")
        _conn.autocommit = True
    return _conn


@app.get("/api/data/sales_1k")
def sales():
    with conn().cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(
            "SELECT id, product, category, units, revenue, sold_on FROM sales_1k ORDER BY id LIMIT 1000"
        )
        rows = cur.fetchall()
    for r in rows:
        r["revenue"] = float(r["revenue"])
        r["sold_on"] = r["sold_on"].isoformat()
    return jsonify({"model": "sales_1k", "rows": rows})


@app.get("/api/runs")
def runs():
    with conn().cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(
            "SELECT id, pipeline, status, trigger, logical_date, queued_at, started_at, finished_at, error "
            "FROM sluice_runs ORDER BY queued_at DESC, id DESC LIMIT 100"
        )
        rows = cur.fetchall()
    return jsonify({"runs": rows})
