#!/usr/bin/env python3
"""A small JSON API for the api-ingest example: orders and customers of a web
shop, behind an API key, paged like real APIs are. Python standard library
only, no network needed.

    DEMO_API_KEY=demo-key python3 demo_api.py --port 8765

Endpoints (all need the header `X-API-Key: $DEMO_API_KEY`, except /healthz):
  GET /api/v1/orders?page=N&per_page=M&updated_since=TS
      {"data": [order, ...], "meta": {"page": N, "per_page": M, "total": T}}
      orders updated after TS (ISO 8601, UTC), oldest update first
  GET /api/v1/customers?cursor=C&limit=M
      {"customers": [customer, ...], "next_cursor": "..." or null}
  GET /healthz -> ok

Like a real API it is sometimes busy: every --busy-every'th request (default
7; 0 turns it off) is answered 429 with `Retry-After: 0`, which clients must
honour by trying again. The data is the same on every start (a fixed seed).
"""

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CITIES = [
    ("Helsinki", "FI"), ("Oulu", "FI"), ("Stockholm", "SE"), ("Gothenburg", "SE"),
    ("Oslo", "NO"), ("Copenhagen", "DK"), ("Tallinn", "EE"),
]
FIRST = ["Aino", "Mikko", "Elsa", "Lars", "Ingrid", "Mads", "Kadri", "Juhani", "Sofia", "Nils"]
LAST = ["Virtanen", "Lindqvist", "Hansen", "Berg", "Tamm", "Korhonen", "Nielsen", "Dahl"]
SKUS = [("MUG-01", 1250), ("TEE-02", 1990), ("CAP-03", 1500), ("BAG-04", 4500), ("PEN-05", 350)]
STATUSES = ["paid", "shipped", "shipped", "delivered", "delivered", "cancelled"]


def rng(seed):
    """A tiny deterministic generator (an LCG), the same on every Python."""
    state = seed
    while True:
        state = (state * 1103515245 + 12345) % (2 ** 31)
        yield state


def make_data(n_orders=45, n_customers=12):
    r = rng(2026)
    customers = []
    for cid in range(1, n_customers + 1):
        city, country = CITIES[next(r) % len(CITIES)]
        customers.append({
            "id": cid,
            "name": "%s %s" % (FIRST[next(r) % len(FIRST)], LAST[next(r) % len(LAST)]),
            "email": "customer%d@example.com" % cid,
            "address": {"city": city, "country": country},
            "signed_up": "2026-%02d-%02d" % (1 + next(r) % 10, 1 + next(r) % 28),
        })
    orders = []
    for oid in range(1, n_orders + 1):
        c = customers[next(r) % len(customers)]
        items = []
        cents = 0
        for _ in range(1 + next(r) % 3):
            sku, price = SKUS[next(r) % len(SKUS)]
            qty = 1 + next(r) % 4
            items.append({"sku": sku, "qty": qty, "unit_price": price / 100})
            cents += qty * price
        # Two orders a day, the later id always the later time (so a bigger
        # --orders adds orders after the existing ones, as time goes by).
        day = 1 + (oid - 1) // 2
        hour = 8 + 6 * ((oid - 1) % 2) + next(r) % 5
        created = "2026-%02d-%02dT%02d:%02d:00Z" % (11 + (day - 1) // 30, 1 + (day - 1) % 30, hour, next(r) % 60)
        orders.append({
            "order_id": oid,
            "status": STATUSES[next(r) % len(STATUSES)],
            "created_at": created,
            "updated_at": created,
            "amount": "%d.%02d" % (cents // 100, cents % 100),
            "currency": "EUR",
            "customer": {"id": c["id"], "name": c["name"], "address": dict(c["address"])},
            "items": items,
        })
    return orders, customers


class Api(BaseHTTPRequestHandler):
    server_version = "demo-api/1"

    def log_message(self, fmt, *args):
        sys.stderr.write("demo-api: %s\n" % (fmt % args))

    def send_json(self, status, body, headers=()):
        data = json.dumps(body, indent=1).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/healthz":
            return self.send_json(200, {"status": "ok"})
        if self.headers.get("X-API-Key") != self.server.key:
            return self.send_json(401, {"error": "a valid X-API-Key header is required"})
        self.server.requests += 1
        every = self.server.busy_every
        if every and self.server.requests % every == 0:
            return self.send_json(429, {"error": "busy, try again"}, [("Retry-After", "0")])
        try:
            if url.path == "/api/v1/orders":
                page = max(1, int(q.get("page", "1")))
                per_page = min(100, max(1, int(q.get("per_page", "10"))))
                since = q.get("updated_since", "")
                rows = sorted((o for o in self.server.orders if o["updated_at"] > since),
                              key=lambda o: (o["updated_at"], o["order_id"]))
                chunk = rows[(page - 1) * per_page: page * per_page]
                return self.send_json(200, {"data": chunk,
                                            "meta": {"page": page, "per_page": per_page, "total": len(rows)}})
            if url.path == "/api/v1/customers":
                limit = min(100, max(1, int(q.get("limit", "5"))))
                after = int(q.get("cursor", "c0")[1:])
                rows = [c for c in self.server.customers if c["id"] > after][:limit]
                more = rows and rows[-1]["id"] < self.server.customers[-1]["id"]
                nxt = "c%d" % rows[-1]["id"] if more else None
                return self.send_json(200, {"customers": rows, "next_cursor": nxt})
        except ValueError as e:
            return self.send_json(400, {"error": str(e)})
        return self.send_json(404, {"error": "no such endpoint: %s" % url.path})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=int(os.environ.get("DEMO_API_PORT", "8765")))
    ap.add_argument("--orders", type=int, default=45)
    ap.add_argument("--busy-every", type=int, default=7)
    a = ap.parse_args()
    key = os.environ.get("DEMO_API_KEY")
    if not key:
        sys.exit("set DEMO_API_KEY: the key clients must send (see .env.example)")
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Api)
    srv.key = key
    srv.busy_every = a.busy_every
    srv.requests = 0
    srv.orders, srv.customers = make_data(a.orders)
    print("demo API listening on http://127.0.0.1:%d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
