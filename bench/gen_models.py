#!/usr/bin/env python3
"""Writes one set of SQL models as a Sluice project and (for PostgreSQL) a dbt
project, so both tools build exactly the same SQL.

    gen_models.py OUT_DIR URL [--rows N] [--threads N] [--small] [--no-dbt]

URL is the warehouse: postgres://… (the Sluice project builds in schema
`bench_sluice` and the dbt project in `bench_dbt`, unless the URL names a
`schema=`), mysql://… or sqlite://…; the SQL is portable across the three.

The graph is the shape that parallel rebuilds get wrong when tables share
dependent views (issue 11, item 1):

- `base`, a generated table;
- staging views fanning out of it;
- chains of 20 models, one per staging view, every fourth a table (the
  chains are independent, so their tables are rebuilt at the same time);
- `link` views joining the tables at the same place in two neighbouring
  chains: each chain table has two dependent views that it shares with a
  table being rebuilt in parallel;
- aggregate tables that each union three chain ends, links or staging views;
- mart views joining two aggregate tables (again shared by two tables built
  at once);
- report tables joining two marts.

The default is 200 models (59 tables, 141 views), 26 levels deep; `--small`
gives 96 models of the same shape and depth for the test suite.
"""

import argparse
import os
import urllib.parse

CHAIN_LEN = 20
TABLE_EVERY = 4


def shape(small):
    """(chains, staging views, aggregates, marts, reports)"""
    return (3, 5, 8, 4, 3) if small else (6, 11, 22, 10, 6)


def models(rows, small):
    chains, n_stg, n_agg, n_mart, n_report = shape(small)
    out = {}
    # A portable row generator: digits cross-joined (no generate_series, and
    # MariaDB caps recursive CTEs at 1000 iterations).
    places = max(1, len(str(rows)))
    digits = "(select 0 as n union all " + " union all ".join(f"select {i}" for i in range(1, 10)) + ")"
    num = " + ".join(f"{10**p} * d{p}.n" if p else "d0.n" for p in range(places))
    joins = "\n     cross join ".join(f"{digits} d{p}" for p in range(places))
    out["base"] = (
        "{{ config(materialized='table') }}\n"
        "select id, id % 47 as product_id, (id % 7) + 1 as quantity,\n"
        "       cast((id % 100) + 0.5 as decimal(10,2)) as price, id % 365 as sale_day\n"
        f"from (select {num} + 1 as id\n     from {joins}) g\n"
        f"where id <= {rows}\n"
    )
    for i in range(1, n_stg + 1):
        out[f"stg_{i:02}"] = (
            "{{ config(materialized='view') }}\n"
            f"select id, product_id, quantity, price, sale_day from {{{{ ref('base') }}}} where id % {n_stg} = {i - 1}\n"
        )
    chain_tables = {}
    for c in range(1, chains + 1):
        prev = f"stg_{c:02}"
        for k in range(1, CHAIN_LEN + 1):
            name = f"chain_{c}_{k:02}"
            mat = "table" if k % TABLE_EVERY == 0 else "view"
            out[name] = (
                f"{{{{ config(materialized='{mat}') }}}}\n"
                f"select id, product_id, quantity + {k % 3} as quantity, price, sale_day\n"
                f"from {{{{ ref('{prev}') }}}}\nwhere quantity < 1000\n"
            )
            if mat == "table":
                chain_tables.setdefault(k, []).append(name)
            prev = name
    # Views on two tables that are rebuilt at the same time.
    links = []
    for k, tables in sorted(chain_tables.items()):
        for c in range(len(tables)):
            a, b = tables[c], tables[(c + 1) % len(tables)]
            name = f"link_{c + 1}_{k:02}"
            out[name] = (
                "{{ config(materialized='view') }}\n"
                "select a.product_id, a.quantity + b.quantity as quantity, a.price\n"
                f"from (select product_id, sum(quantity) as quantity, max(price) as price from {{{{ ref('{a}') }}}} group by product_id) a\n"
                f"join (select product_id, sum(quantity) as quantity from {{{{ ref('{b}') }}}} group by product_id) b\n"
                "  on a.product_id = b.product_id\n"
            )
            links.append(name)
    ends = [f"chain_{c}_{CHAIN_LEN:02}" for c in range(1, chains + 1)]
    last_links = [x for x in links if x.endswith(f"_{CHAIN_LEN:02}")]
    pool = last_links + ends + [x for x in links if x not in last_links] + [f"stg_{i:02}" for i in range(1, n_stg + 1)]
    for f in range(1, n_agg + 1):
        picks = [pool[(f - 1 + j * 7) % len(pool)] for j in range(3)]
        union = "\n    union all\n".join(
            f"    select product_id, quantity, price from {{{{ ref('{p}') }}}}" for p in picks
        )
        out[f"agg_{f:02}"] = (
            "{{ config(materialized='table') }}\n"
            "select product_id, sum(quantity) as quantity, sum(quantity * price) as revenue, count(*) as sales\n"
            f"from (\n{union}\n) u\ngroup by product_id\n"
        )
    # Views joining two tables that are rebuilt at the same time.
    for m in range(1, n_mart + 1):
        a, b = f"agg_{m:02}", f"agg_{m % n_agg + 1:02}"
        out[f"mart_{m:02}"] = (
            "{{ config(materialized='view') }}\n"
            "select a.product_id, a.quantity + b.quantity as quantity, a.revenue + b.revenue as revenue\n"
            f"from {{{{ ref('{a}') }}}} a join {{{{ ref('{b}') }}}} b on a.product_id = b.product_id\n"
        )
    for r in range(1, n_report + 1):
        a, b = f"mart_{r:02}", f"mart_{r % n_mart + 1:02}"
        out[f"report_{r:02}"] = (
            "{{ config(materialized='table') }}\n"
            "select a.product_id, a.quantity, a.revenue, b.revenue as other_revenue\n"
            f"from {{{{ ref('{a}') }}}} a join {{{{ ref('{b}') }}}} b on a.product_id = b.product_id\n"
        )
    return out


