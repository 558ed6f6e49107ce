#!/usr/bin/env python3
"""The row-by-row loader the original projects used: csv.reader and
psycopg2's executemany (one INSERT per row), one commit at the end.

usage: py_executemany.py CSV TABLE [DSN]"""
import csv
import sys

import psycopg2


def main():
    path, table = sys.argv[1], sys.argv[2]
    dsn = sys.argv[3] if len(sys.argv) > 3 else "host=127.0.0.1 user=postgres dbname=test"
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows)
        sql = "INSERT INTO %s (%s) VALUES (%s)" % (table, ", ".join(header), ", ".join(["%s"] * len(header)))
        batch = []
        for r in rows:
            batch.append([v if v != "" else None for v in r])
            if len(batch) == 1000:
                cur.executemany(sql, batch)
                batch = []
        if batch:
            cur.executemany(sql, batch)
    conn.commit()


if __name__ == "__main__":
    main()
