#!/usr/bin/env python3
"""Writes one set of 200 SQL models as two projects, a Sluice project and a
dbt project, so both tools build exactly the same SQL.

    gen_models.py OUT_DIR PG_URL [--rows N]

The graph has chains and fans: a generated base table; 19 staging views
fanning out of it; 8 chains of 15 models (every fifth a table, the rest
views) each hanging off a staging view; 40 aggregates that each union three
chain ends or staging views; 20 marts joining two aggregates. 200 models,
about half of them tables. The SQL is PostgreSQL.
"""

import argparse
import os
import urllib.parse


def models(rows):
    out = {}
    out["base"] = (
        "{{ config(materialized='table') }}\n"
        "select g as id, g % 50 as product_id, (g % 7) + 1 as quantity,\n"
        "       ((g % 100) + 0.5)::numeric(10,2) as price, date '2026-01-01' + (g % 365) as sale_date\n"
        f"from generate_series(1, {rows}) g\n"
    )
    for i in range(1, 20):
        out[f"stg_{i:02}"] = (
            "{{ config(materialized='view') }}\n"
            f"select id, product_id, quantity, price, sale_date from {{{{ ref('base') }}}} where id % 19 = {i - 1}\n"
        )
    ends = []
    for c in range(1, 9):
        prev = f"stg_{c:02}"
        for k in range(1, 16):
            name = f"chain_{c}_{k:02}"
            mat = "table" if k % 5 == 0 else "view"
            out[name] = (
                f"{{{{ config(materialized='{mat}') }}}}\n"
                f"select id, product_id, quantity + {k % 3} as quantity, price, sale_date\n"
                f"from {{{{ ref('{prev}') }}}}\nwhere quantity < 1000\n"
            )
            prev = name
        ends.append(prev)
    pool = ends + [f"stg_{i:02}" for i in range(9, 20)]
    for f in range(1, 41):
        picks = [pool[(f * 3 + j * 7) % len(pool)] for j in range(3)]
        union = "\n    union all\n".join(
            f"    select product_id, quantity, price from {{{{ ref('{p}') }}}}" for p in picks
        )
        out[f"agg_{f:02}"] = (
            "{{ config(materialized='table') }}\n"
            "select product_id, sum(quantity) as quantity, sum(quantity * price) as revenue, count(*) as sales\n"
            f"from (\n{union}\n) u\ngroup by product_id\n"
        )
    for m in range(1, 21):
        a, b = f"agg_{m:02}", f"agg_{(m + 19) % 40 + 1:02}"
        out[f"mart_{m:02}"] = (
            "{{ config(materialized='table') }}\n"
            "select a.product_id, a.quantity + b.quantity as quantity, a.revenue + b.revenue as revenue\n"
            f"from {{{{ ref('{a}') }}}} a join {{{{ ref('{b}') }}}} b on a.product_id = b.product_id\n"
        )
    assert len(out) == 200, len(out)
    return out


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("pg_url", help="postgres://user@host:port/db")
    ap.add_argument("--rows", type=int, default=20000, help="rows of the base table (default 20000)")
    ap.add_argument("--threads", type=int, default=4)
    a = ap.parse_args()
    u = urllib.parse.urlparse(a.pg_url)
    ms = models(a.rows)

    s = os.path.join(a.out, "sluice")
    write(
        os.path.join(s, "sluice.toml"),
        'name = "bench_models"\n[connections.warehouse]\n'
        f'url = "{a.pg_url}?schema=bench_sluice"\n[models]\nmaterialized = "view"\nthreads = {a.threads}\n',
    )
    d = os.path.join(a.out, "dbt")
    write(
        os.path.join(d, "dbt_project.yml"),
        "name: bench_models\nversion: '1.0'\nconfig-version: 2\nprofile: bench_models\n"
        "model-paths: ['models']\nmodels:\n  bench_models:\n    +materialized: view\n",
    )
    write(
        os.path.join(d, "profiles.yml"),
        "bench_models:\n  target: pg\n  outputs:\n    pg:\n      type: postgres\n"
        f"      host: {u.hostname}\n      port: {u.port or 5432}\n      user: {u.username}\n"
        f"      password: '{u.password or ''}'\n      dbname: {u.path.lstrip('/')}\n"
        f"      schema: bench_dbt\n      threads: {a.threads}\n",
    )
    for name, sql in ms.items():
        write(os.path.join(s, "models", f"{name}.sql"), sql)
        write(os.path.join(d, "models", f"{name}.sql"), sql)


if __name__ == "__main__":
    main()