def depth(ms):
    """The number of models on the longest dependency path."""
    import re

    refs = {n: re.findall(r"ref\('([^']+)'\)", sql) for n, sql in ms.items()}
    memo = {}

    def d(n):
        if n not in memo:
            memo[n] = 1 + max((d(r) for r in refs[n]), default=0)
        return memo[n]

    return max(d(n) for n in ms)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("url", help="postgres://user@host:port/db, mysql://… or sqlite://…")
    ap.add_argument("--rows", type=int, default=20000, help="rows of the base table (default 20000)")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--small", action="store_true", help="96 models of the same shape (for tests)")
    ap.add_argument("--no-dbt", action="store_true", help="write only the Sluice project")
    a = ap.parse_args()
    ms = models(a.rows, a.small)
    want = 96 if a.small else 200
    assert len(ms) == want, len(ms)
    assert depth(ms) == 26, depth(ms)
    tables = sum("materialized='table'" in sql for sql in ms.values())

    u = urllib.parse.urlparse(a.url)
    postgres = u.scheme in ("postgres", "postgresql")
    sluice_url = a.url
    if postgres and "schema=" not in (u.query or ""):
        sluice_url += ("&" if u.query else "?") + "schema=bench_sluice"
    s = os.path.join(a.out, "sluice")
    write(
        os.path.join(s, "sluice.toml"),
        'name = "bench_models"\n[connections.warehouse]\n'
        f'url = "{sluice_url}"\n[models]\nmaterialized = "view"\nthreads = {a.threads}\n',
    )
    for name, sql in ms.items():
        write(os.path.join(s, "models", f"{name}.sql"), sql)
    if postgres and not a.no_dbt:
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
            write(os.path.join(d, "models", f"{name}.sql"), sql)
    print(f"{len(ms)} models ({tables} tables, {len(ms) - tables} views), {depth(ms)} levels deep")


if __name__ == "__main__":
    main()
